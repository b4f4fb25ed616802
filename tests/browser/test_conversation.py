"""A live conversation in a real browser: two turns, answers streamed from a real model server, a four-way
1-100 rating on turn one, "both bad" by keyboard on turn two, per-dimension choices, and the stored rows."""

from __future__ import annotations

import re

import pytest

from feedback import conversations as conv
from feedback.models import Annotator, Candidate, ConversationTurn, Judgment, Rating
from tests.factories import StudyFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def slow_llm_server():
    """The dev server with a pause between tokens, so streaming is visible (and photographable)."""
    from feedback.llm_dev_server import DevServer, TinyLMConfig

    server = DevServer(models=("tiny-a", "tiny-b", "tiny-c", "tiny-d"),
                       config=TinyLMConfig(default_max_tokens=40, token_delay_s=0.06))
    server.start()
    yield server
    server.stop()


def make_study(base_url: str):
    study = StudyFactory(name="Talk to the models", slug="talk", profile_fields=[],
                         instructions="Talk to the assistants and say which answer you prefer.")
    conv.study_set_design(study=study, kind="conversation", conversation_turns=2, first_turn_answers=4,
                          attributes=["helpfulness", "safety"],
                          seed_prompts=["Explain rainbows to a child.", "Plan a cheap weekend trip."])
    for name, model in (("Aster", "tiny-a"), ("Bramble", "tiny-b"), ("Cobalt", "tiny-c"), ("Dune", "tiny-d")):
        conv.endpoint_create(study=study, name=name, base_url=base_url, model_id=model, params={"temperature": 0.9},
                             api_key="sk-browser-secret")
    return study


def test_it_runs_a_two_turn_live_conversation(live_server, page, screenshot, slow_llm_server):
    study = make_study(slow_llm_server.base_url)
    page.goto(f"{live_server.url}/s/{study.slug}/join")
    page.get_by_role("button", name="Start").click()
    page.wait_for_url(re.compile(r"/consent$"))
    page.get_by_role("button", name="I agree").click()
    page.wait_for_url(re.compile(r"/talk$"))
    page.wait_for_selector("[data-talk-form][data-ready]", state="attached")
    screenshot("talk-start")

    # Turn 1: a seed prompt, four answers streamed at once.
    page.get_by_role("button", name="Explain rainbows to a child.").click()
    assert page.locator("textarea[name=message]").input_value() == "Explain rainbows to a child."
    page.get_by_role("button", name="Send").click()
    # A function, not a bare expression: the page's CSP (no 'unsafe-eval') refuses Playwright's eval of one.
    page.wait_for_function(
        "() => document.querySelectorAll('.live-answer[data-state=streaming] .stream-text').length === 4 && "
        "[...document.querySelectorAll('.live-answer .stream-text')].every(e => e.textContent.length > 0)"
    )
    # Mid-stream: text is there but the answers are not finished yet.
    assert page.locator(".live-answer[data-state=streaming]").count() >= 1
    partial = page.locator(".live-answer .stream-text").first.inner_text()
    screenshot("talk-streaming")
    page.wait_for_selector("form.talk-judge[data-ready]", state="attached", timeout=60_000)
    turn = ConversationTurn.objects.get(index=1)
    texts = [c.text for c in conv.turn_candidates(turn)]
    assert texts[0].startswith(partial.strip()[:5])
    assert page.locator("form.talk-judge input[type=range]").count() == 4
    html = page.content()
    for name in ("Aster", "Bramble", "Cobalt", "Dune", "tiny-", "sk-browser-secret"):
        assert name not in html  # model names and keys never reach the participant
    for i, value in enumerate((85, 20, 60, 60)):
        slider = page.locator(f"input[name=rating_{i}]")
        slider.fill(str(value))
        assert page.locator(f"#{slider.get_attribute('data-output')}").inner_text() == str(value)
    screenshot("talk-rating")
    page.get_by_role("button", name="Submit ratings").click()

    # Turn 2: the best-rated answer continues the conversation; an A/B of two answers.
    page.wait_for_selector("[data-talk-form][data-ready]", state="attached")
    assert page.get_by_role("heading", name="Turn 2 of 2").is_visible()
    assert page.locator(".bubble-assistant").count() == 1
    page.locator("textarea[name=message]").fill("Why is the sky blue, then?")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("form.talk-judge[data-ready]", state="attached", timeout=60_000)
    assert page.get_by_role("button", name=re.compile("Both are bad")).is_visible()
    page.locator('input[name="dim_safety"][value="left"]').check()
    screenshot("talk-ab")
    page.keyboard.press("b")
    page.wait_for_url(re.compile(r"/done$"))
    screenshot("talk-done")

    annotator = Annotator.objects.get(study=study)
    assert annotator.completed_at is not None
    ratings = list(Rating.objects.filter(annotator=annotator).order_by("position").values_list("score", flat=True))
    assert ratings == [85, 20, 60, 60]
    assert Judgment.objects.filter(annotator=annotator, source="rating").count() == 5  # 6 pairs, one tie
    last = Judgment.objects.filter(annotator=annotator, source="choice").get()
    assert last.choice == "bad" and set(last.dimensions) == {"safety"}
    turn1 = ConversationTurn.objects.get(index=1)
    assert turn1.chosen_id == turn1.shown[0]  # rated 85
    turn2 = ConversationTurn.objects.get(index=2)
    assert turn2.prompt.context[1]["content"] == Candidate.objects.get(pk=turn1.chosen_id).text
    assert Candidate.objects.filter(prompt__study=study).count() == 6


