from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone

from feedback import services
from feedback.models import Annotator, Assignment, Candidate, Judgment, Pair, Prompt, Study
from feedback.profile_schema import ALL_FIELD_NAMES
from feedback.services import ServiceError
from tests.factories import AnnotatorFactory, ResearcherFactory, StudyFactory, make_study_with_pairs

pytestmark = pytest.mark.django_db


# --- study_create ---------------------------------------------------------------------------------


def test_it_creates_a_study_with_its_creator_as_researcher():
    researcher = ResearcherFactory()
    study = services.study_create(
        name="Politeness", created_by=researcher, profile_fields=["gender", "age"], overlap_target=5
    )
    assert study.slug == "politeness"
    assert study.profile_fields == ["age", "gender"]  # in the schema's order
    assert study.overlap_target == 5
    assert study.status == Study.Status.ACTIVE
    assert list(study.researchers.all()) == [researcher]


def test_it_asks_every_profile_field_by_default_and_allows_no_owner():
    study = services.study_create(name="Ownerless", created_by=None)
    assert study.profile_fields == list(ALL_FIELD_NAMES)
    assert study.created_by is None
    assert study.researchers.count() == 0


def test_it_makes_slugs_unique():
    services.study_create(name="Same name?", created_by=None)
    second = services.study_create(name="Same name!", created_by=None)
    assert second.slug == "same-name-2"


@pytest.mark.parametrize(
    "kwargs,code,message",
    [
        ({"profile_fields": ["age", "shoe_size"]}, "invalid", "unknown profile fields: ['shoe_size']"),
        ({"overlap_target": 0}, "invalid", "overlap_target and pairs_per_annotator must be at least 1"),
        ({"pairs_per_annotator": 0}, "invalid", "overlap_target and pairs_per_annotator must be at least 1"),
        ({"name": "Taken"}, "conflict", "a study with this name already exists"),
    ],
)
def test_it_validates_new_studies(kwargs, code, message):
    StudyFactory(name="Taken")
    with pytest.raises(ServiceError) as info:
        services.study_create(**{"name": "New", "created_by": None, **kwargs})
    assert (info.value.code, str(info.value)) == (code, message)
    assert Study.objects.count() == 1


# --- study_import ---------------------------------------------------------------------------------


def _rows(n: int) -> bytes:
    return "\n".join(
        json.dumps(
            {"prompt": f"Q{i}?", "responses": [{"text": f"a{i}"}, {"text": f"b{i}"}, {"text": f"c{i}"}]}
        )
        for i in range(n)
    ).encode()


def test_it_imports_prompts_candidates_and_pairs():
    study = StudyFactory()
    result = services.study_import(study=study, data=_rows(4), filename="x.jsonl")
    assert result.as_dict() == {"format": "responses", "prompts": 4, "candidates": 12, "pairs": 12, "duplicates": 0}
    assert Pair.objects.filter(study=study).count() == 12
    pair = Pair.objects.filter(study=study).select_related("candidate_a", "candidate_b", "prompt").first()
    assert pair.candidate_a.prompt == pair.candidate_b.prompt == pair.prompt


def test_it_imports_nothing_when_the_database_fails_midway(monkeypatch):
    study = StudyFactory()

    def broken_bulk_create(*args, **kwargs):
        raise DatabaseError("disk full")

    # Prompts and candidates are written, then storing the pairs fails.
    monkeypatch.setattr(Pair.objects, "bulk_create", broken_bulk_create)
    with pytest.raises(DatabaseError):
        services.study_import(study=study, data=_rows(3), filename="x.jsonl")
    assert (Prompt.objects.count(), Candidate.objects.count(), Pair.objects.count()) == (0, 0, 0)


def test_it_runs_import_hooks_after_commit(django_capture_on_commit_callbacks, monkeypatch):
    study = StudyFactory()
    seen = []
    monkeypatch.setattr(services, "study_imported_hooks", [seen.append])
    with django_capture_on_commit_callbacks(execute=True):
        services.study_import(study=study, data=_rows(1))
    assert seen == [study]


