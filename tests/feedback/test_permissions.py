"""feedback/permissions.py: one permission and one mixin for every researcher-only API view.

The resolver is walked for every /api/v1/studies/<pk>/... route, so a new researcher endpoint that checks
access its own way (or not at all) fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from feedback import api_views, selectors
from feedback.permissions import IsStudyResearcher, StudyResearcherMixin
from tests.factories import ResearcherFactory
from training import api_dashboard
from training import api_views as training_api_views

ROOT = Path(__file__).resolve().parents[2]
STUDY_ROUTES = "api/v1/studies/<int:pk>/"

# Study routes that are not researcher-only, each with its own rule (and its own tests).
NOT_RESEARCHER_ONLY = {
    api_views.JoinView,  # anyone may join
    api_views.NextPairView,  # the study's annotators
    training_api_views.PredictView,  # the study's researchers, or the annotator asking about themself
    api_dashboard.AnnotatorRewardModelView,  # the study's researchers, or the annotator downloading their own
}


def _routes(patterns, prefix: str = "") -> list[tuple[str, type]]:
    found: list[tuple[str, type]] = []
    for p in patterns:
        if isinstance(p, URLResolver):
            found += _routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            view_class = getattr(p.callback, "view_class", None)
            if view_class is not None:
                found.append((prefix + str(p.pattern), view_class))
    return found


def _study_api_views() -> list[tuple[str, type]]:
    return [(route, cls) for route, cls in _routes(get_resolver().url_patterns) if route.startswith(STUDY_ROUTES)]


def test_it_finds_the_study_api_routes_of_both_apps():
    routes = {route for route, _ in _study_api_views()}
    assert f"{STUDY_ROUTES}export/" in routes and f"{STUDY_ROUTES}dashboard/" in routes
    assert f"{STUDY_ROUTES}retrain/" in routes and f"{STUDY_ROUTES}endpoints/" in routes


@pytest.mark.parametrize(("route", "view_class"), _study_api_views(), ids=[r for r, _ in _study_api_views()])
def test_it_guards_every_researcher_api_view_with_the_one_permission(route, view_class):
    if view_class in NOT_RESEARCHER_ONLY:
        assert not issubclass(view_class, StudyResearcherMixin), f"{route}: drop it from NOT_RESEARCHER_ONLY"
        return
    assert issubclass(view_class, StudyResearcherMixin), route
    assert IsStudyResearcher in view_class.permission_classes, route


def test_it_lists_only_views_that_are_routed():
    assert NOT_RESEARCHER_ONLY <= {cls for _, cls in _study_api_views()}


# Who may ask the researcher rule (selectors.get_study_for_researcher) or the model's membership test under it
# (Study.has_researcher) directly, and why; everyone else goes through the permission or the decorator. A
# module that defines its own _get_study_for_researcher (the wrappers that are gone) counts as a caller.
RULE_CALLERS = {
    "get_study_for_researcher": {
        "feedback/selectors.py",
        "feedback/permissions.py",
        "feedback/decorators.py",
        # Two rules mixed (a researcher of the study, or the annotator themself): the researcher half.
        "feedback/consumers.py",
        "training/api_views.py",  # predict
        "training/api_dashboard.py",  # an annotator's reward-model download
    },
    # Not an access check: the demo seeding makes sure its own user is on the demo study.
    "has_researcher": {"feedback/selectors.py", "feedback/management/commands/seed_demo.py"},
}


def _names_used(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "_get_study_for_researcher":
            names.add("_get_study_for_researcher:def")
    return names


@pytest.mark.parametrize("rule", list(RULE_CALLERS))
def test_it_asks_the_access_rule_only_through_the_permission_and_the_decorator(rule):
    allowed = RULE_CALLERS[rule]
    callers = set()
    # The consumers and the ASGI routing (config/) too: a WebSocket must not grow a rule of its own.
    for path in [path for app in ("feedback", "training", "config") for path in (ROOT / app).rglob("*.py")]:
        names = _names_used(path)
        if rule in names or (rule == "get_study_for_researcher" and "_get_study_for_researcher:def" in names):
            callers.add(str(path.relative_to(ROOT)))
    assert callers <= allowed, sorted(callers - allowed)


def test_it_lets_the_consumer_ask_the_one_rule():
    from feedback import consumers

    source = Path(consumers.__file__).read_text()
    assert "selectors.get_study_for_researcher" in source and "selectors.own_annotator" in source
    assert "has_researcher" not in source and "Annotator.objects" not in source


@pytest.mark.django_db
def test_it_runs_the_selector_once_per_request(study, researcher, monkeypatch):
    calls = []
    real = selectors.get_study_for_researcher

    def counting(**kwargs):
        calls.append(kwargs["pk"])
        return real(**kwargs)

    monkeypatch.setattr(selectors, "get_study_for_researcher", counting)
    client = APIClient()
    client.force_login(researcher)
    assert client.get(f"/api/v1/studies/{study.pk}/").status_code == 200
    assert calls == [study.pk]


@pytest.mark.django_db
def test_it_keeps_405_and_options_for_callers_who_are_not_researchers_of_the_study(study):
    client = APIClient()
    client.force_login(ResearcherFactory())
    url = f"/api/v1/studies/{study.pk}/judgments/"
    assert client.get(url).status_code == 403
    assert client.delete(url).status_code == 405  # the method check comes before the study's, as before
    assert client.options(url).status_code == 200
    assert APIClient().options(url).status_code == 401  # still needs a login


@pytest.mark.django_db
def test_it_answers_404_for_a_missing_study_and_403_with_the_selectors_message(study):
    client = APIClient()
    client.force_login(ResearcherFactory())
    missing = client.get("/api/v1/studies/999999/dashboard/")
    assert missing.status_code == 404 and missing.json() == {"detail": "no such study"}
    other = client.get(f"/api/v1/studies/{study.pk}/dashboard/")
    assert other.status_code == 403 and other.json() == {"detail": "you are not a researcher of this study"}
