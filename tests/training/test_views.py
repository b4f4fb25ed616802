"""The study dashboard page (full page, htmx partial, group switch), its JSON API, and who may see them."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from feedback.models import Profile
from tests.factories import AnnotatorFactory, ResearcherFactory, make_study_with_pairs
from tests.training.conftest import label_all
from training import selectors, services

DATA_SCRIPT = re.compile(r'<script id="dashboard-data" type="application/json">(.*?)</script>', re.S)


def _page_data(html: str) -> dict:
    match = DATA_SCRIPT.search(html)
    assert match, "the page carries its numbers as json_script"
    return json.loads(match.group(1))


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def trained_study(style_study):
    """style_study labelled by 6 annotators (gender ↔ taste) with an age that does NOT track taste."""
    annotators = label_all(style_study, n_annotators=6, per_annotator=20)
    for i, ann in enumerate(annotators):
        profile = Profile.objects.get(annotator=ann)
        profile.data = {**profile.data, "age": "18-24" if i < 3 else "65+"}
        profile.save()
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    assert version.status == "active", version.error
    return style_study


@pytest.mark.django_db
def test_the_dashboard_shows_groups_charts_tables_and_switches_grouping(trained_study, researcher):
    client = _client(researcher)
    url = reverse("training:dashboard", args=[trained_study.pk])

    # full page: controls, every section, the data for the charts, and the chart scripts from our static files
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    for section in ("progress", "leaderboard", "agreement", "reward-model", "latent-map", "stated-revealed", "quality"):
        assert f'id="{section}"' in html
    for chart in ("chart-progress", "chart-leaderboard", "chart-rank", "chart-agreement", "chart-between",
                  "chart-accuracy", "chart-cross", "chart-latent"):
        assert f'id="{chart}"' in html
    # these responses carry no metadata, so there is no revealed preference to compare with the sliders
    assert 'id="chart-stated"' not in html and "Nothing to compare yet" in html
    assert "/static/js/plotly.min.js" in html and "/static/js/dashboard.js" in html
    assert "cdn" not in html.lower()
    assert 'id="group-form"' in html and 'hx-push-url="true"' in html and 'name="group_by"' in html
    assert '<option value="stated_prefs.safety"' in html
    data = _page_data(html)
    assert data["group_by"] == "gender"
    assert {g["name"] for g in data["groups"]} == {"female", "male"}
    assert data["progress"]["judgments"] == 120
    # tables carry the same numbers as the charts
    assert re.search(r"<th scope=\"row\">female</th><td class=\"num\">3</td>", html)
    assert html.count('class="annotator-model"') == 6
    assert html.count('class="group-model"') == 2
    assert reverse("api-study-model", args=[trained_study.pk]) in html
    assert f"{reverse('api-group-model', args=[trained_study.pk])}?group_by=gender&amp;group=female" in html
    # pseudonyms only
    for q in data["quality"]:
        assert q["annotator"].startswith("ann_")

    # htmx: only the sections partial, which is what the select swaps in
    partial = client.get(url, {"group_by": "age"}, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="dashboard-sections"')
    assert "<html" not in body and 'id="group-form"' not in body
    age = _page_data(body)
    assert age["group_by"] == "age"
    assert {g["name"] for g in age["groups"]} == {"18-24", "65+"}
    assert "<th scope=\"row\">65+</th>" in body

    # the same switch without JavaScript: a GET form
    page = client.get(url, {"group_by": "age"})
    assert page.status_code == 200
    assert '<option value="age" selected>' in page.content.decode()

    # unknown field: the default grouping, with a message and a 400
    bad = client.get(url, {"group_by": "shoe_size"})
    assert bad.status_code == 400
    assert _page_data(bad.content.decode())["group_by"] == "gender"

    # the API serves the same dict
    api = client.get(reverse("api-study-dashboard", args=[trained_study.pk]), {"group_by": "gender"})
    assert api.status_code == 200
    body = api.json()
    assert body["groups"] == data["groups"]
    female = next(g for g in body["groups"] if g["name"] == "female")
    assert female["annotators"] == 3 and female["judgments"] == 60
    assert female["leaderboard"][0]["model"] == "Bramble-13B"
    assert {"model", "score", "ci_low", "ci_high"} <= set(female["leaderboard"][0])
    assert {"pairwise", "alpha"} <= set(female["agreement"])
    assert {"personalized", "population"} <= set(female["reward_accuracy"])
    assert set(body["cross_group_accuracy"]["matrix"]) == {"female", "male"}
    assert len(body["latent_map"]) == 6
    assert client.get(reverse("api-study-dashboard", args=[trained_study.pk]), {"group_by": "nope"}).status_code == 400


@pytest.mark.django_db
def test_the_dashboard_renders_before_any_judgment(study, researcher):
    response = _client(researcher).get(reverse("training:dashboard", args=[study.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "No reward model has been trained yet" in html
    assert _page_data(html)["progress"]["judgments"] == 0


@pytest.mark.django_db
def test_the_dashboard_is_cached_until_a_judgment_arrives(style_study, researcher):
    from training.selectors import dashboard_data

    first = dashboard_data(style_study, "gender")
    assert dashboard_data(style_study, "gender") == first
    label_all(style_study, n_annotators=1, per_annotator=2)
    assert dashboard_data(style_study, "gender")["progress"]["judgments"] == 2


# --- who may see what -------------------------------------------------------------------------------

ROLES = ["anonymous", "annotator", "other_annotator", "researcher", "other_researcher"]


@pytest.fixture
def users(db, study, researcher, annotator, other_annotator):
    other_researcher = ResearcherFactory()
    make_study_with_pairs(2, created_by=other_researcher)
    return {
        "anonymous": None,
        "annotator": annotator.user,
        "other_annotator": other_annotator.user,
        "researcher": researcher,
        "other_researcher": other_researcher,
    }


PAGE_EXPECTED = {"anonymous": 302, "annotator": 403, "other_annotator": 403, "researcher": 200,
                 "other_researcher": 403}
API_EXPECTED = {"anonymous": 401, "annotator": 403, "other_annotator": 403, "researcher": 200,
                "other_researcher": 403}


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_dashboard_page_access(role, users, study):
    response = _client(users[role]).get(reverse("training:dashboard", args=[study.pk]))
    assert response.status_code == PAGE_EXPECTED[role]
    if role == "anonymous":
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_dashboard_partial_access(role, users, study):
    response = _client(users[role]).get(reverse("training:dashboard", args=[study.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == PAGE_EXPECTED[role]


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_dashboard_api_access(role, users, study):
    response = _client(users[role]).get(reverse("api-study-dashboard", args=[study.pk]))
    assert response.status_code == API_EXPECTED[role]
    if response.status_code != 200:
        assert "groups" not in response.json()


@pytest.mark.django_db
def test_missing_studies_are_404(researcher):
    client = _client(researcher)
    assert client.get(reverse("training:dashboard", args=[999999])).status_code == 404
    assert client.get(reverse("api-study-dashboard", args=[999999])).status_code == 404


@pytest.mark.django_db
def test_the_api_accepts_a_token(study, researcher):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=researcher)
    response = Client().get(
        reverse("api-study-dashboard", args=[study.pk]), {"group_by": "age"}, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    assert response.status_code == 200
    assert response.json()["group_by"] == "age"


@pytest.mark.django_db
def test_the_completion_page_include_links_to_the_own_model(study):
    from django.template.loader import render_to_string

    html = render_to_string("training/_download_own_model.html", {"study": study})
    assert reverse("training:my_model", args=[study.slug]) in html


@pytest.mark.django_db
def test_annotator_ids_never_leak_into_the_dashboard(study, researcher):
    AnnotatorFactory(study=study, external_id="PROLIFIC-SECRET-123")
    html = _client(researcher).get(reverse("training:dashboard", args=[study.pk])).content.decode()
    assert "PROLIFIC-SECRET-123" not in html


# --- the study page's "Train now" panel (issue 15) -------------------------------------------------

TRAIN_ROLES = ["anonymous", "annotator", "other_annotator", "other_researcher", "researcher"]


def _user_for(role: str, study, annotator, other_annotator):
    return {
        "anonymous": None,
        "annotator": annotator.user,
        "other_annotator": other_annotator.user,
        "other_researcher": ResearcherFactory(),
        "researcher": study.created_by,
    }[role]


@pytest.mark.django_db
@pytest.mark.parametrize("role", TRAIN_ROLES)
def test_train_now_and_its_status_are_for_the_study_researchers_only(study, annotator, other_annotator, role):
    from training.models import ModelVersion

    client = _client(_user_for(role, study, annotator, other_annotator))
    post = client.post(reverse("training:train_now", args=[study.pk]), HTTP_HX_REQUEST="true")
    get = client.get(reverse("training:train_status", args=[study.pk]))
    if role == "anonymous":
        assert post.status_code == get.status_code == 302 and "/accounts/login/" in post["Location"]
    elif role == "researcher":
        assert post.status_code == get.status_code == 200
    else:
        assert post.status_code == get.status_code == 403
    assert not ModelVersion.objects.filter(study=study).exists()  # nothing to train on: nobody queued one


@pytest.mark.django_db
def test_train_now_says_why_not_and_polls_a_running_job(study, researcher):
    from training.models import ModelVersion

    client = _client(researcher)
    url = reverse("training:train_now", args=[study.pk])
    html = client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Not yet:" in html and "at least 2" in html
    # without htmx: back to the study page with the reason as a message
    response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0].endswith(f"/studies/{study.pk}/#settings")
    assert "Not yet:" in response.content.decode()

    version = ModelVersion.objects.create(study=study, kind="vpl")
    status = client.get(reverse("training:train_status", args=[study.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in status and 'data-job-status="queued"' in status and " disabled" in status
    ModelVersion.objects.filter(pk=version.pk).update(status="failed", error="RuntimeError: out of memory\ntrace")
    status = client.get(reverse("training:train_status", args=[study.pk])).content.decode()
    assert "hx-trigger" not in status  # finished: the panel stops polling
    assert 'data-job-status="failed"' in status and "RuntimeError: out of memory" in status and "trace" not in status


@pytest.mark.django_db
def test_train_now_trains_a_model_and_the_panel_shows_it(style_study, researcher):
    label_all(style_study, n_annotators=4, per_annotator=10)
    client = _client(researcher)
    html = client.post(reverse("training:train_now", args=[style_study.pk]), HTTP_HX_REQUEST="true").content.decode()
    version = selectors.active_version(style_study.pk)
    assert version is not None  # eager tasks: trained within the request
    assert f"Active: <strong>version {version.pk}</strong>" in html
    page = client.get(reverse("feedback:study_detail", args=[style_study.pk])).content.decode()
    assert f"version {version.pk}" in page


@pytest.mark.django_db
def test_the_study_download_is_a_link_only_once_a_model_is_active(trained_study, researcher, study):
    client = _client(researcher)
    none_yet = client.get(reverse("training:dashboard", args=[study.pk])).content.decode()
    assert 'id="no-model-reason"' in none_yet and " disabled" in none_yet
    assert reverse("api-study-model", args=[study.pk]) not in none_yet
    ready = client.get(reverse("training:dashboard", args=[trained_study.pk])).content.decode()
    assert f'href="{reverse("api-study-model", args=[trained_study.pk])}" download' in ready
    assert 'id="no-model-reason"' not in ready


@pytest.mark.django_db
def test_the_retrain_rule_of_a_study_wins_over_the_site_default(style_study, settings):
    from training.models import ModelVersion

    settings.CHORUS_RETRAIN_MIN_JUDGMENTS = 10**9
    style_study.retrain_every_judgments = 8
    style_study.save(update_fields=["retrain_every_judgments"])
    assert services.retrain_rule(style_study) == (8, 8, settings.CHORUS_RETRAIN_EVERY_MINUTES)
    label_all(style_study, n_annotators=2, per_annotator=6)  # 12 judgments: the 8th queues the first model
    assert ModelVersion.objects.filter(study=style_study).exists()
    style_study.retrain_every_judgments = 0
    style_study.retrain_every_minutes = 0
    style_study.save(update_fields=["retrain_every_judgments", "retrain_every_minutes"])
    assert services.retrain_if_due(study=style_study, force_time=True) is None  # manual only
