"""Every write to the feedback domain goes through these keyword-only functions."""

from __future__ import annotations

import functools
import hashlib
import random
import secrets
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import IntegrityError, router, transaction
from django.db.models import Count, F, Func, Min, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.text import slugify

from feedback.compiled import compile_once
from feedback.importers import ImportPlan, ParsedPrompt, as_file, content_digest, iter_import, validate_import
from feedback.models import (
    Annotator,
    Assignment,
    Candidate,
    Judgment,
    Pair,
    Profile,
    Prompt,
    Study,
    text_hash,
)
from feedback.profile_schema import ALL_FIELD_NAMES, clean_profile
from feedback.selection import get_selector

User = get_user_model()

# Hooks other apps (training/) attach to; each runs after the judgment's transaction commits.
judgment_created_hooks: list[Callable[[Judgment], None]] = []
study_imported_hooks: list[Callable[[Study], None]] = []


class ServiceError(Exception):
    """A request the domain refuses; `code` maps to an HTTP status in views."""

    def __init__(self, message: str, *, code: str = "invalid"):
        super().__init__(message)
        self.code = code  # "invalid" (400) | "not_found" (404) | "forbidden" (403) | "conflict" (409)


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "study"
    slug, n = base, 2
    while Study.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


@transaction.atomic
def study_create(
    *,
    name: str,
    created_by: Any,
    instructions: str = "",
    consent_text: str = "",
    profile_fields: list[str] | None = None,
    overlap_target: int = 3,
    pairs_per_annotator: int = 10,
    completion_url: str = "",
    slug: str | None = None,
    status: str = Study.Status.ACTIVE,
    selector: str = "random",
    model_kind: str = "vpl",
    screenout_code: str = "",
    retrain_every_judgments: int | None = None,
    retrain_every_minutes: int | None = None,
) -> Study:
    _validate_settings(
        selector=selector, model_kind=model_kind,
        retrain_every_judgments=retrain_every_judgments, retrain_every_minutes=retrain_every_minutes,
    )
    fields = list(ALL_FIELD_NAMES) if profile_fields is None else profile_fields
    unknown = set(fields) - set(ALL_FIELD_NAMES)
    if unknown:
        raise ServiceError(f"unknown profile fields: {sorted(unknown)}")
    if Study.objects.filter(name=name).exists():
        raise ServiceError("a study with this name already exists", code="conflict")
    if overlap_target < 1 or pairs_per_annotator < 1:
        raise ServiceError("overlap_target and pairs_per_annotator must be at least 1")
    study = Study.objects.create(
        name=name,
        slug=slug or _unique_slug(name),
        instructions=instructions,
        consent_text=consent_text,
        profile_fields=[f for f in ALL_FIELD_NAMES if f in fields],
        overlap_target=overlap_target,
        pairs_per_annotator=pairs_per_annotator,
        completion_url=completion_url,
        created_by=created_by,
        status=status,
        selector=selector,
        model_kind=model_kind,
        screenout_code=screenout_code,
        retrain_every_judgments=retrain_every_judgments,
        retrain_every_minutes=retrain_every_minutes,
    )
    if created_by is not None:
        study.researchers.add(created_by)
    return study


def _validate_settings(
    *, selector: str, model_kind: str, retrain_every_judgments: int | None, retrain_every_minutes: int | None
) -> None:
    from feedback.models import MODEL_KIND_CHOICES
    from feedback.selection import SELECTORS

    if selector not in SELECTORS:
        raise ServiceError(f"unknown selector {selector!r}; choose one of {sorted(SELECTORS)}")
    if model_kind not in dict(MODEL_KIND_CHOICES):
        raise ServiceError(f"unknown model kind {model_kind!r}; choose one of {sorted(dict(MODEL_KIND_CHOICES))}")
    for value in (retrain_every_judgments, retrain_every_minutes):
        if value is not None and value < 0:
            raise ServiceError("a retrain rule is a number of judgments or minutes, 0 or more")


@transaction.atomic
def study_settings_update(
    *,
    study: Study,
    selector: str,
    model_kind: str,
    overlap_target: int,
    pairs_per_annotator: int,
    completion_url: str,
    screenout_code: str,
    retrain_every_judgments: int | None,
    retrain_every_minutes: int | None,
) -> Study:
    """The settings card: how pairs are picked and trained on, how much is collected, where workers go back.

    Lowering the overlap below pairs' claimed slots never un-assigns anyone: claims only check
    n_assigned < target, so those pairs simply get no further annotators.
    """
    _validate_settings(
        selector=selector, model_kind=model_kind,
        retrain_every_judgments=retrain_every_judgments, retrain_every_minutes=retrain_every_minutes,
    )
    if overlap_target < 1 or pairs_per_annotator < 1:
        raise ServiceError("overlap_target and pairs_per_annotator must be at least 1")
    changes = {
        "selector": selector, "model_kind": model_kind, "overlap_target": overlap_target,
        "pairs_per_annotator": pairs_per_annotator, "completion_url": completion_url,
        "screenout_code": screenout_code.strip(), "retrain_every_judgments": retrain_every_judgments,
        "retrain_every_minutes": retrain_every_minutes,
    }
    for key, value in changes.items():
        setattr(study, key, value)
    study.save(update_fields=list(changes))
    return study


