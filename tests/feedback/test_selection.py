"""feedback.selection: RandomSelector.rank's compiled-once scans give exactly what the ORM querysets give."""

from __future__ import annotations

import pytest

from feedback import compiled, selection, services
from feedback.models import Annotator, Pair
from tests.factories import AnnotatorFactory, make_study_with_pairs

pytestmark = pytest.mark.django_db


def _orm_rank(annotator: Annotator, start: int, limit: int) -> list[int]:
    after, before = (list(qs) for qs in selection._rank_querysets(annotator, start, limit))
    return [pair_id for _, pair_id in sorted(after + before, key=lambda row: row[0])[:limit]]


@pytest.fixture
def ranked_study():
    study = make_study_with_pairs(12, overlap_target=2)
    ids = sorted(Pair.objects.filter(study=study).values_list("id", flat=True))
    Pair.objects.filter(id__in=ids[:3]).update(n_assigned=1)
    Pair.objects.filter(id=ids[3]).update(n_assigned=2)  # full: never ranked
    Pair.objects.filter(id=ids[4]).update(gold_choice="a")  # gold: scheduled apart, never ranked
    annotator = AnnotatorFactory(study=study)
    services._claim(annotator=annotator, pair_id=ids[5], shown_order="ab", selector="random", target=2)
    annotator = Annotator.objects.select_related("study").get(pk=annotator.pk)
    return annotator, ids


@pytest.mark.parametrize("limit", [3, 20])
def test_it_ranks_with_the_compiled_scans_exactly_as_with_the_orm(ranked_study, monkeypatch, limit):
    annotator, ids = ranked_study
    for start in [ids[0], ids[4], ids[7], ids[-1]]:
        monkeypatch.setattr(selection.random, "randint", lambda lo, hi, s=start: s)
        got = selection.RandomSelector().rank(annotator=annotator, limit=limit)
        assert got == _orm_rank(annotator, start, limit)
        assert not {ids[3], ids[4], ids[5]} & set(got)  # full, gold, and the annotator's own pair


def test_it_compiles_the_scans_once_with_every_varying_value_a_parameter():
    statements = selection._rank_statements("default", 20)
    assert statements is not None and len(statements) == 2
    again = selection._rank_statements("default", 20)
    assert again is not None and all(a is b for a, b in zip(statements, again, strict=True))
    for scan in statements:
        assert sorted(int(p) for p in scan.params if compiled.is_sentinel(p)) == sorted(
            compiled.SENTINELS[k] for k in ("study", "target", "annotator", "start"))


def test_it_falls_back_to_the_orm_when_the_scans_cannot_be_compiled(ranked_study, monkeypatch):
    annotator, ids = ranked_study
    monkeypatch.setattr(selection, "_rank_statements", lambda using, limit: None)
    monkeypatch.setattr(selection.random, "randint", lambda lo, hi: ids[6])
    assert selection.RandomSelector().rank(annotator=annotator, limit=20) == _orm_rank(annotator, ids[6], 20)


def test_it_ranks_in_two_statements(ranked_study, django_assert_num_queries):
    annotator, ids = ranked_study
    selection._id_bounds(annotator.study_id)
    with django_assert_num_queries(2):
        selection.RandomSelector().rank(annotator=annotator, limit=20)


def test_it_honours_a_replaced_eligibility_rule_after_compiling_the_scans(ranked_study, monkeypatch):
    annotator, ids = ranked_study
    monkeypatch.setattr(selection.random, "randint", lambda lo, hi: ids[0])
    assert ids[6] in selection.RandomSelector().rank(annotator=annotator, limit=20)  # compiled and cached
    real = selection.eligible_pairs
    monkeypatch.setattr(selection, "eligible_pairs", lambda a: real(a).exclude(id=ids[6]))
    assert ids[6] not in selection.RandomSelector().rank(annotator=annotator, limit=20)
