from __future__ import annotations

import itertools
import random

import pytest

from feedback import services
from feedback.models import Judgment
from tests.factories import AnnotatorFactory, StudyFactory


def _responses(i: int) -> list[dict]:
    # Two visible styles: short & plain vs long & elaborate, so tastes can differ between annotators.
    topic = ["tea", "running", "budgets", "sleep", "chess", "gardens", "bread", "trains", "rivers", "music"][i % 10]
    return [
        {"text": f"Short answer about {topic}.", "model": "Aster-7B"},
        {
            "text": f"A long, detailed, careful answer about {topic} with many caveats, examples and a summary "
            f"covering history, practice and pitfalls of {topic} in depth.",
            "model": "Bramble-13B",
        },
        {"text": f"Haha, {topic}! Here's a fun take on {topic} with a joke.", "model": "Cobalt-Chat"},
    ]


@pytest.fixture
def style_study(db, researcher, settings):
    """20 prompts × 3 responses = 60 pairs, imported through the real service."""
    import json

    settings.CHORUS_EMBED_ON_IMPORT = True
    study = StudyFactory(created_by=researcher, overlap_target=10, pairs_per_annotator=60, model_kind="vpl")
    lines = [json.dumps({"prompt": f"Tell me about topic {i}", "responses": _responses(i)}) for i in range(20)]
    services.study_import(study=study, data="\n".join(lines).encode(), filename="s.jsonl")
    return study


def likes_long(annotator_index: int) -> bool:
    return annotator_index % 2 == 0


def label_all(study, n_annotators: int = 6, per_annotator: int = 20, seed: int = 0, taste=None):
    """Simulated annotators with opposite tastes label through the real services (``taste(k)``: does
    annotator k like long answers; default ``likes_long``, alternating)."""
    taste = taste or likes_long
    rng = random.Random(seed)
    annotators = []
    for k in range(n_annotators):
        gender = "female" if taste(k) else "male"
        ann = AnnotatorFactory(study=study, profile={"gender": gender})
        annotators.append(ann)
        keys = itertools.count()
        for _ in range(per_annotator):
            asg = services.assignment_next(annotator=ann, rng=rng)
            if asg is None:
                break
            a, b = asg.pair.candidate_a, asg.pair.candidate_b
            a_long = len(a.text) > len(b.text)
            choice = "a" if a_long == taste(k) else "b"
            services.judgment_create(annotator=ann, pair=asg.pair, choice=choice, client_key=f"k{next(keys)}")
    return annotators


def n_judgments(study) -> int:
    return Judgment.objects.filter(pair__study=study).count()


@pytest.fixture(autouse=True)
def run_on_commit_immediately(monkeypatch):
    """pytest-django wraps each test in a transaction that never commits, so on_commit hooks would never
    run; here they run at once (same connection), which is what a commit would trigger in production."""
    from django.db import transaction

    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
