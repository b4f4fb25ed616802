"""`manage.py seed_demo_conversation`: the demo's live-conversation study on the local dev model server."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from feedback import conversations as conv
from feedback.models import ModelEndpoint, Study
from tests.factories import AnnotatorFactory

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_it_seeds_a_conversation_study_idempotently(llm_server):
    out = run("seed_demo_conversation", "--llm-url", llm_server.base_url)
    assert "Created" in out and "/s/demo-talk/join" in out
    study = Study.objects.get(slug="demo-talk")
    assert study.is_conversation() and study.first_turn_answers == 3 and study.seed_prompts
    assert set(ModelEndpoint.objects.filter(study=study).values_list("model_id", flat=True)) == {
        "tiny-a", "tiny-b", "tiny-c"}
    assert "Found" in run("seed_demo_conversation", "--llm-url", llm_server.base_url)
    assert Study.objects.filter(slug="demo-talk").count() == 1 and ModelEndpoint.objects.count() == 3
    # Its models answer: a first turn of three answers, streamed or not, from the real server.
    conversation = conv.conversation_open(annotator=AnnotatorFactory(study=study))
    endpoints = conv.turn_plan(conversation)
    answers = conv.generate_blocking(endpoints, [{"role": "user", "content": "Hi"}])
    assert len(answers) == 3 and all(a.result.text for a in answers)


def test_a_new_llm_url_moves_the_endpoints(llm_server):
    run("seed_demo_conversation", "--llm-url", "http://127.0.0.1:1/v1")
    run("seed_demo_conversation", "--llm-url", llm_server.base_url)
    assert set(ModelEndpoint.objects.values_list("base_url", flat=True)) == {llm_server.base_url}