def test_it_refreshes_the_planner_statistics_of_pairs_after_an_import(django_capture_on_commit_callbacks,
                                                                      monkeypatch):
    """A new study is unknown to PostgreSQL's statistics until an ANALYZE; the rank scan's plan needs them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(services, "study_imported_hooks", [])
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        services.study_import(study=StudyFactory(), data=_rows(2))
    assert queries[-1]["sql"] == 'ANALYZE "feedback_pair"'


# --- study_set_status ---------------------------------------------------------------------------


def test_it_sets_the_study_status():
    study = StudyFactory()
    services.study_set_status(study=study, status="paused")
    study.refresh_from_db()
    assert study.status == Study.Status.PAUSED
    with pytest.raises(ServiceError):
        services.study_set_status(study=study, status="archived")


# --- annotator_join -------------------------------------------------------------------------------


def test_it_resumes_an_annotator_by_external_id_only_with_its_resume_secret():
    study = make_study_with_pairs(2)
    first, created = services.annotator_join(study=study, external_id="PID-1")
    secret = services.annotator_resume_secret_issue(annotator=first)
    again, created_again = services.annotator_join(study=study, external_id=" PID-1 ", resume_secret=secret)
    other, _ = services.annotator_join(study=study, external_id="PID-2")
    assert (created, created_again) == (True, False)
    assert again == first
    assert other != first
    for wrong in ("", "x", secret[:-1]):
        with pytest.raises(services.ResumeRefused):
            services.annotator_join(study=study, external_id="PID-1", resume_secret=wrong)
    assert Annotator.objects.filter(study=study).count() == 2
    assert first.user.has_usable_password() is False
    assert hasattr(first, "profile")
    first.refresh_from_db()
    assert secret not in first.resume_secret_hash  # only the hash is stored


def test_it_keeps_the_same_external_id_apart_across_studies():
    a, _ = services.annotator_join(study=make_study_with_pairs(1), external_id="PID-1")
    b, created = services.annotator_join(study=make_study_with_pairs(1), external_id="PID-1")
    assert created and a != b and a.user != b.user


def test_it_always_creates_a_new_annotator_without_an_external_id():
    study = make_study_with_pairs(1)
    a, _ = services.annotator_join(study=study)
    b, _ = services.annotator_join(study=study)
    assert a != b


@pytest.mark.parametrize("status", ["paused", "closed", "draft"])
def test_it_refuses_joining_a_study_that_is_not_active(status):
    study = make_study_with_pairs(1, status=status)
    with pytest.raises(ServiceError) as info:
        services.annotator_join(study=study, external_id="PID-1")
    assert info.value.code == "forbidden"


# --- assignment_next ------------------------------------------------------------------------------


def _judge(annotator: Annotator, assignment: Assignment, key: str, choice: str = "a") -> Judgment:
    judgment, _ = services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice=choice, client_key=key
    )
    return judgment


def test_it_never_gives_a_pair_twice_to_one_annotator():
    study = make_study_with_pairs(6, overlap_target=10, pairs_per_annotator=100)
    annotator = AnnotatorFactory(study=study)
    seen = []
    rng = random.Random(0)
    while (assignment := services.assignment_next(annotator=annotator, rng=rng)) is not None:
        seen.append(assignment.pair_id)
        _judge(annotator, assignment, f"k{len(seen)}")
    assert len(seen) == 6
    assert len(set(seen)) == 6


def test_it_respects_the_overlap_target():
    study = make_study_with_pairs(2, overlap_target=2, pairs_per_annotator=5)
    got = []
    for i in range(5):
        annotator = AnnotatorFactory(study=study)
        while (assignment := services.assignment_next(annotator=annotator)) is not None:
            got.append(assignment.pair_id)
            _judge(annotator, assignment, f"k{i}-{len(got)}")
    # 2 pairs x overlap 2: exactly 4 assignments in all, 2 per pair.
    assert sorted(got) == sorted(list(study.pairs.values_list("id", flat=True)) * 2)
    assert {p.n_assigned for p in study.pairs.all()} == {2}
    assert {p.n_judgments for p in study.pairs.all()} == {2}
    assert Assignment.objects.count() == 4


def test_it_stops_at_the_annotators_quota():
    study = make_study_with_pairs(5, overlap_target=3, pairs_per_annotator=2)
    annotator = AnnotatorFactory(study=study)
    for i in range(2):
        _judge(annotator, services.assignment_next(annotator=annotator), f"k{i}")
    assert services.assignment_next(annotator=annotator) is None


def test_it_reuses_the_open_assignment():
    study = make_study_with_pairs(4)
    annotator = AnnotatorFactory(study=study)
    first = services.assignment_next(annotator=annotator)
    again = services.assignment_next(annotator=annotator)
    assert first.pk == again.pk
    assert Assignment.objects.filter(annotator=annotator).count() == 1
    assert Pair.objects.get(pk=first.pair_id).n_assigned == 1


def test_it_gives_nothing_when_the_study_is_not_active():
    study = make_study_with_pairs(2, status="paused")
    assert services.assignment_next(annotator=AnnotatorFactory(study=study)) is None


def test_it_releases_stale_assignments(settings):
    settings.CHORUS_ASSIGNMENT_TTL_SECONDS = 60
    study = make_study_with_pairs(1, overlap_target=1)
    slow, fast = AnnotatorFactory(study=study), AnnotatorFactory(study=study)
    held = services.assignment_next(annotator=slow)
    # Within the TTL the only slot is taken.
    assert services.assignment_next(annotator=fast) is None
    Assignment.objects.filter(pk=held.pk).update(assigned_at=timezone.now() - timedelta(seconds=61))
    taken_over = services.assignment_next(annotator=fast)
    assert taken_over is not None and taken_over.pair_id == held.pair_id
    held.refresh_from_db()
    assert held.released_at is not None
    assert Pair.objects.get(pk=held.pair_id).n_assigned == 1
    # The released assignment can no longer be judged, and the pair is not offered to its owner again.
    with pytest.raises(ServiceError):
        _judge(slow, held, "late")
    assert services.assignment_next(annotator=slow) is None


# --- judgment_create ------------------------------------------------------------------------------


@pytest.fixture
def assigned(db):
    study = make_study_with_pairs(3, pairs_per_annotator=2)
    annotator = AnnotatorFactory(study=study)
    return annotator, services.assignment_next(annotator=annotator)


def test_it_records_a_judgment_in_the_pairs_terms(assigned):
    annotator, assignment = assigned
    judgment, created = services.judgment_create(
        annotator=annotator,
        pair=assignment.pair,
        choice="b",
        client_key="k1",
        strength=80,
        rationale="  clearer  ",
        time_ms=4200,
    )
    assert created
    assert (judgment.choice, judgment.strength, judgment.rationale, judgment.time_ms) == (
        "b",
        80,
        "clearer",
        4200,
    )
    assert judgment.shown_order == assignment.shown_order
    assignment.refresh_from_db()
    assert assignment.completed_at is not None
    assert Pair.objects.get(pk=assignment.pair_id).n_judgments == 1


def test_it_is_idempotent_on_the_client_key(assigned):
    annotator, assignment = assigned
    first, created = services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice="a", client_key="k1", strength=70, rationale="ok"
    )
    retry, created_again = services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice="a", client_key="k1", strength=70, rationale=" ok ",
        time_ms=999,  # re-measured by the client: not part of the comparison
    )
    assert (created, created_again) == (True, False)
    assert retry.pk == first.pk
    assert Judgment.objects.count() == 1
    assert Pair.objects.get(pk=assignment.pair_id).n_judgments == 1


@pytest.mark.parametrize("change", [{"choice": "b"}, {"strength": 20}, {"rationale": "other"}, {"pair": "other"}])
def test_it_refuses_a_client_key_reused_for_a_different_judgment(assigned, change):
    annotator, assignment = assigned
    first, _ = services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice="a", client_key="k1", strength=70, rationale="ok"
    )
    kwargs = {"pair": assignment.pair, "choice": "a", "strength": 70, "rationale": "ok", **change}
    if change.get("pair") == "other":
        kwargs["pair"] = services.assignment_next(annotator=annotator).pair
    with pytest.raises(services.ClientKeyConflict) as info:
        services.judgment_create(annotator=annotator, client_key="k1", **kwargs)
    assert info.value.code == "conflict" and info.value.judgment.pk == first.pk
    assert Judgment.objects.count() == 1


def test_it_refuses_judgments_from_an_annotator_who_finished(assigned):
    annotator, assignment = assigned
    first, _ = services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a", client_key="k1")
    services.annotator_finish(annotator=annotator)
    nxt = services.assignment_next(annotator=annotator)
    pair = nxt.pair if nxt else assignment.pair
    with pytest.raises(ServiceError) as info:
        services.judgment_create(annotator=annotator, pair=pair, choice="a", client_key="k2")
    assert info.value.code == "forbidden" and "finished" in str(info.value)
    # A retry of a judgment made before finishing still gets its stored answer.
    assert services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a",
                                    client_key="k1")[0].pk == first.pk
    assert Judgment.objects.count() == 1


def test_it_rejects_a_pair_that_is_not_assigned(assigned):
    annotator, assignment = assigned
    other_pair = annotator.study.pairs.exclude(pk=assignment.pair_id).first()
    with pytest.raises(ServiceError, match="not assigned"):
        services.judgment_create(annotator=annotator, pair=other_pair, choice="a", client_key="k1")
    # Nor can the same pair be judged twice.
    _judge(annotator, assignment, "k2")
    with pytest.raises(ServiceError, match="not assigned"):
        services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a", client_key="k3")


def test_it_rejects_a_pair_of_another_study(assigned):
    annotator, _ = assigned
    foreign = make_study_with_pairs(1).pairs.get()
    with pytest.raises(ServiceError) as info:
        services.judgment_create(annotator=annotator, pair=foreign, choice="a", client_key="k1")
    assert info.value.code == "not_found"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"choice": "left"},
        {"choice": "A"},
        {"choice": "a", "strength": 0},
        {"choice": "a", "strength": 101},
        {"choice": "a", "strength": True},
        {"choice": "a", "strength": "50"},
        {"choice": "a", "time_ms": -1},
        {"choice": "a", "client_key": ""},
        {"choice": "a", "client_key": "x" * 65},
    ],
)
def test_it_rejects_bad_input(assigned, kwargs):
    annotator, assignment = assigned
    with pytest.raises(ServiceError):
        services.judgment_create(annotator=annotator, pair=assignment.pair, **{"client_key": "k1", **kwargs})
    assert Judgment.objects.count() == 0


def test_it_clears_the_strength_of_a_tie(assigned):
    annotator, assignment = assigned
    judgment, _ = services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice="tie", client_key="k1", strength=90
    )
    judgment.refresh_from_db()
    assert judgment.choice == "tie" and judgment.strength is None


def test_it_completes_the_annotator_at_the_quota(assigned):
    annotator, assignment = assigned
    _judge(annotator, assignment, "k1")
    annotator.refresh_from_db()
    assert annotator.completed_at is None
    _judge(annotator, services.assignment_next(annotator=annotator), "k2")
    annotator.refresh_from_db()
    assert annotator.completed_at is not None
    assert services.assignment_next(annotator=annotator) is None


def test_a_reused_client_key_with_an_invalid_body_is_a_conflict_not_a_silent_replay(assigned):
    annotator, assignment = assigned
    first, _ = services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a", client_key="k1")
    with pytest.raises(services.ClientKeyConflict) as info:
        services.judgment_create(annotator=annotator, pair=assignment.pair, choice="left", client_key="k1",
                                 strength=500)
    assert info.value.judgment.pk == first.pk


@pytest.mark.django_db(transaction=True)
def test_it_writes_a_judgment_in_one_statement_all_or_nothing_outside_a_transaction(monkeypatch):
    """The one-statement judgment (autocommit, as under ASGI): judgment, completed assignment, the pair's
    count and the annotator's finish together; a duplicate key undoes every part."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(services, "judgment_created_hooks", [])  # in autocommit they would run right away

    study = make_study_with_pairs(3, pairs_per_annotator=2)
    annotator = Annotator.objects.select_related("study").get(pk=AnnotatorFactory(study=study).pk)
    first = services.assignment_next(annotator=annotator)
    with CaptureQueriesContext(connection) as queries:
        judgment, created = services.judgment_create(
            annotator=annotator, pair=first.pair, choice="b", client_key="k1", strength=60, rationale=" why ",
            time_ms=900, dimensions=None,
        )
    assert created and not judgment._state.adding
    assert len(queries) == 1, [q["sql"] for q in queries]
    stored = Judgment.objects.get(pk=judgment.pk)
    for field in ("annotator_id", "pair_id", "assignment_id", "choice", "shown_order", "strength", "rationale",
                  "time_ms", "client_key", "dimensions", "source", "created_at"):
        assert getattr(stored, field) == getattr(judgment, field), field
    assert (stored.assignment_id, stored.shown_order, stored.rationale) == (first.pk, first.shown_order, "why")
    assert Assignment.objects.get(pk=first.pk).completed_at == stored.created_at
    assert Pair.objects.get(pk=first.pair_id).n_judgments == 1
    assert Annotator.objects.get(pk=annotator.pk).completed_at is None  # 1 of 2

    second = services.assignment_next(annotator=annotator)
    with pytest.raises(services.ClientKeyConflict):  # k1 again, for another pair: nothing of it stays
        services.judgment_create(annotator=annotator, pair=second.pair, choice="a", client_key="k1")
    assert Assignment.objects.get(pk=second.pk).completed_at is None
    assert Pair.objects.get(pk=second.pair_id).n_judgments == 0
    assert Annotator.objects.get(pk=annotator.pk).completed_at is None

    services.judgment_create(annotator=annotator, pair=second.pair, choice="tie", client_key="k2", strength=40)
    assert Judgment.objects.get(client_key="k2").strength is None  # a tie has no strength
    assert Annotator.objects.get(pk=annotator.pk).completed_at is not None  # the quota is filled


