"""benchmarks/load_test.py's integrity count: lost, duplicated and over-booked judgments are found."""

from __future__ import annotations

import pytest

from feedback import services
from feedback.models import Judgment, Pair
from tests.benchmarks.conftest import load
from tests.factories import AnnotatorFactory, make_study_with_pairs

pytestmark = pytest.mark.django_db


def test_it_counts_what_was_stored_against_what_was_acknowledged():
    bench = load("load_test")
    study = make_study_with_pairs(4, overlap_target=2, pairs_per_annotator=4)
    annotator = AnnotatorFactory(study=study)
    ids = []
    for i in range(3):
        assignment = services.assignment_next(annotator=annotator)
        ids.append(services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a",
                                            client_key=f"k{i}")[0].pk)
    clean = bench.count_stored(study, set(ids))
    assert clean == {"acknowledged": 3, "stored": 3, "lost": 0, "stored_not_acknowledged": 0,
                     "duplicated": 0, "pairs_over_overlap": 0}
    # The client was told of one that is not there, and one stored was never acknowledged.
    assert bench.count_stored(study, {ids[0], ids[1], 10**9}) == {
        **clean, "lost": 1, "stored_not_acknowledged": 1}
    # A second judgment of the same pair by the same annotator, and a pair judged past its overlap.
    first = Judgment.objects.get(pk=ids[0])
    Judgment.objects.filter(pk=ids[1]).update(pair_id=first.pair_id)
    Pair.objects.filter(pk=first.pair_id).update(n_judgments=3)
    counted = bench.count_stored(study, set(ids))
    assert counted["duplicated"] == 1 and counted["pairs_over_overlap"] == 1
