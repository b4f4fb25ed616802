"""Live conversations, N-way ratings, both-bad, per-dimension choices and quality controls (issue 12)."""

from __future__ import annotations

import io
import json
import random

import pyarrow.parquet as pq
import pytest

from feedback import conversations as conv
from feedback import exports, services
from feedback.llm_client import ChatResult
from feedback.models import (
    Assignment,
    Candidate,
    ConversationTurn,
    Judgment,
    ModelEndpoint,
    Pair,
    Prompt,
    Rating,
    text_hash,
)
from feedback.services import ServiceError
from tests.factories import AnnotatorFactory, StudyFactory, make_study_with_pairs

pytestmark = pytest.mark.django_db


def _conversation_study(llm_server, *, first_turn_answers: int = 2, turns: int = 2, attributes=None):
    study = StudyFactory(kind="conversation", conversation_turns=turns, first_turn_answers=first_turn_answers,
                         attributes=attributes or [])
    for model in ("tiny-a", "tiny-b", "tiny-c", "tiny-d"):
        conv.endpoint_create(study=study, name=f"Model {model[-1].upper()}", base_url=llm_server.base_url,
                             model_id=model, params={"max_tokens": 6, "temperature": 0.9}, api_key="sk-top-secret")
    return study


def _turn(conversation, text="Hello?"):
    endpoints = conv.turn_plan(conversation, rng=random.Random(0))
    messages = [*conv.conversation_messages(conversation), {"role": "user", "content": text}]
    answers = conv.generate_blocking(endpoints, messages)
    return conv.turn_store(conversation=conversation, user_text=text, answers=answers, client_key=f"k-{text}")


def test_it_runs_a_two_turn_conversation_into_prompts_candidates_pairs_and_judgments(llm_server):
    study = _conversation_study(llm_server, attributes=["safety"])
    annotator = AnnotatorFactory(study=study)
    conversation = conv.conversation_open(annotator=annotator)
    turn1 = _turn(conversation, "What is a river?")
    shown = conv.turn_candidates(turn1)
    assert len(shown) == 2 and len({c.model_name for c in shown}) == 2
    meta = shown[0].metadata
    assert meta["source"] == "live" and meta["params"] == {"max_tokens": 6, "temperature": 0.9}
    assert meta["latency_ms"] >= 0 and meta["model_id"].startswith("tiny-")
    pair = conv.turn_pair(turn1)
    assert Assignment.objects.get(annotator=annotator, pair=pair).completed_at is None

    conv.turn_choose(turn=turn1, annotator=annotator, screen_choice="right", client_key="j1", strength=70,
                     dimensions={"safety": "left"})
    judgment = Judgment.objects.get(annotator=annotator, client_key="j1")
    right = shown[1]
    assert judgment.choice == ("a" if pair.candidate_a_id == right.pk else "b")
    assert judgment.dimensions == {"safety": "a" if pair.candidate_a_id == shown[0].pk else "b"}
    turn1.refresh_from_db()
    assert turn1.chosen_id == right.pk

    # The chosen answer continues the conversation: turn 2's prompt carries it as context.
    turn2 = _turn(conversation, "And a lake?")
    assert turn2.prompt.context == [{"role": "user", "content": "What is a river?"},
                                    {"role": "assistant", "content": right.text}]
    conv.turn_choose(turn=turn2, annotator=annotator, screen_choice="bad", client_key="j2")
    bad = Judgment.objects.get(annotator=annotator, client_key="j2")
    assert bad.choice == "bad" and bad.strength is None
    conversation.refresh_from_db()
    annotator.refresh_from_db()
    assert conversation.completed_at is not None and annotator.completed_at is not None
    assert conv.conversation_open(annotator=annotator) is None


def test_first_turn_with_four_answers_is_rated_and_turned_into_pairs(llm_server):
    study = _conversation_study(llm_server, first_turn_answers=4)
    annotator = AnnotatorFactory(study=study)
    conversation = conv.conversation_open(annotator=annotator)
    turn = _turn(conversation)
    shown = conv.turn_candidates(turn)
    assert len(shown) == 4 and Pair.objects.filter(prompt=turn.prompt).count() == 0
    conv.turn_rate(turn=turn, annotator=annotator, scores=[80, 20, 80, 55], client_key="r1")
    assert list(Rating.objects.filter(annotator=annotator).values_list("score", flat=True)) == [80, 20, 80, 55]
    judgments = Judgment.objects.filter(annotator=annotator).select_related("pair")
    # 6 pairs of 4 answers, minus the one tie (80 vs 80).
    assert judgments.count() == 5
    score = {c.pk: s for c, s in zip(shown, [80, 20, 80, 55], strict=True)}
    for j in judgments:
        winner = j.pair.candidate_a_id if j.choice == "a" else j.pair.candidate_b_id
        loser = j.pair.candidate_b_id if j.choice == "a" else j.pair.candidate_a_id
        assert score[winner] > score[loser] and j.strength == score[winner] - score[loser]
        assert j.source == "rating"
    turn.refresh_from_db()
    assert turn.chosen_id == shown[0].pk  # highest rating, first among equals
    rows = list(exports.judgment_rows(study))
    assert {r["source"] for r in rows} == {"rating"}
    assert all(r["chosen_rating"] > r["rejected_rating"] for r in rows)
    # Later turns are A/B of two answers.
    assert len(conv.turn_candidates(_turn(conversation, "Next?"))) == 2


