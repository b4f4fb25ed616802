"""Researcher pages in a real browser (issue 15): the create form and the study page's settings card,
"Train now" with the job's status (htmx polling), recent judgments, annotator exclusion on the dashboard,
the study-model download before a model exists — at desktop (1400×900) and phone (390×844) sizes, with
axe-core checks."""

from __future__ import annotations

import pytest

from feedback import services
from feedback.models import Annotator, Study
from tests.browser.conftest import axe_violations
from tests.factories import AnnotatorFactory, AssignmentFactory, ResearcherFactory, make_study_with_pairs
from training.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, base: str, username: str, next_url: str) -> None:
    page.goto(f"{base}/accounts/login/?next={next_url}")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-secret-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"**{next_url}")


def test_it_creates_a_study_with_settings_from_dropdowns(live_server, page, screenshot):
    ResearcherFactory(username="creator")
    log_in(page, live_server.url, "creator", "/studies/new")
    selector = page.get_by_label("Pair selection")
    # active learning by default (random pairs until a model is active)
    assert selector.input_value() == "mixed"
    options = selector.locator("option").evaluate_all("els => els.map(e => e.value)")
    assert set(options) == {"mixed", "info_gain", "uncertainty", "random"}
    assert page.get_by_label("Reward model").locator("option").evaluate_all("els => els.map(e => e.value)") == [
        "vpl", "pal", "bt"]
    assert axe_violations(page) == []
    screenshot("study-create")
    page.get_by_label("Name").fill("Tone study")
    page.get_by_label("Reward model").select_option("pal")
    page.get_by_label("Retrain after this many new judgments").fill("30")
    page.get_by_role("button", name="Create study").click()
    page.wait_for_selector("text=Now import the pairs")
    study = Study.objects.get(name="Tone study")
    assert (study.selector, study.model_kind, study.retrain_every_judgments) == ("mixed", "pal", 30)


def test_it_edits_settings_trains_and_shows_recent_judgments_on_the_study_page(live_server, page, screenshot):
    researcher = ResearcherFactory(username="owner")
    study = make_study_with_pairs(4, created_by=researcher, name="Settings study", slug="settings-study",
                                  overlap_target=3)
    pair = study.pairs.select_related("candidate_a", "candidate_b").first()
    ann = AnnotatorFactory(study=study)
    AssignmentFactory(annotator=ann, pair=pair, shown_order="ab")
    services.judgment_create(annotator=ann, pair=pair, choice="b", client_key="k1", strength=80,
                             rationale="مختصر ومفيد", time_ms=4200)
    url = f"/studies/{study.pk}/"
    log_in(page, live_server.url, "owner", url)

    card = page.locator("#settings")
    assert card.get_by_label("Pair selection").input_value() == "random"
    card.get_by_label("Pair selection").select_option("info_gain")
    card.get_by_label("Overlap").fill("5")
    card.get_by_role("button", name="Save settings").click()
    page.wait_for_selector("text=Settings saved.")
    study.refresh_from_db()
    assert (study.selector, study.overlap_target) == ("info_gain", 5)

    # Train now with nothing to learn from: the panel says why (htmx swap, same page)
    page.evaluate("window.__samePage = true")
    page.get_by_role("button", name="Train now").click()
    page.wait_for_selector("#train-panel >> text=Not yet")
    assert page.evaluate("window.__samePage === true")

    # a queued job is polled until it finishes, without a reload
    version = ModelVersion.objects.create(study=study, kind="vpl")
    page.reload()
    assert page.locator("[data-job-status]").inner_text() == "Queued"
    assert page.get_by_role("button", name="Train now").is_disabled()
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED, error="ValueError: boom")
    page.wait_for_selector("[data-job-status=failed]", timeout=10_000)
    assert "ValueError: boom" in page.locator("#train-panel").inner_text()
    assert page.get_by_role("button", name="Train now").is_enabled()

    # recent judgments: both responses (collapsed), the side clicked, strength, rationale, time
    row = page.locator("table.judgments tbody tr").first
    assert pair.candidate_a.text not in row.inner_text()  # collapsed
    row.locator("summary").first.click()
    assert pair.candidate_a.text in row.inner_text()
    cells = row.locator("td").all_inner_texts()
    assert cells[3:] == ["B", "right", "80", "مختصر ومفيد", "4.2 s"]
    assert row.locator("td.rationale-cell").get_attribute("dir") == "auto"
    assert axe_violations(page) == []
    screenshot("study-detail")


def test_it_disables_the_model_download_then_excludes_an_annotator_on_the_dashboard(live_server, page, screenshot):
    researcher = ResearcherFactory(username="dash-owner")
    study = make_study_with_pairs(3, created_by=researcher, name="Quality study", slug="quality-study",
                                  overlap_target=3)
    ann = AnnotatorFactory(study=study, profile={"gender": "male"})
    for i, pair in enumerate(study.pairs.all()):
        AssignmentFactory(annotator=ann, pair=pair)
        services.judgment_create(annotator=ann, pair=pair, choice="a", client_key=f"k{i}", time_ms=400)
    url = f"/studies/{study.pk}/dashboard/"
    log_in(page, live_server.url, "dash-owner", url)

    download = page.get_by_role("button", name="Download the study's reward model (zip)")
    assert download.is_disabled()
    assert "no model is active" in page.locator("#no-model-reason").inner_text()
    assert page.get_by_role("link", name="Download the study's reward model (zip)").count() == 0

    row = page.locator("#table-quality tbody tr").first
    assert "fast" in row.inner_text()
    row.get_by_role("button", name=f"Exclude {ann.pseudonym} from training and exports").click()
    page.wait_for_selector(f"text={ann.pseudonym} is excluded from training and exports.")
    assert page.url.endswith("#quality")
    ann.refresh_from_db()
    assert ann.is_excluded and ann.excluded_by.username == "dash-owner" and ann.exclusion_reason == "fast"
    row = page.locator("#table-quality tbody tr").first
    assert "excluded" in row.inner_text()
    screenshot("dashboard-quality-excluded")
    row.get_by_role("button", name="Include again").click()
    page.wait_for_selector("text=included again")
    assert not Annotator.objects.get(pk=ann.pk).is_excluded
    assert axe_violations(page) == []