@transaction.atomic
def annotator_set_excluded(*, annotator: Annotator, excluded: bool, by: Any, reason: str = "") -> Annotator:
    """Exclude an annotator's judgments from training and exports, or include them again (logged).

    Nothing is deleted: the judgments stay stored and count in the study's progress, so a decision can be
    reversed. A no-op (already in that state) writes no event.
    """
    from feedback.models import ExclusionEvent

    annotator = Annotator.objects.select_for_update().get(pk=annotator.pk)
    if annotator.is_excluded == excluded:
        return annotator
    reason = reason.strip()[:200]
    annotator.excluded_at = timezone.now() if excluded else None
    annotator.excluded_by = by if excluded else None
    annotator.exclusion_reason = reason if excluded else ""
    annotator.save(update_fields=["excluded_at", "excluded_by", "exclusion_reason"])
    ExclusionEvent.objects.create(annotator=annotator, excluded=excluded, reason=reason, by=by)
    return annotator


@dataclass
class ImportResult:
    format: str
    prompts: int
    candidates: int
    pairs: int
    duplicates: int = 0  # rows already in the study (or repeated in the file), imported on confirmation

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "prompts": self.prompts, "candidates": self.candidates, "pairs": self.pairs,
                "duplicates": self.duplicates}


class DuplicateImport(ServiceError):
    """Rows of the file are already in the study (a re-imported file) or repeat within it."""

    def __init__(self, *, lines: list[int], n_rows: int):
        self.lines = lines
        self.n_rows = n_rows
        shown = ", ".join(str(n) for n in lines[:10]) + (" …" if len(lines) > 10 else "")
        whole = " (the whole file: was it imported before?)" if len(lines) == n_rows else ""
        super().__init__(
            f"{len(lines)} of {n_rows} rows are already in this study or repeat in the file{whole}; "
            f"lines {shown}. Nothing was imported; confirm to import them again anyway.",
            code="conflict",
        )


def _duplicate_lines(study: Study, plan: ImportPlan) -> list[int]:
    seen: set[bytes] = set()
    lines: list[int] = []
    for i in range(0, len(plan.rows), 1000):
        chunk = plan.rows[i : i + 1000]
        stored = set(
            Prompt.objects.filter(study=study, content_hash__in=[d.hex() for _, d in chunk]).values_list(
                "content_hash", flat=True
            )
        )
        for line, digest in chunk:
            if digest in seen or digest.hex() in stored:
                lines.append(line)
            seen.add(digest)
    return lines


IMPORT_BATCH_ROWS = 500


def _store_batch(study: Study, parsed: list[ParsedPrompt]) -> tuple[int, int, int]:
    prompts = Prompt.objects.bulk_create(
        [Prompt(study=study, text=p.text, context=p.context, metadata=p.metadata,
                content_hash=content_digest(p).hex()) for p in parsed]
    )
    cands: list[Candidate] = []
    for prompt, p in zip(prompts, parsed, strict=True):
        cands += [
            Candidate(prompt=prompt, text=c.text, model_name=c.model_name, metadata=c.metadata, text_hash=text_hash(c.text))
            for c in p.candidates
        ]
    cands = Candidate.objects.bulk_create(cands)
    pairs: list[Pair] = []
    offset = 0
    for prompt, p in zip(prompts, parsed, strict=True):
        mine = cands[offset : offset + len(p.candidates)]
        offset += len(p.candidates)
        pairs += [
            Pair(study=study, prompt=prompt, candidate_a=mine[i], candidate_b=mine[j], reference_choice=ref)
            for i, j, ref in p.pairs
        ]
    Pair.objects.bulk_create(pairs, batch_size=1000)
    return len(prompts), len(cands), len(pairs)


def study_import(
    *, study: Study, data: bytes | IO[bytes], filename: str = "", allow_duplicates: bool = False
) -> ImportResult:
    """Validate the whole file, then store it in one transaction (raises ImportFileError, storing nothing).

    The file is read as a stream twice (validate, then store in batches), so memory stays flat however many
    rows it has. Rows already in the study, or repeated in the file, raise DuplicateImport unless
    `allow_duplicates` (the researcher confirmed).
    """
    fileobj = as_file(data)
    plan = validate_import(fileobj, filename)
    duplicates = _duplicate_lines(study, plan)
    if duplicates and not allow_duplicates:
        raise DuplicateImport(lines=duplicates, n_rows=len(plan.rows))
    totals = [0, 0, 0]
    with transaction.atomic():
        batch: list[ParsedPrompt] = []
        for parsed in iter_import(fileobj, plan):
            batch.append(parsed)
            if len(batch) >= IMPORT_BATCH_ROWS:
                totals = [t + n for t, n in zip(totals, _store_batch(study, batch), strict=True)]
                batch = []
        if batch:
            totals = [t + n for t, n in zip(totals, _store_batch(study, batch), strict=True)]
        for imported_hook in study_imported_hooks:
            transaction.on_commit(functools.partial(imported_hook, study))
        transaction.on_commit(_refresh_pair_statistics)
    return ImportResult(plan.fmt, totals[0], totals[1], totals[2], duplicates=len(duplicates))