def test_ratings_must_be_complete_and_in_range(llm_server):
    study = _conversation_study(llm_server, first_turn_answers=3)
    annotator = AnnotatorFactory(study=study)
    turn = _turn(conv.conversation_open(annotator=annotator))
    for scores in ([50, 50], [0, 50, 50], [50, 50, 101]):
        with pytest.raises(ServiceError):
            conv.turn_rate(turn=turn, annotator=annotator, scores=scores, client_key="x")
    assert not Rating.objects.exists() and not Judgment.objects.exists()


def test_a_turn_is_stored_once_and_never_half(llm_server):
    study = _conversation_study(llm_server)
    annotator = AnnotatorFactory(study=study)
    conversation = conv.conversation_open(annotator=annotator)
    endpoint = ModelEndpoint.objects.filter(study=study).first()
    answers = [conv.GeneratedAnswer(endpoint, ChatResult("one", 5)), conv.GeneratedAnswer(endpoint, ChatResult("two", 6))]
    turn = conv.turn_store(conversation=conversation, user_text="hi", answers=answers, client_key="same")
    again = conv.turn_store(conversation=conversation, user_text="hi", answers=answers, client_key="same")
    assert again.pk == turn.pk and ConversationTurn.objects.count() == 1
    # A second message while the first turn waits for its judgment stores nothing.
    with pytest.raises(ServiceError, match="Judge the answers"):
        conv.turn_store(conversation=conversation, user_text="more", answers=answers, client_key="other")
    assert Prompt.objects.filter(study=study).count() == 1 and Candidate.objects.count() == 2


def test_a_study_without_models_says_so(llm_server):
    study = StudyFactory(kind="conversation")
    conversation = conv.conversation_open(annotator=AnnotatorFactory(study=study))
    with pytest.raises(ServiceError, match="no model"):
        conv.turn_plan(conversation)


def test_an_answer_that_names_a_model_is_flagged():
    endpoint = ModelEndpoint(name="Aster", model_id="org/aster-7b-chat")
    assert conv.names_model("I am Aster, nice to meet you", endpoint)
    assert conv.names_model("As an AI developed by OpenAI", endpoint)
    assert conv.names_model("model aster-7b-chat here", endpoint)
    assert not conv.names_model("Rivers flow to the sea. Disaster averted.", endpoint)


def test_endpoint_params_are_validated():
    assert conv.clean_endpoint_params({"temperature": 1, "max_tokens": 10}) == {"temperature": 1.0, "max_tokens": 10}
    for bad in ({"temp": 1}, {"temperature": 5}, {"max_tokens": 1.5}, {"seed": True}, ["x"]):
        with pytest.raises(ServiceError):
            conv.clean_endpoint_params(bad)


def test_test_connection_reports_success_and_failure(llm_server):
    study = _conversation_study(llm_server)
    endpoint = ModelEndpoint.objects.filter(study=study).first()
    check = conv.endpoint_test(endpoint=endpoint)
    assert check.ok and "answered in" in check.message and check.sample
    endpoint.model_id = "missing"
    check = conv.endpoint_test(endpoint=endpoint)
    assert not check.ok and "HTTP 404" in check.message


# --- both bad and per-dimension choices on imported pairs ---------------------------------------------------


def test_both_bad_is_a_choice_without_strength_or_training_signal():
    study = make_study_with_pairs(2, attributes=["factuality", "safety"])
    annotator = AnnotatorFactory(study=study)
    assignment = services.assignment_next(annotator=annotator)
    judgment, _ = services.judgment_create(annotator=annotator, pair=assignment.pair, choice="bad", client_key="b1",
                                           strength=80, dimensions={"factuality": "a", "safety": "bad"})
    assert judgment.strength is None and judgment.chosen_side_shown == "bad"
    row = next(exports.judgment_rows(study))
    assert row["both_bad"] is True and row["tie"] is False and row["strength"] is None
    assert row["dim_factuality"] == "chosen" and row["dim_safety"] == "bad"
    from training.services import _judgment_rows

    assert _judgment_rows(Judgment.objects.all()) == []
    with pytest.raises(ServiceError, match="unknown attributes"):
        services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a", client_key="b2",
                                 dimensions={"humour": "a"})


