"""feedback.serializers: the annotation loop's hand-built bodies are exactly what their serializers return."""

from __future__ import annotations

import pytest

from feedback import services
from feedback.models import Prompt
from feedback.serializers import (
    JudgmentCreateSerializer,
    JudgmentSerializer,
    NextPairSerializer,
    judgment_body,
    judgment_create_data,
    next_pair_body,
)


def _serialized_next_pair(assignment, done: int, total: int) -> dict:
    pair = assignment.pair
    return NextPairSerializer(
        {
            "pair_id": pair.pk,
            "assignment_id": assignment.pk,
            "context": pair.prompt.context,
            "prompt": pair.prompt.text,
            "a": {"id": pair.candidate_a_id, "text": pair.candidate_a.text},
            "b": {"id": pair.candidate_b_id, "text": pair.candidate_b.text},
            "shown_order": assignment.shown_order,
            "progress": {"done": done, "total": total},
        }
    ).data


@pytest.mark.django_db
def test_it_builds_the_next_pair_body_as_its_serializer_does(study, annotator):
    Prompt.objects.filter(study=study).update(
        context=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello!"}]
    )
    assignment = services.assignment_next(annotator=annotator)
    assert assignment is not None
    body = next_pair_body(assignment=assignment, done=2, total=5)
    assert body == _serialized_next_pair(assignment, 2, 5)
    assert body["context"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answers",
    [
        {"choice": "a", "strength": 70, "rationale": " clearer ", "time_ms": 4200},
        {"choice": "tie", "strength": 40},  # a tie stores no strength: None in the body
        {"choice": "b"},  # no strength, no time
    ],
)
def test_it_builds_the_judgment_body_as_its_serializer_does(study, annotator, answers):
    assignment = services.assignment_next(annotator=annotator)
    assert assignment is not None
    judgment, created = services.judgment_create(
        annotator=annotator, pair=assignment.pair, client_key="k1", **answers
    )
    assert created
    assert judgment_body(judgment) == JudgmentSerializer(judgment).data
    judgment.refresh_from_db()  # as read back from the database (a replayed submission)
    assert judgment_body(judgment) == JudgmentSerializer(judgment).data


_VALID = {"pair_id": 7, "choice": "a", "client_key": "k1"}


@pytest.mark.parametrize("body", [
    _VALID,
    {**_VALID, "strength": 1, "time_ms": 0, "rationale": "  clearer  ", "client_key": " k "},
    {**_VALID, "choice": "tie", "strength": 100, "time_ms": 86_400_000, "dimensions": {"safety": "b"}},
    {**_VALID, "choice": "bad", "strength": None, "time_ms": None, "rationale": "", "dimensions": {}},
    {**_VALID, "rationale": "x" * 5000, "client_key": "k" * 64, "extra": "ignored"},
    {**_VALID, "rationale": "  " + "x" * 5000 + "  "},
])
def test_it_parses_a_plainly_valid_judgment_exactly_as_the_serializer(body):
    serializer = JudgmentCreateSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert judgment_create_data(body) == dict(serializer.validated_data)


@pytest.mark.parametrize("change", [
    {"pair_id": "7"}, {"pair_id": 7.0}, {"pair_id": True}, {"pair_id": 0}, {"pair_id": None},
    {"choice": "A"}, {"choice": ""}, {"choice": None}, {"choice": 1},
    {"strength": 0}, {"strength": 101}, {"strength": "50"}, {"strength": True}, {"strength": 50.0},
    {"time_ms": -1}, {"time_ms": 86_400_001}, {"time_ms": "9"},
    {"rationale": None}, {"rationale": "x" * 5001}, {"rationale": "a\x00b"}, {"rationale": "a\ud800b"},
    {"rationale": 5},
    {"client_key": ""}, {"client_key": "   "}, {"client_key": "k" * 65}, {"client_key": 5}, {"client_key": None},
    {"dimensions": None}, {"dimensions": {"safety": "x"}}, {"dimensions": {"safety": ""}}, {"dimensions": []},
    {"dimensions": {"safety": None}},
])
def test_it_leaves_every_other_body_to_the_serializer(change):
    """Anything not plainly valid (other types the serializer may coerce, or errors) goes to the serializer."""
    assert judgment_create_data({**_VALID, **change}) is None
    assert judgment_create_data([_VALID]) is None
    missing = dict(_VALID)
    del missing["client_key"]
    assert judgment_create_data(missing) is None
