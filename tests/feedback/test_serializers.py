"""feedback.serializers: the annotation loop's hand-built bodies are exactly what their serializers return."""

from __future__ import annotations

import pytest

from feedback import services
from feedback.models import Prompt
from feedback.serializers import JudgmentSerializer, NextPairSerializer, judgment_body, next_pair_body


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