def _refresh_pair_statistics() -> None:
    """ANALYZE the pairs table after an import (PostgreSQL). The planner's statistics know nothing of a study
    imported since the last autovacuum analyze (which waits for 10 % of the table to change), so it
    estimates one row for the new study and plans the rank scan (feedback.selection) as a bitmap scan plus
    a sort of every open pair: 5.4 ms of PostgreSQL per scan at 2,700 pairs, growing with the study,
    against 0.3 ms as the index scan it picks with fresh statistics (EXPLAIN ANALYZE, BENCHMARKS.md)."""
    connection = transaction.get_connection(router.db_for_write(Pair))
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Pair._meta.db_table)}")


def _username() -> str:
    return "annotator-" + uuid.uuid4().hex[:16]


class ResumeRefused(ServiceError):
    """A crowd id that has already joined, without proof that the caller is that participant."""

    def __init__(self) -> None:
        super().__init__(
            "this participant id has already joined this study; to continue, use the browser you started in "
            "or the personal resume link the researchers can send you",
            code="forbidden",
        )


@transaction.atomic
def annotator_join(*, study: Study, external_id: str = "", resume_secret: str = "") -> tuple[Annotator, bool]:
    """A crowdworker joins; returns (annotator, created).

    A crowd-platform id that has joined before resumes the same annotator only with that annotator's resume
    secret (kept in their own browser, or returned to API clients at the first join): a crowd id is known to
    the platform, shared in screenshots and often guessable, so on its own it proves nothing. Without the
    secret the join is refused (ResumeRefused) and nothing is created. Callers that already authenticated the
    annotator (their session or API token) resume without calling this.
    """
    if not study.is_open():
        raise ServiceError("this study is not accepting annotators", code="forbidden")
    external_id = (external_id or "").strip()
    if len(external_id) > 200:
        raise ServiceError("external_id must be at most 200 characters")
    if external_id:
        existing = Annotator.objects.filter(study=study, external_id=external_id).select_related("user").first()
        if existing:
            if existing.resume_secret_matches(resume_secret):
                return existing, False
            raise ResumeRefused()
    user = User.objects.create_user(username=_username())
    user.set_unusable_password()
    user.save(update_fields=["password"])
    try:
        with transaction.atomic():
            annotator = Annotator.objects.create(study=study, user=user, external_id=external_id)
    except IntegrityError:
        # Two requests joined with the same id at once: the other one won, and this one has no proof.
        user.delete()
        raise ResumeRefused() from None
    Profile.objects.create(annotator=annotator)
    return annotator, True


def annotator_resume_secret_issue(*, annotator: Annotator) -> str:
    """A new resume secret for the annotator (only its hash is stored); any earlier secret stops working."""
    secret = secrets.token_urlsafe(24)
    annotator.resume_secret_hash = hashlib.sha256(secret.encode()).hexdigest()
    annotator.save(update_fields=["resume_secret_hash"])
    return secret


RESUME_LINK_SALT = "chorus.resume-link"


def annotator_resume_link_token(*, annotator: Annotator) -> str:
    """A signed, expiring token for a per-participant resume link (researchers hand it out).

    It names the annotator and the first characters of their current resume-secret hash, so using the link
    (which issues a new secret) or issuing another secret revokes it: each link works once.
    """
    if not annotator.resume_secret_hash:
        annotator_resume_secret_issue(annotator=annotator)
    return signing.dumps({"a": annotator.pk, "h": annotator.resume_secret_hash[:16]}, salt=RESUME_LINK_SALT)


