"""feedback.compiled: hot-path reads compiled once give exactly what their ORM querysets give."""

from __future__ import annotations

import pytest

from feedback import compiled, services
from feedback.models import Assignment, Candidate, Pair
from tests.factories import AnnotatorFactory, make_study_with_pairs

pytestmark = pytest.mark.django_db

_CONTENT_FIELDS = {
    "pair": [f.attname for f in Pair._meta.concrete_fields],
    "prompt": [f.attname for f in Pair._meta.get_field("prompt").related_model._meta.concrete_fields],
    "candidate": [f.attname for f in Pair._meta.get_field("candidate_a").related_model._meta.concrete_fields],
}


def _same_pair(got: Pair, want: Pair) -> None:
    assert [getattr(got, f) for f in _CONTENT_FIELDS["pair"]] == [getattr(want, f) for f in _CONTENT_FIELDS["pair"]]
    for rel, kind in (("prompt", "prompt"), ("candidate_a", "candidate"), ("candidate_b", "candidate")):
        assert Pair._meta.get_field(rel).is_cached(got)  # loaded with the pair: no query when shown
        a, b = getattr(got, rel), getattr(want, rel)
        assert [getattr(a, f) for f in _CONTENT_FIELDS[kind]] == [getattr(b, f) for f in _CONTENT_FIELDS[kind]]
    assert not got._state.adding and got._state.db == "default"


def test_it_reads_a_pair_with_its_content_exactly_as_the_orm(django_assert_num_queries):
    study = make_study_with_pairs(3)
    pair = study.pairs.order_by("id")[1]
    Candidate.objects.filter(pk=pair.candidate_a_id).update(metadata={"source": "hh", "n": 2})
    want = services._pair_content_queryset({"id": pair.pk}).get()
    services._pair_with_content(pair.pk)  # compiled on first use
    with django_assert_num_queries(1):
        got = services._pair_with_content(pair.pk)
        _same_pair(got, want)
    assert got.candidate_a.metadata == {"source": "hh", "n": 2}  # the JSON column's converter ran
    with pytest.raises(Pair.DoesNotExist):
        services._pair_with_content(987654321)


def test_it_reads_the_open_assignment_and_progress_exactly_as_the_orm():
    study = make_study_with_pairs(4, pairs_per_annotator=4)
    annotator = AnnotatorFactory(study=study)
    assert services._annotator_progress(annotator) == (None, 0)  # no assignments: no row
    first = services.assignment_next(annotator=annotator)
    services.judgment_create(annotator=annotator, pair=first.pair, choice="a", client_key="k")
    second = services.assignment_next(annotator=annotator)
    assert services._annotator_progress(annotator) == (second.pk, 1)
    orm = Assignment.objects.filter(annotator=annotator).aggregate(
        open_id=services.Min("id", filter=services.Q(completed_at__isnull=True, released_at__isnull=True)),
        done=services.Count("id", filter=services.Q(completed_at__isnull=False)))
    assert services._annotator_progress(annotator) == (orm["open_id"], orm["done"])
    again, done = services.assignment_next_with_progress(annotator=annotator)
    assert (again.pk, done) == (second.pk, 1)
    want = services._open_assignment_queryset({"id": second.pk}).get()
    assert [getattr(again, f.attname) for f in Assignment._meta.concrete_fields] == [
        getattr(want, f.attname) for f in Assignment._meta.concrete_fields]
    _same_pair(again.pair, want.pair)


def test_it_refuses_to_compile_when_a_value_is_not_exactly_one_parameter():
    def build(s):
        return Pair.objects.filter(id=s["id"]) | Pair.objects.filter(prompt_id=s["id"])  # the value twice

    assert compiled.compile_once("test-twice", "default", build, ["id"]) is None
    assert compiled.compile_once("test-folded", "default", lambda s: Pair.objects.filter(id__in=[]), ["id"]) is None
    ok = compiled.compile_once("test-once", "default", lambda s: Pair.objects.filter(id=s["id"]), ["id"])
    assert ok is not None and ok.objects(id=987654321) == []
