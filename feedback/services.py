"""Every write to the feedback domain goes through these keyword-only functions."""

from __future__ import annotations

import functools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone
from django.utils.text import slugify

from feedback.importers import parse_import
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
) -> Study:
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
    )
    if created_by is not None:
        study.researchers.add(created_by)
    return study


@dataclass
class ImportResult:
    format: str
    prompts: int
    candidates: int
    pairs: int

    def as_dict(self) -> dict[str, Any]:
        return {"format": self.format, "prompts": self.prompts, "candidates": self.candidates, "pairs": self.pairs}


def study_import(*, study: Study, data: bytes, filename: str = "") -> ImportResult:
    """Validate the whole file, then store it in one transaction (raises ImportFileError, storing nothing)."""
    fmt, parsed = parse_import(data, filename)
    with transaction.atomic():
        prompts = Prompt.objects.bulk_create(
            [Prompt(study=study, text=p.text, context=p.context, metadata=p.metadata) for p in parsed],
            batch_size=500,
        )
        cands: list[Candidate] = []
        for prompt, p in zip(prompts, parsed, strict=True):
            cands += [
                Candidate(prompt=prompt, text=c.text, model_name=c.model_name, metadata=c.metadata, text_hash=text_hash(c.text))
                for c in p.candidates
            ]
        cands = Candidate.objects.bulk_create(cands, batch_size=500)
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
        for imported_hook in study_imported_hooks:
            transaction.on_commit(functools.partial(imported_hook, study))
    return ImportResult(fmt, len(prompts), len(cands), len(pairs))


def _username() -> str:
    return "annotator-" + uuid.uuid4().hex[:16]


@transaction.atomic
def annotator_join(*, study: Study, external_id: str = "") -> tuple[Annotator, bool]:
    """A crowdworker joins; returns (annotator, created).

    The same crowd-platform id rejoining resumes the same annotator: a worker who closed the tab
    must not start over or be counted twice.
    """
    if not study.is_open():
        raise ServiceError("this study is not accepting annotators", code="forbidden")
    external_id = (external_id or "").strip()[:200]
    if external_id:
        existing = Annotator.objects.filter(study=study, external_id=external_id).select_related("user").first()
        if existing:
            return existing, False
    user = User.objects.create_user(username=_username())
    user.set_unusable_password()
    user.save(update_fields=["password"])
    try:
        with transaction.atomic():
            annotator = Annotator.objects.create(study=study, user=user, external_id=external_id)
    except IntegrityError:
        # Two tabs joined with the same id at once: the other one won.
        user.delete()
        return Annotator.objects.get(study=study, external_id=external_id), False
    Profile.objects.create(annotator=annotator)
    return annotator, True


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


def annotator_quota_left(annotator: Annotator) -> int:
    done = Assignment.objects.filter(annotator=annotator, completed_at__isnull=False).count()
    return max(annotator.study.pairs_per_annotator - done, 0)


_PAIR_CONTENT = ("prompt", "candidate_a", "candidate_b")


class _SlotTaken(Exception):
    """The pair filled up between ranking and claiming: roll the claim's INSERT back."""


def _claim(
    *, annotator: Annotator, pair_id: int, shown_order: str, selector: str, target: int
) -> Assignment | None:
    """Claim one slot of pair `pair_id`: the assignment row and the conditional UPDATE, both or neither.

    The INSERT goes first so that one transaction needs no savepoint: a duplicate (this annotator already
    has the pair: a racing second tab) fails before anything is claimed, and a full pair (the conditional
    UPDATE matches no row) rolls the INSERT back.
    """
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
            assignment.pair = Pair.objects.select_related(*_PAIR_CONTENT).get(id=assignment.pair_id)
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
            assignment.pair = Pair.objects.select_related(*_PAIR_CONTENT).get(id=pair_id)
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
    state = Assignment.objects.filter(annotator=annotator).aggregate(
        open_id=Min("id", filter=Q(completed_at__isnull=True, released_at__isnull=True)),
        done=Count("id", filter=Q(completed_at__isnull=False)),
    )
    done: int = state["done"]
    if state["open_id"] is not None:
        open_one = (
            Assignment.objects.select_related(*(f"pair__{f}" for f in _PAIR_CONTENT))
            .filter(id=state["open_id"])
            .first()
        )
        if open_one is not None:
            return open_one, done
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
                assignment.pair = Pair.objects.select_related(*_PAIR_CONTENT).get(id=pair_id)
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

    Idempotent on client_key: a retried submission returns the stored judgment untouched, whatever else it
    carries. The stored one is looked up only when the submission cannot be recorded (invalid, pair not open
    for the annotator, or the client_key's unique constraint firing), so a first submission costs no lookup.
    """
    try:
        _validate_judgment_fields(choice, strength, rationale, time_ms, client_key)
        dimensions = clean_dimensions(annotator.study, dimensions)
        if pair.study_id != annotator.study_id:
            raise ServiceError("this pair belongs to another study", code="not_found")
    except ServiceError:
        existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
        if existing is not None:
            return existing, False
        raise
    if choice in Judgment.UNDIRECTED:
        strength = None  # a tie or "both bad" has no direction, so no strength
    try:
        with transaction.atomic():
            assignment = (
                Assignment.objects.select_for_update()
                .filter(annotator=annotator, pair=pair, completed_at__isnull=True, released_at__isnull=True)
                .order_by("id")
                .first()
            )
            if assignment is None:
                existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
                if existing is not None:  # a retry of the judgment that closed this assignment
                    return existing, False
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
            if annotator.completed_at is None and not is_conversation and annotator_quota_left(annotator) == 0:
                Annotator.objects.filter(id=annotator.id, completed_at__isnull=True).update(completed_at=now)
            for created_hook in judgment_created_hooks:
                transaction.on_commit(functools.partial(created_hook, judgment))
    except IntegrityError:
        # The same client_key raced in from another request: return the one that won.
        existing = Judgment.objects.filter(annotator=annotator, client_key=client_key).first()
        if existing is None:
            raise
        return existing, False
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