@pytest.mark.django_db(transaction=True)
def test_it_records_one_judgment_when_two_requests_race_for_one_assignment():
    import threading

    from django.db import connections

    study = make_study_with_pairs(2, pairs_per_annotator=2)
    annotator = AnnotatorFactory(study=study)
    assignment = services.assignment_next(annotator=annotator)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def judge(key: str) -> None:
        me = Annotator.objects.select_related("study").get(pk=annotator.pk)
        barrier.wait()
        try:
            services.judgment_create(annotator=me, pair=assignment.pair, choice="a", client_key=key)
            outcomes.append("saved")
        except ServiceError as exc:
            outcomes.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=judge, args=(f"k{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["invalid", "invalid", "invalid", "saved"], outcomes
    assert Judgment.objects.count() == 1
    assert Pair.objects.get(pk=assignment.pair_id).n_judgments == 1


def _claim(annotator: Annotator, pair: Pair) -> Assignment | None:
    return services._claim(
        annotator=annotator, pair_id=pair.pk, shown_order="ab", selector="random", target=annotator.study.overlap_target
    )


@pytest.mark.django_db(transaction=True)
def test_it_claims_a_slot_both_or_neither_outside_a_transaction():
    """The one-statement claim (autocommit, as under ASGI): slot and assignment together, or neither."""
    study = make_study_with_pairs(1, overlap_target=1, pairs_per_annotator=5)
    pair = study.pairs.get()
    first, second = AnnotatorFactory(study=study), AnnotatorFactory(study=study)
    claimed = _claim(first, pair)
    assert claimed is not None and not claimed._state.adding
    stored = Assignment.objects.get(pk=claimed.pk)
    assert (stored.annotator_id, stored.pair_id, stored.shown_order, stored.selector, stored.is_repeat) == (
        first.pk, pair.pk, "ab", "random", False
    )
    assert stored.assigned_at == claimed.assigned_at and stored.completed_at is None and stored.released_at is None
    assert _claim(second, pair) is None  # full: no assignment, the counter untouched
    Pair.objects.filter(pk=pair.pk).update(n_assigned=0)
    assert _claim(first, pair) is None  # a duplicate (second tab): the UPDATE is undone with the INSERT
    pair.refresh_from_db()
    assert pair.n_assigned == 0
    assert Assignment.objects.filter(pair=pair).count() == 1


def test_it_keeps_the_callers_transaction_usable_after_a_duplicate_claim():
    study = make_study_with_pairs(1, overlap_target=3, pairs_per_annotator=5)
    pair = study.pairs.get()
    annotator = AnnotatorFactory(study=study)
    assert _claim(annotator, pair) is not None
    assert _claim(annotator, pair) is None  # in the test's transaction: a savepoint around the statement
    assert Pair.objects.get(pk=pair.pk).n_assigned == 1  # the transaction still works


def test_it_builds_the_one_statement_sql_once_per_vendor_not_per_connection():
    """Every ASGI request has a connection object of its own: the statements must not be rebuilt (or kept)
    per connection."""
    import threading

    from django.db import connections

    services._VENDOR_SQL.clear()
    seen: list[tuple[str | None, str | None]] = []

    def build() -> None:
        try:
            conn = connections["default"]
            seen.append((services._statement(services._judge_sql, conn), services._statement(services._claim_sql, conn)))
        finally:
            connections.close_all()

    for _ in range(3):
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
    assert len(seen) == 3 and len(set(seen)) == 1 and all(seen[0])
    assert len(services._VENDOR_SQL) == 2
