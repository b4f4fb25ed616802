"""training/management/commands: seed_demo_labels (``make demo``) draws its people from personalization.synthetic."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from feedback.management.commands.seed_demo import DEMO_DATA
from feedback.models import Annotator, Judgment, Study
from training.models import ModelVersion


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
@pytest.mark.skipif(not DEMO_DATA.exists(), reason="feedback/demo/demo_study.jsonl is not there")
def test_it_labels_the_demo_study_with_simulated_annotators_once(tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    settings.CHORUS_FIT_EPOCHS = 2
    run("seed_demo")
    out = run("seed_demo_labels", "--annotators", "5", "--labels", "4", "--kind", "bt")
    study = Study.objects.get(slug="demo")
    annotators = Annotator.objects.filter(study=study).select_related("profile")
    assert sorted(a.external_id for a in annotators) == ["sim-careless"] + [f"sim-demo-{i}" for i in range(1, 5)]
    typed = [a for a in annotators if a.external_id != "sim-careless"]
    assert all(a.profile.data.get("gender") and len(a.profile.data["stated_prefs"]) == 8 for a in typed)
    assert Judgment.objects.filter(pair__study=study).count() == 5 * 4
    assert "5 simulated annotators made 20 judgments" in out
    assert ModelVersion.objects.filter(study=study).exclude(status=ModelVersion.Status.FAILED).exists()
    assert "nothing to do" in run("seed_demo_labels")  # idempotent
