"""Join and profile pages in a real browser (issue 15): honest wording about skipping questions, focus on
the first problem after a rejected profile, a favicon that loads (no 404 anywhere), RTL text."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import shot
from tests.factories import ResearcherFactory, make_study_with_pairs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_focuses_the_first_profile_error_and_serves_a_favicon(live_server, page, screenshot):
    study = make_study_with_pairs(2, name="Profile focus", slug="profile-focus", instructions="اختر الرد الذي تفضله.")
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status == 404 else None)

    page.goto(f"{live_server.url}/s/{study.slug}/join")
    steps = page.get_by_role("list", name="What happens next").inner_text()
    assert "can be skipped" not in steps and "Prefer not to say" in steps
    assert page.locator(".md.prose").get_attribute("dir") == "auto"
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert page.request.get(live_server.url + icon).ok
    assert page.request.get(live_server.url + "/favicon.ico").ok  # redirected to the SVG
    page.get_by_role("button", name="Start").click()
    page.get_by_role("button", name="I agree").click()
    page.wait_for_url(re.compile(r"/profile$"))

    # answer the first question only, then submit: focus lands on the first unanswered one
    page.locator('input[name="lm_familiarity"]').first.check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_selector(".question.has-error")
    focused = page.evaluate(
        "() => { const q = document.activeElement.closest('.question');"
        " return q && q === document.querySelector('.profile-form .has-error'); }"
    )
    assert focused is True
    assert page.evaluate("document.activeElement.tagName") in ("INPUT", "SELECT", "TEXTAREA")
    first_error = page.locator(".profile-form .has-error").first
    box = first_error.bounding_box()
    assert box is not None and -2 <= box["y"] < page.viewport_size["height"]
    shot(page, "profile-first-error-viewport-desktop")
    screenshot("profile-first-error")
    assert failed == []


def test_it_serves_the_favicon_on_researcher_pages(live_server, page):
    ResearcherFactory(username="icon-researcher")
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status == 404 else None)
    page.goto(f"{live_server.url}/accounts/login/")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon.endswith(".svg") and page.request.get(live_server.url + icon).ok
    assert failed == []