def test_dimension_columns_are_relative_to_the_chosen_response():
    study = make_study_with_pairs(1, attributes=["safety"])
    annotator = AnnotatorFactory(study=study)
    pair = services.assignment_next(annotator=annotator).pair
    services.judgment_create(annotator=annotator, pair=pair, choice="b", client_key="c", dimensions={"safety": "b"})
    row = next(exports.judgment_rows(study))
    assert row["chosen"] == pair.candidate_b.text and row["dim_safety"] == "chosen"
    names = exports.judgments_export(study).names
    assert "dim_safety" in names and "both_bad" in names and "chosen_generation" in names


def test_the_dashboard_leaves_both_bad_out_of_the_leaderboard():
    from training.dashboard import _leaderboard

    rows = [{"choice": c, "pair__candidate_a__model_name": "x", "pair__candidate_b__model_name": "y",
             "pair__gold_choice": ""} for c in ("a", "a", "bad", "bad", "bad")]
    board = {r["model"]: r for r in _leaderboard(rows)}
    assert board["x"]["battles"] == 2 and board["x"]["wins"] == 2


# --- quality controls ---------------------------------------------------------------------------------------


def _judge_all(annotator, choose=lambda a: "a", seed=0):
    n, rng = 0, random.Random(seed)
    while (a := services.assignment_next(annotator=annotator, rng=rng)) is not None:
        services.judgment_create(annotator=annotator, pair=a.pair, choice=choose(a), client_key=f"q{n}")
        n += 1
    return n


def test_repeats_are_scheduled_sides_swapped_and_feed_the_consistency_flag():
    study = make_study_with_pairs(12, pairs_per_annotator=12, overlap_target=5, repeat_rate=0.5)
    annotator = AnnotatorFactory(study=study)
    # A contrarian annotator: picks whichever candidate is on the left, so every repeat flips.
    _judge_all(annotator, choose=lambda a: "a" if a.shown_order == "ab" else "b")
    repeats = Assignment.objects.filter(annotator=annotator, is_repeat=True)
    assert repeats.exists()
    for rep in repeats:
        original = Assignment.objects.get(annotator=annotator, pair=rep.pair, is_repeat=False)
        assert rep.shown_order != original.shown_order and rep.completed_at > original.completed_at
    from training.dashboard import study_dashboard

    quality = study_dashboard(study)["quality"][0]
    assert quality["repeats"] == repeats.count() and quality["consistency"] == 0.0
    assert "inconsistent" in quality["flags"]
    assert {r["quality_check"] for r in exports.judgment_rows(study)} == {"", "repeat"}


def test_gold_pairs_are_scheduled_and_feed_the_attention_flag():
    study = make_study_with_pairs(8, pairs_per_annotator=8, gold_rate=0.5)
    services.study_add_attention_checks(study=study, n=4)
    assert Pair.objects.exclude(gold_choice="").count() == 4
    careless = AnnotatorFactory(study=study)
    _judge_all(careless, choose=lambda a: "b")  # always B: fails every gold pair (their answer is A)
    gold = Judgment.objects.filter(annotator=careless).exclude(pair__gold_choice="")
    assert gold.exists()
    from training.dashboard import study_dashboard

    quality = study_dashboard(study)["quality"][0]
    assert quality["gold"] == gold.count() and quality["gold_correct"] == 0.0
    assert "failed-attention" in quality["flags"]
    rows = [r for r in exports.judgment_rows(study) if r["quality_check"] == "gold"]
    assert rows and all(r["gold_correct"] is False for r in rows)
    # Gold pairs are never handed out by the selectors and stay out of training.
    from training.services import _judgment_rows

    assert all(j.pair.gold_choice == "" for j in _judgment_rows(Judgment.objects.all()))


def test_without_rates_no_quality_checks_are_scheduled():
    study = make_study_with_pairs(4, pairs_per_annotator=4)
    services.study_add_attention_checks(study=study, n=2)
    annotator = AnnotatorFactory(study=study)
    _judge_all(annotator)
    assert not Assignment.objects.filter(annotator=annotator, is_repeat=True).exists()
    assert not Assignment.objects.filter(annotator=annotator).exclude(pair__gold_choice="").exists()