def annotator_from_resume_link(*, study: Study, token: str) -> Annotator:
    """The annotator a resume link names; ServiceError when it is forged, expired, used or for another study."""
    try:
        data = signing.loads(token, salt=RESUME_LINK_SALT, max_age=settings.CHORUS_RESUME_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired as exc:
        raise ServiceError("this resume link has expired; ask the researchers for a new one", code="forbidden") from exc
    except signing.BadSignature as exc:
        raise ServiceError("this resume link is not valid", code="forbidden") from exc
    annotator = Annotator.objects.select_related("study", "user").filter(pk=data.get("a"), study=study).first()
    if annotator is None or not annotator.resume_secret_hash.startswith(str(data.get("h")) or "-"):
        raise ServiceError("this resume link is not valid (or was used already)", code="forbidden")
    return annotator


def annotator_consent(*, annotator: Annotator) -> Annotator:
    if annotator.consented_at is None:
        annotator.consented_at = timezone.now()
        annotator.save(update_fields=["consented_at"])
    return annotator


@transaction.atomic
def profile_update(*, annotator: Annotator, data: dict[str, Any], complete: bool = True) -> Profile:
    """Replace the annotator's answers with `data` (validated against the study's fields)."""
    cleaned = clean_profile(data, allowed=annotator.study.profile_fields)
    profile, _ = Profile.objects.select_for_update().get_or_create(annotator=annotator)
    profile.data = cleaned
    profile.save(update_fields=["data", "updated_at"])
    if complete and annotator.profile_completed_at is None:
        annotator.profile_completed_at = timezone.now()
        annotator.save(update_fields=["profile_completed_at"])
    return profile


def _release_stale_assignments(study: Study) -> int:
    """Give slots of assignments nobody judged within the TTL back to the pool."""
    cutoff = timezone.now() - timedelta(seconds=settings.CHORUS_ASSIGNMENT_TTL_SECONDS)
    released = 0
    stale = Assignment.objects.filter(
        pair__study=study, completed_at__isnull=True, released_at__isnull=True, assigned_at__lt=cutoff
    ).exclude(selector="live").values_list("id", "pair_id")  # a live turn's pair belongs to its conversation
    for assignment_id, pair_id in stale:
        with transaction.atomic():
            # Conditional: only the process that flips released_at gives the slot back.
            if Assignment.objects.filter(id=assignment_id, released_at__isnull=True, completed_at__isnull=True).update(
                released_at=timezone.now()
            ):
                Pair.objects.filter(id=pair_id, n_assigned__gt=0).update(n_assigned=F("n_assigned") - 1)
                released += 1
    return released


def _judged_count(annotator: Annotator) -> QuerySet[Any, Any]:
    """SELECT COUNT(id) of the annotator's judged assignments, as a subquery (COUNT as a plain function: no
    GROUP BY, one row)."""
    return (
        Assignment.objects.filter(annotator_id=annotator.pk, completed_at__isnull=False)
        .order_by()
        .annotate(n=Func(F("id"), function="COUNT"))
        .values("n")
    )


def annotator_quota_left(annotator: Annotator) -> int:
    done = Assignment.objects.filter(annotator=annotator, completed_at__isnull=False).count()
    return max(annotator.study.pairs_per_annotator - done, 0)


_PAIR_CONTENT = ("prompt", "candidate_a", "candidate_b")


# The annotation loop's fixed-shape reads, compiled once per process (feedback.compiled): each is the
# queryset the ORM would run, for sentinel values.
def _progress_queryset(s: Mapping[str, int]) -> QuerySet[Any, Any]:
    """(open assignment id, judged count) of one annotator: one aggregate over their own assignments."""
    return (
        Assignment.objects.filter(annotator_id=s["annotator"]).order_by().values("annotator_id")
        .annotate(open_id=Min("id", filter=Q(completed_at__isnull=True, released_at__isnull=True)),
                  done=Count("id", filter=Q(completed_at__isnull=False)))
        .values_list("open_id", "done")
    )


def _open_assignment_queryset(s: Mapping[str, int]) -> QuerySet[Any, Any]:
    return Assignment.objects.select_related(*(f"pair__{f}" for f in _PAIR_CONTENT)).filter(id=s["id"])


def _pair_content_queryset(s: Mapping[str, int]) -> QuerySet[Any, Any]:
    return Pair.objects.select_related(*_PAIR_CONTENT).filter(id=s["id"])


def _read(name: str, build: Callable[[Mapping[str, int]], QuerySet[Any, Any]], model: type[Any],
          objects: bool, **values: int) -> list[Any]:
    """Run a hot-path read compiled once, or through the ORM where it cannot be compiled."""
    compiled = compile_once(name, router.db_for_read(model), build, list(values))
    if compiled is not None:
        return compiled.objects(**values) if objects else compiled.tuples(**values)
    return list(build(values))


def _annotator_progress(annotator: Annotator) -> tuple[int | None, int]:
    rows = _read("progress", _progress_queryset, Assignment, False, annotator=annotator.pk)
    return (rows[0][0], rows[0][1]) if rows else (None, 0)


def _pair_with_content(pair_id: int) -> Pair:
    """The pair with its prompt and both candidates (what the annotator is shown)."""
    found = _read("pair-content", _pair_content_queryset, Pair, True, id=pair_id)
    if not found:
        raise Pair.DoesNotExist(f"pair {pair_id}")
    return found[0]


class _SlotTaken(Exception):
    """The pair filled up between ranking and claiming: roll the claim's INSERT back."""


_VENDOR_SQL: dict[tuple[str, str], str | None] = {}


def _statement(build: Callable[[str, Callable[[str], str]], str | None], connection: Any) -> str | None:
    """``build``'s statement for this connection's database, built once per process and vendor. Not a
    functools.cache over the connection's quote_name: under ASGI every request has a connection object of
    its own, so such a cache missed on every call and kept every request's connection alive."""
    key = (build.__name__, connection.vendor)
    if key not in _VENDOR_SQL:
        _VENDOR_SQL[key] = build(connection.vendor, connection.ops.quote_name)
    return _VENDOR_SQL[key]


def _claim_sql(vendor: str, quote: Callable[[str], str]) -> str | None:
    """The claim as one statement (PostgreSQL): take the slot and insert the assignment, both or neither.

    A data-modifying CTE is one statement, so it is atomic on its own: a full pair (the conditional UPDATE
    returns no row) inserts nothing, and a duplicate (the unique constraint fires) aborts the UPDATE with
    it. Built once per process from the models' table and column names. None where unsupported.
    """
    if vendor != "postgresql":
        return None
    pair, asg = Pair._meta, Assignment._meta
    col = {f.name: quote(str(f.column)) for f in asg.concrete_fields}
    pair_id, n_assigned = quote(str(pair.pk.column)), quote(str(pair.get_field("n_assigned").column))
    names = ["annotator", "pair", "shown_order", "is_repeat", "selector", "assigned_at", "completed_at", "released_at"]
    if {f.name for f in asg.concrete_fields} != {*names, "id"}:
        return None  # the model grew a column this statement does not know: the ORM path fills it
    return (
        f"WITH slot AS (UPDATE {quote(pair.db_table)} SET {n_assigned} = {n_assigned} + 1 "
        f"WHERE {pair_id} = %s AND {n_assigned} < %s RETURNING {pair_id}) "
        f"INSERT INTO {quote(asg.db_table)} ({', '.join(col[n] for n in names)}) "
        f"SELECT %s, slot.{pair_id}, %s, false, %s, %s, NULL, NULL FROM slot RETURNING {col['id']}"
    )


def _claim(
    *, annotator: Annotator, pair_id: int, shown_order: str, selector: str, target: int
) -> Assignment | None:
    """Claim one slot of pair `pair_id`: the assignment row and the conditional UPDATE, both or neither.

    On PostgreSQL that is one statement (_claim_sql), with no BEGIN/COMMIT round trips around it; inside a
    caller's transaction it runs in a savepoint, so a duplicate does not break that transaction. Elsewhere
    the INSERT goes first so that one transaction needs no savepoint: a duplicate (this annotator already
    has the pair: a racing second tab) fails before anything is claimed, and a full pair (the conditional
    UPDATE matches no row) rolls the INSERT back.
    """
    connection = transaction.get_connection(router.db_for_write(Assignment))
    sql = _statement(_claim_sql, connection)
    if sql is not None:
        now = timezone.now()
        try:
            with transaction.atomic(using=connection.alias) if connection.in_atomic_block else nullcontext():
                with connection.cursor() as cursor:
                    cursor.execute(sql, [pair_id, target, annotator.pk, shown_order, selector, now])
                    row = cursor.fetchone()
        except IntegrityError:
            return None
        if row is None:
            return None  # the pair filled up between ranking and claiming
        assignment = Assignment(
            id=row[0], annotator=annotator, pair_id=pair_id, shown_order=shown_order, selector=selector,
            assigned_at=now,
        )
        assignment._state.adding = False
        assignment._state.db = connection.alias
        return assignment
    try:
        with transaction.atomic():
            assignment = Assignment.objects.create(
                annotator=annotator, pair_id=pair_id, shown_order=shown_order, selector=selector
            )
            slot = Pair.objects.filter(id=pair_id, n_assigned__lt=target)
            if not slot.update(n_assigned=F("n_assigned") + 1):
                raise _SlotTaken
    except (_SlotTaken, IntegrityError):
        return None
    return assignment


def _quality_check_next(*, annotator: Annotator, study: Study, rng: random.Random) -> Assignment | None:
    """Maybe a quality check instead of a new pair: a gold pair (probability gold_rate) or a repeat of a pair
    the annotator already judged, sides swapped (probability repeat_rate). None when neither is drawn or
    there is nothing to show (no gold pair left for them, nothing judged yet to repeat)."""
    if not (study.gold_rate or study.repeat_rate):
        return None
    draw = rng.random()
    if draw < study.gold_rate:
        gold = (
            Pair.objects.filter(study=study).exclude(gold_choice="")
            .exclude(assignments__annotator=annotator).values_list("id", flat=True)
        )
        ids = list(gold[:50])
        if ids:
            try:
                with transaction.atomic():
                    assignment = Assignment.objects.create(
                        annotator=annotator, pair_id=rng.choice(ids), selector="gold",
                        shown_order=rng.choice([Assignment.Order.AB, Assignment.Order.BA]),
                    )
            except IntegrityError:  # a second tab took it a moment ago
                return None
            assignment.pair = _pair_with_content(assignment.pair_id)
            return assignment
        return None
    if draw < study.gold_rate + study.repeat_rate:
        repeated = Assignment.objects.filter(annotator=annotator, is_repeat=True).values("pair_id")
        judged = list(
            Assignment.objects.filter(annotator=annotator, is_repeat=False, completed_at__isnull=False,
                                      pair__gold_choice="")
            .exclude(pair_id__in=repeated)
            .order_by("-completed_at")
            .values_list("pair_id", "shown_order")[:50]
        )
        # Not the pair they just judged: a repeat straight after the original measures memory, not taste.
        candidates = judged[1:] or []
        if candidates:
            pair_id, order = rng.choice(candidates)
            swapped = Assignment.Order.BA if order == Assignment.Order.AB else Assignment.Order.AB
            assignment = Assignment.objects.create(
                annotator=annotator, pair_id=pair_id, shown_order=swapped, is_repeat=True, selector="repeat"
            )
            assignment.pair = _pair_with_content(pair_id)
            return assignment
    return None


ATTENTION_WORDS = ("apple", "river", "candle", "violet", "harbor", "pebble", "meadow", "lantern", "copper", "maple")


@transaction.atomic
def study_add_attention_checks(*, study: Study, n: int = 3, rng: random.Random | None = None) -> list[Pair]:
    """Add n gold/attention pairs with a known answer (an instructed-response item: "choose the response
    that says <word>"). They are shown at the study's gold_rate and stay out of training and leaderboards."""
    if not 1 <= n <= 50:
        raise ServiceError("add between 1 and 50 attention checks at a time")
    rng = rng or random.Random()
    pairs = []
    for _ in range(n):
        right, wrong = rng.sample(ATTENTION_WORDS, 2)
        prompt = Prompt.objects.create(
            study=study,
            text=f"This is an attention check. Please choose the response that contains the word “{right}”.",
            metadata={"source": "attention_check"},
        )
        texts = (f"The word you are looking for is **{right}**.", f"The word you are looking for is **{wrong}**.")
        a, b = (
            Candidate.objects.create(prompt=prompt, text=t, text_hash=text_hash(t), metadata={"attention_check": True})
            for t in texts
        )
        pairs.append(Pair.objects.create(study=study, prompt=prompt, candidate_a=a, candidate_b=b, gold_choice="a"))
    return pairs


def assignment_next_with_progress(
    *, annotator: Annotator, rng: random.Random | None = None
) -> tuple[Assignment | None, int]:
    """assignment_next, plus how many pairs the annotator has judged (for the progress bar) at no extra query.

    The open assignment and the judged count come from one aggregate over the annotator's own assignments.
    """
    study = annotator.study
    open_id, done = _annotator_progress(annotator)
    if open_id is not None:
        found = _read("open-assignment", _open_assignment_queryset, Assignment, True, id=open_id)
        if found:
            return found[0], done
    if not study.is_open() or study.pairs_per_annotator <= done:
        return None, done
    rng = rng or random.Random()
    quality_check = _quality_check_next(annotator=annotator, study=study, rng=rng)
    if quality_check is not None:
        return quality_check, done
    selector = get_selector(study.selector)
    for attempt in range(2):
        for pair_id in selector.rank(annotator=annotator, limit=20):
            assignment = _claim(
                annotator=annotator,
                pair_id=pair_id,
                shown_order=rng.choice([Assignment.Order.AB, Assignment.Order.BA]),
                selector=selector.name,
                target=study.overlap_target,
            )
            if assignment is not None:
                # The claim's pair with what the caller shows (the INSERT did not load it).
                assignment.pair = _pair_with_content(pair_id)
                return assignment, done
        if attempt == 0 and not _release_stale_assignments(study):
            break
    return None, done


def assignment_next(*, annotator: Annotator, rng: random.Random | None = None) -> Assignment | None:
    """The annotator's open assignment, or a newly claimed one; None when nothing is left for them.

    Claiming is a conditional UPDATE (n_assigned < overlap target), so concurrent annotators can never
    push a pair past its target, on PostgreSQL or SQLite alike.
    """
    return assignment_next_with_progress(annotator=annotator, rng=rng)[0]


def _validate_judgment_fields(choice: str, strength: int | None, rationale: str, time_ms: int | None, client_key: str):
    if choice not in Judgment.Choice.values:
        raise ServiceError('choice must be "a", "b", "tie" or "bad" (both bad)')
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, int) or not 1 <= strength <= 100):
        raise ServiceError("strength must be an integer from 1 to 100")
    if time_ms is not None and (isinstance(time_ms, bool) or not isinstance(time_ms, int) or not 0 <= time_ms <= 86_400_000):
        raise ServiceError("time_ms must be a non-negative integer of milliseconds")
    if not isinstance(rationale, str) or len(rationale) > 5000:
        raise ServiceError("rationale must be text of at most 5000 characters")
    if not isinstance(client_key, str) or not 1 <= len(client_key) <= 64:
        raise ServiceError("client_key must be a string of 1 to 64 characters")


