"""The compare page at desktop (1400×900) and phone (390×844, touch) sizes: long responses, the phone
response switch, the sticky choice bar, key hints, pausing mid-task, a full study, and the live
"your model predicts" note over the websocket (issue 15)."""

from __future__ import annotations

import re

import pytest

from feedback.models import Annotator, Candidate, Judgment, Pair, Prompt, Study, text_hash
from tests.browser.conftest import axe_violations, shot
from tests.factories import StudyFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Over feedback.rendering.MAX_MARKDOWN_CHARS: shown as plain text, which must keep its line breaks.
HUGE = "".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog, again and again.\n" for i in range(1500))
TALL = "\n\n".join(f"{i}. A fairly long point about the question, with **some** detail to read." for i in range(1, 40))


def make_study(slug: str, texts: list[tuple[str, str]], **kwargs) -> Study:
    study = StudyFactory(name=f"UX {slug}", slug=slug, profile_fields=[], pairs_per_annotator=len(texts),
                         overlap_target=1, **kwargs)
    for i, (a, b) in enumerate(texts):
        prompt = Prompt.objects.create(study=study, text=f"Question {i}: tell me something useful.")
        ca = Candidate.objects.create(prompt=prompt, text=a, model_name="Aster-7B", text_hash=text_hash(a))
        cb = Candidate.objects.create(prompt=prompt, text=b, model_name="Bramble-13B", text_hash=text_hash(b))
        Pair.objects.create(study=study, prompt=prompt, candidate_a=ca, candidate_b=cb)
    return study


def start(page, base: str, study: Study, pid: str) -> None:
    page.goto(f"{base}/s/{study.slug}/join?pid={pid}")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/consent$"))
    page.get_by_role("button", name="I agree").click()
    page.wait_for_url(re.compile(r"/compare$"))
    page.wait_for_selector("#comparison form.judge-form[data-ready]", state="attached")


def in_viewport(page, locator) -> bool:
    box = locator.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= size["height"] + 0.5


def overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_it_caps_a_huge_response_and_switches_responses_on_a_phone(live_server, phone_page):
    page = phone_page
    # every pair has the huge answer: whichever the (random) selector serves first
    study = make_study("huge", [(HUGE, "A short answer."), ("Short one.", HUGE)])
    start(page, live_server.url, study, "PHONE-1")

    # the page stays a page: the 120k-character answer does not make it 137,000 px tall
    assert page.evaluate("document.documentElement.scrollHeight") < 3000
    # Response 1 | Response 2 switch: one response at a time
    switch = page.get_by_role("tablist", name="Show response")
    assert switch.is_visible()
    left, right = page.locator("#response-left"), page.locator("#response-right")
    assert left.is_visible() and not right.is_visible()
    # the choice bar and all three buttons are on screen, and no key hints on a touch screen
    for name in ("Response 1 is better", "About the same", "Response 2 is better"):
        assert in_viewport(page, page.get_by_role("button", name=name)), name
    assert not page.locator(".keyhints").is_visible()
    assert axe_violations(page) == []
    shot(page, "compare-huge-phone")

    page.get_by_role("tab", name="Response 2").click()
    assert right.is_visible() and not left.is_visible()
    assert page.get_by_role("tab", name="Response 2").get_attribute("aria-selected") == "true"
    page.get_by_role("tab", name="Response 1").click()

    # which side shows the huge answer depends on the random shown order
    huge_side = "left" if "Paragraph 0:" in left.inner_text() else "right"
    if huge_side == "right":
        page.get_by_role("tab", name="Response 2").click()
    shot(page, "compare-huge-phone-collapsed")
    body = page.locator(f"#response-{huge_side}-body")
    plain = body.locator(".md-plain")
    assert plain.evaluate("el => getComputedStyle(el).whiteSpace") == "pre-wrap"
    assert "Paragraph 0: the quick brown fox jumps over the lazy dog, again and again.\nParagraph 1:" in plain.inner_text()
    # collapsed with "Show more"; expanding it keeps the choice bar stuck at the bottom while scrolling
    more = page.locator(f"#response-{huge_side} .show-more")
    assert more.inner_text() == "Show more" and more.get_attribute("aria-expanded") == "false"
    more.click()
    assert more.inner_text() == "Show less"
    assert page.evaluate("document.documentElement.scrollHeight") > 20_000
    page.evaluate("window.scrollTo(0, 15000)")
    page.wait_for_timeout(100)
    assert in_viewport(page, page.get_by_role("button", name="About the same"))
    shot(page, "compare-huge-phone-expanded")
    more.click()
    assert page.evaluate("document.documentElement.scrollHeight") < 3000

    # a tap on "About the same" records a tie and brings the next pair
    page.get_by_role("button", name="About the same").tap()
    page.wait_for_function("() => document.querySelector('#comparison-heading').textContent.includes('Pair 2')")
    assert Judgment.objects.get(annotator__external_id="PHONE-1").choice == "tie"


