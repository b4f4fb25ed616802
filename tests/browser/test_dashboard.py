"""The study dashboard in a real browser: a researcher logs in, sees the Plotly charts of a labelled and
trained study, switches the grouping (htmx swaps the sections) and sees the charts follow."""

from __future__ import annotations

import json
import os

import pytest

from feedback import services
from feedback.models import Profile
from tests.factories import ResearcherFactory, StudyFactory
from tests.training.conftest import _responses, label_all
from training import services as training_services

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHARTS = ["chart-progress", "chart-leaderboard", "chart-rank", "chart-agreement", "chart-between",
          "chart-accuracy", "chart-cross", "chart-latent", "chart-stated"]


METADATA = {  # what the stated-vs-revealed section compares the profile sliders with
    "Aster-7B": {"length": "short", "caution": 0, "humor": 0, "markdown": False},
    "Bramble-13B": {"length": "long", "caution": 2, "humor": 0, "markdown": True},
    "Cobalt-Chat": {"length": "medium", "caution": 0, "humor": 1, "markdown": False},
}


def _with_metadata(responses: list[dict]) -> list[dict]:
    return [{**r, "metadata": METADATA[r["model"]]} for r in responses]


def make_trained_study(researcher):
    study = StudyFactory(name="Short or long answers", slug="short-or-long", created_by=researcher,
                         overlap_target=10, pairs_per_annotator=60, model_kind="vpl")
    lines = [json.dumps({"prompt": f"Tell me about topic {i}", "responses": _with_metadata(_responses(i))})
             for i in range(20)]
    services.study_import(study=study, data="\n".join(lines).encode(), filename="s.jsonl")
    annotators = label_all(study, n_annotators=6, per_annotator=20)
    for i, ann in enumerate(annotators):  # an age that does NOT go with taste
        profile = Profile.objects.get(annotator=ann)
        profile.data = {**profile.data, "age": "18-24" if i % 3 else "65+",
                        "stated_prefs": {"helpfulness": 20 + 12 * i, "fluency": 80 - 9 * i, "safety": 30 + 5 * i}}
        profile.save()
    version = training_services.model_version_request(study=study)
    version.refresh_from_db()
    assert version.status == "active", version.error
    return study


def _legend(page, chart: str) -> set[str]:
    return {t.strip() for t in page.locator(f"#{chart} .legendtext").all_text_contents()}


def test_researcher_sees_the_dashboard_and_switches_grouping(live_server, page, screenshot, settings):
    settings.CHORUS_EMBED_ON_IMPORT = True
    researcher = ResearcherFactory(username="dash-researcher")
    study = make_trained_study(researcher)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    dashboard = f"/studies/{study.pk}/dashboard/"
    page.goto(f"{live_server.url}/accounts/login/?next={dashboard}")
    page.fill("#id_username", "dash-researcher")
    page.fill("#id_password", "pw-secret-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"**{dashboard}")

    # every chart is drawn as Plotly SVG
    for chart in CHARTS:
        page.wait_for_selector(f"#{chart} svg.main-svg", state="attached")
    assert _legend(page, "chart-latent") == {"female", "male"}
    assert {"female", "male"} <= _legend(page, "chart-leaderboard")
    assert page.locator("#table-progress tbody th").all_text_contents() == ["female", "male"]
    assert page.locator("#group-by").input_value() == "gender"
    # no live websocket here (live_server speaks plain HTTP): the page says so and keeps working
    assert page.locator("#live-status").text_content() == "Not live"
    screenshot("dashboard-gender")

    # switch the grouping: htmx swaps the sections, the URL follows, the charts are redrawn
    page.select_option("#group-by", "age")
    page.wait_for_function(
        "() => JSON.parse(document.getElementById('dashboard-data').textContent).group_by === 'age'"
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('#chart-latent .legendtext')].some(e => e.textContent === '65+')"
    )
    assert "group_by=age" in page.url
    assert _legend(page, "chart-latent") == {"18-24", "65+"}
    assert {"18-24", "65+"} <= _legend(page, "chart-leaderboard")
    assert page.locator("#table-progress tbody th").all_text_contents() == ["18-24", "65+"]
    for chart in CHARTS:
        assert page.locator(f"#{chart} svg.main-svg").count() >= 1, chart
    screenshot("dashboard-age")

    # a stated-preference grouping works too, and so does going back
    page.select_option("#group-by", "stated_prefs.helpfulness")
    page.wait_for_function(
        "() => JSON.parse(document.getElementById('dashboard-data').textContent).group_by"
        " === 'stated_prefs.helpfulness'"
    )
    page.wait_for_selector("#chart-latent svg.main-svg", state="attached")
    screenshot("dashboard-stated-helpfulness")
    page.go_back()
    page.wait_for_function("() => document.getElementById('group-by').value === 'age'")

    assert errors == []
