"""Resuming in a real browser: the same browser continues; another browser with the same PID is refused and
told why; a researcher's resume link opens the session in a new browser (feedback.views_annotate)."""

from __future__ import annotations

import pytest

from feedback import services
from feedback.models import Annotator
from tests.browser.conftest import SCREENSHOTS
from tests.factories import make_study_with_pairs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_crowd_id_alone_never_opens_someone_elses_session(live_server, browser, page):
    study = make_study_with_pairs(3, slug="resume-study", name="Resume study")
    join = f"{live_server.url}/s/{study.slug}/join?PROLIFIC_PID=PID-42"
    page.goto(join)
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(f"**/s/{study.slug}/consent")
    annotator = Annotator.objects.get(study=study, external_id="PID-42")

    # The same browser with its session gone (every cookie but the resume secret cleared): it continues.
    context = page.context
    kept = [c for c in context.cookies() if c["name"].startswith("chorus_resume_")]
    assert kept and kept[0]["httpOnly"]
    context.clear_cookies()
    context.add_cookies(kept)
    page.goto(join)
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(f"**/s/{study.slug}/consent")

    # Another browser that only knows the PID: refused, told why, and nothing is created.
    other = browser.new_context()
    stranger = other.new_page()
    response = stranger.goto(join)
    assert response.status == 403
    assert "cannot continue your session in this browser" in stranger.content()
    assert stranger.get_by_role("button", name="Start").count() == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stranger.screenshot(path=str(SCREENSHOTS / "resume-refused-desktop.png"), full_page=True)
    assert Annotator.objects.filter(study=study).count() == 1

    # The researchers send a personal link: it opens the session in that browser, once.
    token = services.annotator_resume_link_token(annotator=annotator)
    link = f"{live_server.url}/s/{study.slug}/resume/{token}"
    stranger.goto(link)
    stranger.wait_for_url(f"**/s/{study.slug}/consent")
    third = browser.new_context()
    assert third.new_page().goto(link).status == 403
    third.close()
    other.close()