class ClientKeyConflict(ServiceError):
    """The client_key was used before for a different judgment; `judgment` is the stored one."""

    def __init__(self, judgment: Judgment):
        super().__init__(
            "this client_key was already used for a different judgment (another pair or other answers); "
            "use a new client_key for a new judgment",
            code="conflict",
        )
        self.judgment = judgment


def _replay(
    existing: Judgment, *, pair: Pair, choice: str, strength: int | None, rationale: Any, dimensions: Any
) -> Judgment:
    """The stored judgment for a retried submission; ClientKeyConflict when the retry says something else.

    time_ms is not compared: a client may measure it again when it resends.
    """
    if choice in Judgment.UNDIRECTED:
        strength = None
    answered = {k: v for k, v in dimensions.items() if v not in ("", None)} if isinstance(dimensions, dict) else {}
    same = (
        existing.pair_id == pair.pk
        and existing.choice == choice
        and existing.strength == strength
        and isinstance(rationale, str)
        and existing.rationale == rationale.strip()
        and (existing.dimensions or {}) == answered
    )
    if not same:
        raise ClientKeyConflict(existing)
    return existing


def clean_dimensions(study: Study, dimensions: dict[str, str] | None) -> dict[str, str]:
    """Per-dimension choices checked against the study's attributes (unanswered ones are left out)."""
    if not dimensions:
        return {}
    if not isinstance(dimensions, dict):
        raise ServiceError("dimensions must be an object of attribute -> choice")
    allowed = set(study.attributes or [])
    unknown = sorted(set(dimensions) - allowed)
    if unknown:
        raise ServiceError(f"unknown attributes {unknown}; this study asks about {sorted(allowed)}")
    cleaned = {}
    for name, value in dimensions.items():
        if value in ("", None):
            continue
        if value not in Judgment.Choice.values:
            raise ServiceError(f'the choice for {name!r} must be "a", "b", "tie" or "bad"')
        cleaned[name] = value
    return cleaned


