"""An annotator a researcher excluded (feedback.services.annotator_set_excluded) trains nothing."""

from __future__ import annotations

import pytest

from feedback import services as feedback_services
from feedback.models import Judgment
from tests.training.conftest import label_all
from training import services


@pytest.mark.django_db
def test_excluded_annotators_are_left_out_of_training(style_study, researcher):
    annotators = label_all(style_study, n_annotators=6, per_annotator=10)
    for ann in annotators[:2]:
        feedback_services.annotator_set_excluded(annotator=ann, excluded=True, by=researcher, reason="fast")
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    assert version.status == "active", version.error
    kept = Judgment.objects.filter(pair__study=style_study, annotator__in=annotators[2:]).exclude(choice="tie")
    assert version.n_train + version.n_heldout == kept.count() == 40
    # included again: the next run learns from everyone
    for ann in annotators[:2]:
        feedback_services.annotator_set_excluded(annotator=ann, excluded=False, by=researcher)
    again = services.model_version_request(study=style_study, kind="bt")
    again.refresh_from_db()
    assert again.n_train + again.n_heldout == 60
