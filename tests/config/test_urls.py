"""config/urls.py: each app's whole /api/v1/ in its own api_urls.py, included once."""

from __future__ import annotations

from django.urls import URLResolver, get_resolver, reverse

from config import urls


def test_it_includes_each_apps_api_once_under_api_v1():
    api = [p for p in urls.urlpatterns if isinstance(p, URLResolver) and str(p.pattern) == "api/v1/"]
    assert sorted(p.urlconf_name.__name__ for p in api) == ["feedback.api_urls", "training.api_urls"]


def test_it_finds_every_api_route_in_one_hop():
    # No nested include: the route's file is the app's api_urls.py itself.
    for resolver in (p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/"):
        assert not [p for p in resolver.url_patterns if isinstance(p, URLResolver)], resolver.urlconf_name


def test_it_reverses_api_names_without_a_namespace():
    assert reverse("api-study-detail", args=[3]) == "/api/v1/studies/3/"
    assert reverse("api-study-export", args=[3]) == "/api/v1/studies/3/export/"
    assert reverse("api-study-dashboard", args=[3]) == "/api/v1/studies/3/dashboard/"
    assert reverse("api-annotator-reward-model", args=[3, 4]) == "/api/v1/studies/3/annotators/4/reward-model/"