def _judge_sql(vendor: str, quote: Callable[[str], str]) -> str | None:
    """The judgment write as one statement (PostgreSQL): lock the open assignment (with the judged count the
    quota check needs), insert the judgment, complete the assignment, count it on the pair, and finish the
    annotator whose quota this fills — all or nothing, in one round trip instead of five plus BEGIN/COMMIT.

    Data-modifying CTEs are one statement, so it is atomic on its own: no open assignment (the lock's SELECT
    returns no row; a racing second request re-checks ``completed_at`` under the row lock) inserts and
    updates nothing, and a duplicate client key (the unique constraint fires) rolls every part back.
    Built once per process from the models' table and column names; None where unsupported or where a
    model has grown a column this statement does not know (the ORM path then fills it).
    """
    if vendor != "postgresql":
        return None
    asg, jud, pair, ann = Assignment._meta, Judgment._meta, Pair._meta, Annotator._meta
    a = {f.name: quote(str(f.column)) for f in asg.concrete_fields}
    j = {f.name: quote(str(f.column)) for f in jud.concrete_fields}
    names = ["annotator", "pair", "assignment", "choice", "shown_order", "strength", "rationale", "time_ms",
             "client_key", "dimensions", "source", "created_at"]
    if set(j) != {*names, "id"}:
        return None
    n_judgments = quote(str(pair.get_field("n_judgments").column))
    ann_done = quote(str(ann.get_field("completed_at").column))
    t_asg = quote(asg.db_table)
    return (
        f"WITH asg AS (SELECT {a['id']} AS id, {a['shown_order']} AS shown_order, "
        f"(SELECT COUNT(*) FROM {t_asg} d WHERE d.{a['annotator']} = %(annotator)s "
        f"AND d.{a['completed_at']} IS NOT NULL) AS done_before "
        f"FROM {t_asg} WHERE {a['annotator']} = %(annotator)s AND {a['pair']} = %(pair)s "
        f"AND {a['completed_at']} IS NULL AND {a['released_at']} IS NULL ORDER BY {a['id']} LIMIT 1 FOR UPDATE), "
        f"ins AS (INSERT INTO {quote(jud.db_table)} ({', '.join(j[n] for n in names)}) "
        f"SELECT %(annotator)s, %(pair)s, asg.id, %(choice)s, asg.shown_order, %(strength)s, %(rationale)s, "
        f"%(time_ms)s, %(client_key)s, %(dimensions)s, %(source)s, %(now)s FROM asg "
        f"RETURNING {j['id']} AS id, {j['assignment']} AS assignment_id), "
        f"done AS (UPDATE {t_asg} SET {a['completed_at']} = %(now)s "
        f"WHERE {a['id']} IN (SELECT assignment_id FROM ins)), "
        f"counted AS (UPDATE {quote(pair.db_table)} SET {n_judgments} = {n_judgments} + 1 "
        f"WHERE {quote(str(pair.pk.column))} = %(pair)s AND EXISTS (SELECT 1 FROM ins)), "
        f"finished AS (UPDATE {quote(ann.db_table)} SET {ann_done} = %(now)s "
        f"WHERE {quote(str(ann.pk.column))} = %(annotator)s AND {ann_done} IS NULL AND %(by_quota)s "
        f"AND EXISTS (SELECT 1 FROM ins) AND (SELECT done_before + 1 FROM asg) >= %(quota)s) "
        f"SELECT ins.id, ins.assignment_id, asg.shown_order FROM ins, asg"
    )