def test_it_keeps_the_key_hints_off_the_buttons_on_a_tall_pair_at_desktop(live_server, page):
    study = make_study("tall", [(TALL, TALL.replace("point", "idea")), (TALL.replace("point", "thought"), TALL)])
    start(page, live_server.url, study, "DESK-1")
    hints = page.locator(".keyhints")
    assert hints.is_visible()
    # both tall responses are capped and collapsed; open one so the pair is taller than the window
    assert page.locator(".show-more").count() == 2
    page.locator("#response-left .show-more").click()
    assert page.evaluate("document.documentElement.scrollHeight") > 1.5 * page.viewport_size["height"]
    for scroll in (0, 600):
        page.evaluate(f"window.scrollTo(0, {scroll})")
        page.wait_for_timeout(100)
        for name in ("Response 1 is better", "About the same", "Response 2 is better"):
            button = page.get_by_role("button", name=name)
            assert not overlaps(hints.bounding_box(), button.bounding_box()), name
            # sticky: on screen wherever the pair is scrolled
            assert in_viewport(page, button), (name, scroll)
    # no phone switch at desktop width: both responses side by side
    assert not page.get_by_role("tablist", name="Show response").is_visible()
    assert page.locator("#response-left").is_visible() and page.locator("#response-right").is_visible()
    assert axe_violations(page) == []
    shot(page, "compare-tall-desktop")
    # the slider never touched is recorded as "not moved" (no strength), a moved one as its value
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('#comparison-heading').textContent.includes('Pair 2')")
    page.wait_for_selector("#comparison form.judge-form[data-ready]", state="attached")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("2")
    page.wait_for_url(re.compile(r"/done$"))
    strengths = list(Judgment.objects.filter(annotator__external_id="DESK-1").order_by("id").values_list("strength", flat=True))
    assert strengths == [None, 60]


def test_it_redirects_to_the_paused_page_when_paused_mid_task(live_server, page):
    study = make_study("pause", [("One.", "Two."), ("Three.", "Four."), ("Five.", "Six.")])
    start(page, live_server.url, study, "PAUSE-1")
    Study.objects.filter(pk=study.pk).update(status=Study.Status.PAUSED)
    page.keyboard.press("1")
    page.wait_for_selector("text=The study is paused")
    assert page.locator("header.topbar").count() == 1  # the whole page, not a page inside the compare area
    assert page.url.endswith(f"/s/{study.slug}/compare")
    shot(page, "paused-desktop")
    assert Judgment.objects.filter(annotator__external_id="PAUSE-1").count() == 1


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_it_tells_a_new_worker_the_study_is_full_before_consent(live_server, page, phone_page, size):
    page = page if size == "desktop" else phone_page
    study = make_study(f"full-{size}", [("One.", "Two.")], completion_url="https://example.org/done?cc={code}",
                       screenout_code="FULL-SCREENOUT")
    Pair.objects.filter(study=study).update(n_assigned=1)
    page.goto(f"{live_server.url}/s/{study.slug}/join?PROLIFIC_PID=LATE-1")
    assert page.get_by_role("heading", name="This study is full").is_visible()
    assert page.get_by_role("button", name="Start").count() == 0
    assert axe_violations(page) == []
    link = page.get_by_role("link", name="Return to the platform")
    assert link.get_attribute("href") == "https://example.org/done?cc=FULL-SCREENOUT"
    shot(page, f"study-full-{size}")
    assert not Annotator.objects.filter(study=study).exists()


def test_it_shows_the_live_model_note_after_a_judgment(asgi_live_server, page, settings):
    """The real ASGI app: a judgment updates the annotator's posterior (eager task), the server pushes
    "model_updated" to the annotator's group, and compare.js shows it — at desktop and phone width."""
    from tests.browser.test_dashboard import make_trained_study
    from tests.factories import ResearcherFactory

    settings.CHORUS_EMBED_ON_IMPORT = True
    study = make_trained_study(ResearcherFactory(username="live-researcher"))
    Study.objects.filter(pk=study.pk).update(profile_fields=[], overlap_target=20)
    study.refresh_from_db()
    start(page, asgi_live_server, study, "LIVE-1")
    status = page.locator("#model-status")
    page.wait_for_function("() => document.getElementById('model-status').dataset.live === 'true'")
    assert not status.is_visible()
    page.keyboard.press("1")
    status.wait_for(state="visible", timeout=30_000)
    text = status.inner_text()
    assert re.fullmatch(r"Your model now predicts \d+% of your choices \(\d of 1, each predicted before it was learned\)\.", text), text
    # it stays through the next pair's swap
    page.wait_for_function("() => document.querySelector('#comparison-heading').textContent.includes('Pair 2')")
    assert status.is_visible()
    shot(page, "compare-live-note-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(100)
    assert status.is_visible()
    shot(page, "compare-live-note-phone")
    # a researcher's event never reaches an annotator's page (only their own group is joined)
    from feedback.realtime import send_event, study_group

    send_event(study_group(study.pk), "model_updated", {"message": "NOT FOR YOU"})
    page.wait_for_timeout(300)
    assert status.inner_text() == text
