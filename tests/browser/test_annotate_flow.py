"""The annotator flow in a real browser: join → consent → profile → five pairs by keyboard → code."""

from __future__ import annotations

import re

import pytest

from feedback.models import Annotator, Candidate, Judgment, Pair, Prompt, text_hash
from tests.factories import StudyFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RESPONSES = [
    (
        "Here are three ideas:\n\n1. **Visit a museum** — many are free on Sundays.\n"
        "2. Go for a walk in a park you have not been to.\n3. Cook something new together.",
        "You could watch a movie.",
    ),
    (
        "Use a list comprehension:\n\n```python\nsquares = [n * n for n in range(10)]\n```\n\n"
        "It is shorter and usually faster than a loop.",
        "Write a `for` loop that appends `n * n` to a list for each `n` in `range(10)`.",
    ),
    (
        "It depends on your goals. Renting keeps you flexible; buying builds equity but ties up savings.",
        "Buy. Renting is throwing money away.",
    ),
    ("Paris.", "The capital of France is **Paris**, which is also its largest city."),
    ("", "I am not sure, but I think it was around 1969."),
    ("A haiku:\n\n> Autumn moonlight —\n> a worm digs silently\n> into the chestnut.", "Roses are red."),
]
PROMPTS = [
    "What can we do this weekend that doesn't cost much?",
    "How do I make a list of squares in Python?",
    "Should I rent or buy a flat?",
    "What is the capital of France?",
    "When did people first land on the Moon?",
    "Write me a short poem about autumn.",
]


def make_study():
    study = StudyFactory(
        name="Everyday assistant replies",
        slug="everyday",
        pairs_per_annotator=5,
        overlap_target=2,
        instructions="Read each conversation and pick the reply **you** would rather get.",
        completion_url="https://example.org/complete?cc={code}",
    )
    for i, (text, (a, b)) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        context = []
        if i == 0:
            context = [
                {"role": "user", "content": "Hi! My partner and I are on a tight budget this month."},
                {"role": "assistant", "content": "That sounds sensible. How can I help?"},
            ]
        prompt = Prompt.objects.create(study=study, text=text, context=context)
        ca = Candidate.objects.create(prompt=prompt, text=a, model_name="Aster-7B", text_hash=text_hash(a))
        cb = Candidate.objects.create(prompt=prompt, text=b, model_name="Bramble-13B", text_hash=text_hash(b))
        Pair.objects.create(study=study, prompt=prompt, candidate_a=ca, candidate_b=cb)
    return study


def fill_profile(page):
    page.get_by_label("Very familiar", exact=True).check()
    page.get_by_label("Every week", exact=True).check()
    page.get_by_label("Technical or programming help").check()
    page.get_by_label("Creative writing").check()
    page.get_by_label("It is helpful, directly answering my request").fill("85")
    page.locator("#id_stated_prefs__safety__prefer_not").check()
    for question in ("age", "gender", "employment_status", "marital_status", "education",
                     "english_proficiency", "ethnicity", "religion"):
        page.locator(f'input[name="{question}"][value="prefer-not-to-say"]').check()
    page.locator("#id_reside_country").select_option("DE")
    page.locator("#id_birth_country").select_option("prefer-not-to-say")
    page.get_by_label("Briefly describe yourself").fill("I teach maths.")


def test_it_labels_five_pairs_by_keyboard(live_server, page, screenshot):
    study = make_study()
    base = live_server.url

    page.goto(f"{base}/s/{study.slug}/join?PROLIFIC_PID=BROWSER-1&STUDY_ID=s1&SESSION_ID=x1")
    assert page.get_by_role("heading", name=study.name).is_visible()
    screenshot("join")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/consent$"))
    screenshot("consent")
    page.get_by_role("button", name="I agree").click()
    page.wait_for_url(re.compile(r"/profile$"))

    # The slider shows its value live.
    helpful = page.get_by_label("It is helpful, directly answering my request")
    helpful.fill("85")
    assert page.locator("#id_stated_prefs__helpfulness-out").inner_text() == "85"
    screenshot("profile")
    fill_profile(page)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/compare$"))

    annotator = Annotator.objects.get(study=study, external_id="BROWSER-1")
    profile = annotator.profile
    profile.refresh_from_db()
    assert profile.data["reside_country"] == "DE"
    assert profile.data["stated_prefs"]["helpfulness"] == 85
    assert profile.data["stated_prefs"]["safety"] == "prefer-not-to-say"
    assert profile.data["lm_usecases"] == ["creative-writing", "technical"]

    screenshot("compare")
    # A marker that survives only if the page is never fully reloaded (htmx swaps the pair).
    page.evaluate("window.__sameDocument = true")
    keys = ["1", "2", "0", "2", "1"]
    expected: dict[int, tuple[str, int | None]] = {}
    for i, key in enumerate(keys):
        # compare.js marks the form once htmx has wired it up; keys pressed earlier are ignored.
        page.wait_for_selector("#comparison form.judge-form[data-ready]", state="attached")
        pair_input = page.locator('#comparison input[name="pair"]')
        pair_id = int(pair_input.get_attribute("value"))
        assert page.locator("#comparison-heading").inner_text() == f"Pair {i + 1} of 5"
        page.keyboard.press("ArrowRight")  # strength 50 → 60
        assert page.locator("#comparison output.slider-value").inner_text() == "60"
        # Typing in the rationale box must not trigger shortcuts.
        if i == 0:
            page.get_by_label("Why?").fill("Clearer 1 2 0")
            page.get_by_label("Why?").press("2")
            assert page.locator('#comparison input[name="pair"]').get_attribute("value") == str(pair_id)
            page.locator("#comparison-heading").focus()
        expected[pair_id] = ({"1": "left", "2": "right", "0": "tie"}[key], None if key == "0" else 60)
        page.keyboard.press(key)
        if i < len(keys) - 1:
            page.wait_for_function(
                "old => { const el = document.querySelector('#comparison input[name=pair]');"
                " return el && el.value !== old; }",
                arg=str(pair_id),
            )
            assert page.evaluate("window.__sameDocument === true")
    page.wait_for_url(re.compile(r"/done$"))

    annotator.refresh_from_db()
    code = annotator.completion_code
    assert annotator.completed_at is not None
    assert page.locator("#completion-code").inner_text() == code
    assert page.get_by_role("link", name="Return to the platform").get_attribute("href").endswith(f"cc={code}")
    screenshot("done")

    judgments = list(Judgment.objects.filter(annotator=annotator).select_related("assignment"))
    assert len(judgments) == 5
    for j in judgments:
        side, strength = expected[j.pair_id]
        assert j.chosen_side_shown == side
        assert j.shown_order == j.assignment.shown_order
        a_left = j.shown_order == "ab"
        assert j.choice == {"left": "a" if a_left else "b", "right": "b" if a_left else "a", "tie": "tie"}[side]
        assert j.strength == strength
        assert j.time_ms is not None and 0 < j.time_ms < 120_000
    assert [j.rationale for j in judgments if j.rationale] == ["Clearer 1 2 02"]