def test_study_design_is_validated():
    study = StudyFactory()
    conv.study_set_design(study=study, kind="conversation", attributes=["Factuality", " safety ", ""],
                          first_turn_answers=4, seed_prompts=["Hi", " "], repeat_rate=0.1, gold_rate=0.1)
    study.refresh_from_db()
    assert study.attributes == ["factuality", "safety"] and study.seed_prompts == ["Hi"]
    for kwargs in ({"kind": "x"}, {"first_turn_answers": 5}, {"repeat_rate": 0.4, "gold_rate": 0.4},
                   {"attributes": ["no way!"]}):
        with pytest.raises(ServiceError):
            conv.study_set_design(study=study, **kwargs)


def test_raw_ratings_export_one_row_per_rated_response(llm_server):
    study = _conversation_study(llm_server, first_turn_answers=3)
    annotator = AnnotatorFactory(study=study)
    turn = _turn(conv.conversation_open(annotator=annotator), "Rate me")
    conv.turn_rate(turn=turn, annotator=annotator, scores=[50, 50, 50], client_key="r")
    # All equal: no derived pairs, but the ratings themselves are exported.
    assert not Judgment.objects.exists()
    export = exports.ratings_export(study)
    rows = list(export.rows)
    assert [r["rating"] for r in rows] == [50, 50, 50] and [r["position"] for r in rows] == [1, 2, 3]
    assert all(r["n_responses"] == 3 and r["prompt"] == "Rate me" for r in rows)
    assert all(json.loads(r["generation"])["endpoint"] == r["model"] for r in rows)
    sink = io.BytesIO()
    exports.write_parquet(exports.ratings_export(study), sink)
    assert pq.read_table(io.BytesIO(sink.getvalue())).num_rows == 3


# --- "ratings" studies: imported prompts with 3 or more responses ------------------------------------------


def _ratings_study(n_prompts=3, n_responses=4, **kwargs):
    study = StudyFactory(**{"kind": "ratings", "overlap_target": 2, "pairs_per_annotator": 2, **kwargs})
    for p in range(n_prompts):
        prompt = Prompt.objects.create(study=study, text=f"Question {p}?")
        for r in range(n_responses):
            text = f"Answer {p}.{r}"
            Candidate.objects.create(prompt=prompt, text=text, model_name=f"M{r}", text_hash=text_hash(text))
    short = Prompt.objects.create(study=study, text="Only two answers")  # never shown: fewer than 3
    for r in range(2):
        Candidate.objects.create(prompt=short, text=f"two {r}", text_hash=text_hash(f"two {r}"))
    return study


def test_a_ratings_study_hands_out_prompts_up_to_the_overlap_and_derives_pairs():
    study = _ratings_study()
    annotators = [AnnotatorFactory(study=study) for _ in range(3)]
    seen = []
    for annotator in annotators:
        for k in range(2):
            task = conv.rating_task_next(annotator=annotator, rng=random.Random(k))
            assert task is not None and task.prompt.text != "Only two answers" and len(task.shown) == 4
            assert conv.rating_task_next(annotator=annotator).pk == task.pk  # open until rated
            conv.rating_task_submit(task=task, annotator=annotator, scores=[90, 10, 10, 50], client_key=f"{k}")
            seen.append(task.prompt_id)
        annotator.refresh_from_db()
        assert annotator.completed_at is not None and conv.rating_task_next(annotator=annotator) is None
    # 3 prompts x overlap 2 = 6 slots, all used, none twice by the same annotator.
    assert sorted(seen.count(p) for p in set(seen)) == [2, 2, 2]
    assert Judgment.objects.filter(source="rating").count() == 6 * 5  # 6 pairs per task, one tie (10 = 10)
    rows = list(exports.rating_rows(study))
    assert len(rows) == 24 and {r["n_responses"] for r in rows} == {4}


def test_a_rated_task_cannot_be_rated_again():
    study = _ratings_study(n_prompts=1, pairs_per_annotator=1)
    annotator = AnnotatorFactory(study=study)
    task = conv.rating_task_next(annotator=annotator)
    conv.rating_task_submit(task=task, annotator=annotator, scores=[1, 2, 3, 4], client_key="once")
    task.refresh_from_db()
    assert len(conv.rating_task_submit(task=task, annotator=annotator, scores=[4, 3, 2, 1], client_key="once")) == 6
    with pytest.raises(ServiceError, match="already rated"):
        conv.rating_task_submit(task=task, annotator=annotator, scores=[4, 3, 2, 1], client_key="twice")
    assert list(Rating.objects.values_list("score", flat=True)) == [1, 2, 3, 4]