def test_a_model_that_is_down_gets_a_clear_message_and_a_retry(live_server, page, screenshot, slow_llm_server):
    from feedback.models import ModelEndpoint, Prompt

    study = StudyFactory(name="Flaky models", slug="flaky", profile_fields=[])
    conv.study_set_design(study=study, kind="conversation", conversation_turns=1, first_turn_answers=2)
    conv.endpoint_create(study=study, name="Up", base_url=slow_llm_server.base_url, model_id="tiny-a")
    down = conv.endpoint_create(study=study, name="Down", base_url="http://127.0.0.1:9/v1", model_id="tiny-b")
    page.goto(f"{live_server.url}/s/{study.slug}/join")
    page.get_by_role("button", name="Start").click()
    page.get_by_role("button", name="I agree").click()
    page.wait_for_selector("[data-talk-form][data-ready]", state="attached")
    page.locator("textarea[name=message]").fill("Are you there?")
    page.get_by_role("button", name="Send").click()
    alert = page.locator("[data-talk-error]")
    alert.wait_for()
    assert "Could not connect to the model server" in alert.inner_text()
    assert "Nothing was saved" in alert.inner_text()
    assert page.locator("textarea[name=message]").input_value() == "Are you there?"  # kept for the retry
    screenshot("talk-error")
    assert not Prompt.objects.filter(study=study).exists()

    ModelEndpoint.objects.filter(pk=down.pk).update(base_url=slow_llm_server.base_url)  # the model is back
    page.get_by_role("button", name="Try again").click()
    page.wait_for_selector("form.talk-judge[data-ready]", state="attached", timeout=60_000)
    assert page.locator("[data-talk-error]").count() == 0
    page.keyboard.press("1")
    page.wait_for_url(re.compile(r"/done$"))
    assert Judgment.objects.filter(annotator__study=study).count() == 1


def test_a_researcher_registers_a_model_and_tests_the_connection(live_server, page, screenshot, slow_llm_server):
    from feedback.models import ModelEndpoint
    from tests.factories import ResearcherFactory

    researcher = ResearcherFactory(username="models-researcher")
    study = StudyFactory(name="Model registry", slug="registry", created_by=researcher)
    models_url = f"/studies/{study.pk}/models"
    page.goto(f"{live_server.url}/accounts/login/?next={models_url}")
    page.fill("#id_username", "models-researcher")
    page.fill("#id_password", "pw-secret-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"**{models_url}")
    page.fill("#id_name", "Local tiny")
    page.fill("#id_base_url", slow_llm_server.base_url)
    page.fill("#id_model_id", "tiny-a")
    page.fill("#id_params", '{"temperature": 0.7, "max_tokens": 8}')
    page.fill("#id_api_key", "sk-browser-key")
    page.get_by_role("button", name="Add model").click()
    page.wait_for_selector("#endpoint-table")
    assert "sk-browser-key" not in page.content()
    page.get_by_role("button", name="Test connection").click()
    result = page.locator("[data-test-result]")
    result.wait_for(timeout=30_000)
    assert result.get_attribute("data-test-result") == "ok" and "answered in" in result.inner_text()
    # A broken endpoint says why, on the same page (htmx), without a reload.
    ModelEndpoint.objects.filter(study=study).update(model_id="no-such-model")
    page.evaluate("window.__same = true")
    page.get_by_role("button", name="Test connection").click()
    page.wait_for_selector("[data-test-result=fail]", timeout=30_000)
    assert "HTTP 404" in page.locator("[data-test-result]").inner_text()
    assert page.evaluate("window.__same") is True
    screenshot("study-models")


def test_it_rates_the_responses_of_imported_prompts(live_server, page, screenshot):
    from feedback.models import Prompt, text_hash

    study = StudyFactory(name="Rate answers", slug="rate-answers", profile_fields=[], pairs_per_annotator=2,
                         overlap_target=1)
    conv.study_set_design(study=study, kind="ratings")
    for q, answers in (("How do I boil an egg?", ["Simmer it for **9 minutes**.", "Microwave it.", "Ask a chef."]),
                       ("Name a prime number.", ["7", "Nine.", "2 is the only even prime.", "Pi."])):
        prompt = Prompt.objects.create(study=study, text=q)
        for a in answers:
            Candidate.objects.create(prompt=prompt, text=a, model_name="m", text_hash=text_hash(a))
    page.goto(f"{live_server.url}/s/{study.slug}/join")
    page.get_by_role("button", name="Start").click()
    page.get_by_role("button", name="I agree").click()
    page.wait_for_url(re.compile(r"/rate$"))
    for position in (1, 2):
        page.get_by_role("heading", name=f"Prompt {position} of 2").wait_for()  # the swapped-in prompt
        page.wait_for_selector("form.talk-judge[data-ready]", state="attached")
        sliders = page.locator("form.talk-judge input[type=range]")
        for i in range(sliders.count()):
            sliders.nth(i).fill(str(20 + 30 * i))
        if position == 1:
            screenshot("rate-imported")
        page.get_by_role("button", name="Submit ratings").click()
    page.wait_for_url(re.compile(r"/done$"))
    assert Rating.objects.filter(annotator__study=study).count() == 7
    assert Judgment.objects.filter(annotator__study=study, source="rating").count() == 3 + 6