def _judge_one_statement(
    sql: str, connection: Any, *, annotator: Annotator, pair: Pair, fields: dict[str, Any],
) -> Judgment | None:
    """Run _judge_sql; the judgment as saved, or None when the annotator has no open assignment of the pair.
    Inside a caller's transaction it runs in a savepoint, so a duplicate key does not break that transaction."""
    now = timezone.now()
    study = annotator.study
    params = {
        **fields,
        "annotator": annotator.pk, "pair": pair.pk, "now": now,
        "dimensions": Judgment._meta.get_field("dimensions").get_db_prep_value(fields["dimensions"], connection),
        # A conversation study finishes by conversations (feedback.conversations), not by pair quota.
        "by_quota": not study.is_conversation(), "quota": study.pairs_per_annotator,
    }
    with transaction.atomic(using=connection.alias) if connection.in_atomic_block else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    if row is None:
        return None
    judgment = Judgment(id=row[0], annotator=annotator, pair=pair, assignment_id=row[1], shown_order=row[2],
                        created_at=now, **fields)
    judgment._state.adding = False
    judgment._state.db = connection.alias
    return judgment


def judgment_create(
    *,
    annotator: Annotator,
    pair: Pair,
    choice: str,
    client_key: str,
    strength: int | None = None,
    rationale: str = "",
    time_ms: int | None = None,
    dimensions: dict[str, str] | None = None,
    source: str = Judgment.Source.CHOICE,
) -> tuple[Judgment, bool]:
    """Record the annotator's judgment of their open assignment of `pair`; returns (judgment, created).

    Idempotent on client_key: a retried submission (same pair and answers) returns the stored judgment; the
    same key with another pair or other answers raises ClientKeyConflict carrying the stored one. The stored
    one is looked up only when the submission cannot be recorded (invalid, pair not open for the annotator,
    finished annotator, or the client_key's unique constraint firing), so a first submission costs no lookup.
    """
    replay = functools.partial(
        _replay, pair=pair, choice=choice, strength=strength, rationale=rationale, dimensions=dimensions
    )
    try:
        _validate_judgment_fields(choice, strength, rationale, time_ms, client_key)
        dimensions = clean_dimensions(annotator.study, dimensions)
        if pair.study_id != annotator.study_id:
            raise ServiceError("this pair belongs to another study", code="not_found")
        if annotator.completed_at is not None:
            raise ServiceError("you have finished this study; it takes no more judgments", code="forbidden")
    except ServiceError:
        existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first() if isinstance(
            client_key, str) else None
        if existing is not None:
            return replay(existing), False
        raise
    if choice in Judgment.UNDIRECTED:
        strength = None  # a tie or "both bad" has no direction, so no strength
    connection = transaction.get_connection(router.db_for_write(Judgment))
    sql = _statement(_judge_sql, connection)
    try:
        if sql is not None:
            fields = {"choice": choice, "strength": strength, "rationale": rationale.strip(), "time_ms": time_ms,
                      "client_key": client_key, "dimensions": dimensions, "source": source}
            saved = _judge_one_statement(sql, connection, annotator=annotator, pair=pair, fields=fields)
            if saved is None:
                existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
                if existing is not None:  # a retry of the judgment that closed this assignment
                    return replay(existing), False
                raise ServiceError("this pair is not assigned to you (or was already judged)")
            for created_hook in judgment_created_hooks:
                transaction.on_commit(functools.partial(created_hook, saved), using=connection.alias)
            return saved, True
        with transaction.atomic():
            # The quota check's count comes with the lock (a scalar subquery): one round trip less per judgment.
            # It counts the judged assignments as the lock sees them, before this one completes.
            assignment = (
                Assignment.objects.select_for_update()
                .filter(annotator=annotator, pair=pair, completed_at__isnull=True, released_at__isnull=True)
                .annotate(done_before=Subquery(_judged_count(annotator)))
                .order_by("id")
                .first()
            )
            if assignment is None:
                existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
                if existing is not None:  # a retry of the judgment that closed this assignment
                    return replay(existing), False
                raise ServiceError("this pair is not assigned to you (or was already judged)")
            now = timezone.now()
            judgment = Judgment.objects.create(
                annotator=annotator,
                pair=pair,
                assignment=assignment,
                choice=choice,
                shown_order=assignment.shown_order,
                strength=strength,
                rationale=rationale.strip(),
                time_ms=time_ms,
                client_key=client_key,
                dimensions=dimensions,
                source=source,
            )
            assignment.completed_at = now
            assignment.save(update_fields=["completed_at"])
            Pair.objects.filter(id=pair.id).update(n_judgments=F("n_judgments") + 1)
            # A conversation study finishes by conversations (feedback.conversations), not by pair quota.
            is_conversation = annotator.study.is_conversation()
            done = assignment.done_before + 1  # type: ignore[attr-defined]  # this one is judged now
            if annotator.completed_at is None and not is_conversation and annotator.study.pairs_per_annotator <= done:
                Annotator.objects.filter(id=annotator.id, completed_at__isnull=True).update(completed_at=now)
            for created_hook in judgment_created_hooks:
                transaction.on_commit(functools.partial(created_hook, judgment))
    except IntegrityError:
        # The same client_key raced in from another request: return the one that won.
        existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
        if existing is None:
            raise
        return replay(existing), False
    return judgment, True


def annotator_finish(*, annotator: Annotator) -> Annotator:
    """Mark the annotator done (quota reached or nothing left to label)."""
    if annotator.completed_at is None:
        Annotator.objects.filter(id=annotator.id, completed_at__isnull=True).update(completed_at=timezone.now())
        annotator.refresh_from_db(fields=["completed_at"])
    return annotator


def study_set_status(*, study: Study, status: str) -> Study:
    """Open, pause or close a study (a paused or closed study accepts no new annotators or assignments)."""
    if status not in Study.Status.values:
        raise ServiceError(f"status must be one of {list(Study.Status.values)}")
    if study.status != status:
        study.status = status
        study.save(update_fields=["status"])
    return study
