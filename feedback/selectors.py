"""Reads of the feedback domain (views and the API call these, never the ORM directly for these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from feedback.models import Annotator, Assignment, Judgment, Pair, Prompt, Study


def study_list_for_user(user) -> QuerySet[Study]:
    qs = Study.objects.all() if user.is_superuser else Study.objects.filter(
        Q(created_by=user) | Q(researchers=user)
    ).distinct()
    return qs.order_by("-created_at")


def is_researcher(user) -> bool:
    """A researcher may create studies: superusers and members of the "researchers" group."""
    if not user.is_authenticated:
        return False
    return user.is_superuser or user.groups.filter(name="researchers").exists()


def annotator_for_user(user) -> Annotator | None:
    if not user.is_authenticated:
        return None
    return Annotator.objects.select_related("study").filter(user=user).first()


def annotator_of(user) -> Annotator | None:
    """The user's annotator: taken from what the API's token query already loaded with the user, else looked up.

    feedback.permissions.AnnotatorTokenAuthentication loads token, user, annotator and study in one query and
    leaves the annotator (or None) in the user's related-object cache; reading it here saves a query per call.
    """
    cache = getattr(getattr(user, "_state", None), "fields_cache", {})
    if "annotator" in cache:
        return cache["annotator"]
    return annotator_for_user(user)


def own_annotator(*, user, study_id: int, annotator_id: int | None = None) -> Annotator | None:
    """The user's own annotator if it belongs to study `study_id` (and is annotator `annotator_id`, when given).

    The one rule for "this annotator's own data" outside their session pages: every join creates its own
    user, so a user is the annotator of at most one study. None for everyone else (anonymous, researchers,
    annotators of other studies or asking about someone else); each caller answers None its own way (404 so
    an annotator never learns whether another annotator exists, or on to the researcher rule).
    """
    annotator = annotator_of(user)
    if annotator is None or annotator.study_id != study_id:
        return None
    if annotator_id is not None and annotator.pk != annotator_id:
        return None
    return annotator


def get_study_for_researcher(*, user, pk: int) -> Study:
    """Study `pk` for one of its researchers: 404 when it does not exist, 403 for anyone else.

    The one rule for every researcher page and API call. Superusers are researchers of every study;
    annotator accounts never are (participants must not see each other's data). Django turns the two
    exceptions into its 404/403 pages, DRF into {"detail": ...} bodies with the same messages.
    """
    study = Study.objects.filter(pk=pk).first()
    if study is None:
        raise Http404("no such study")
    if annotator_for_user(user) is not None or not study.has_researcher(user):
        raise PermissionDenied("you are not a researcher of this study")
    return study


def join_url(study: Study) -> str:
    return f"{settings.PUBLIC_URL}/s/{study.slug}/join"


@dataclass
class StudyCounts:
    prompts: int
    pairs: int
    judgments: int
    annotators: int
    annotators_completed: int
    pairs_complete: int  # pairs that reached the overlap target
    target_judgments: int

    @property
    def progress_percent(self) -> int:
        return round(100 * self.judgments / self.target_judgments) if self.target_judgments else 0


def study_counts(study: Study) -> StudyCounts:
    pair_stats = Pair.objects.filter(study=study).aggregate(
        n=Count("id"), complete=Count("id", filter=Q(n_judgments__gte=study.overlap_target))
    )
    ann = Annotator.objects.filter(study=study).aggregate(
        n=Count("id"), done=Count("id", filter=Q(completed_at__isnull=False))
    )
    return StudyCounts(
        prompts=study.prompts.count(),
        pairs=pair_stats["n"],
        judgments=Judgment.objects.filter(pair__study=study).count(),
        annotators=ann["n"],
        annotators_completed=ann["done"],
        pairs_complete=pair_stats["complete"],
        target_judgments=pair_stats["n"] * study.overlap_target,
    )


def annotator_progress(annotator: Annotator) -> tuple[int, int]:
    """(judged, quota) for the progress bar."""
    done = Assignment.objects.filter(annotator=annotator, completed_at__isnull=False).count()
    return done, annotator.study.pairs_per_annotator


def study_judgments(study: Study) -> QuerySet[Judgment]:
    return (
        Judgment.objects.filter(pair__study=study)
        .select_related("annotator", "pair__candidate_a", "pair__candidate_b")
        .order_by("id")
    )


def study_is_full(study: Study) -> bool:
    """No pair has a free overlap slot: a new annotator would get nothing to label.

    A slot held by an open assignment past its TTL counts as free: the next claim gives it back
    (services._release_stale_assignments), so a worker who abandoned the task does not fill the study.
    """
    target = study.overlap_target
    if study.is_conversation():
        # Participants bring their own prompts and the models answer live: there is no pool to run out of.
        return False
    if study.is_ratings():
        # Full when no prompt with 3+ responses has a free rating slot (feedback.conversations.rating_task_next).
        return not (
            Prompt.objects.filter(study=study)
            .annotate(n_candidates=Count("candidates", distinct=True), n_tasks=Count("rating_tasks", distinct=True))
            .filter(n_candidates__gte=3, n_tasks__lt=target)
            .exists()
        )
    if Pair.objects.filter(study=study, n_assigned__lt=target).exists():
        return False
    if not Pair.objects.filter(study=study).exists():
        return True
    cutoff = timezone.now() - timedelta(seconds=settings.CHORUS_ASSIGNMENT_TTL_SECONDS)
    return not Assignment.objects.filter(
        pair__study=study, completed_at__isnull=True, released_at__isnull=True, assigned_at__lt=cutoff
    ).exists()


def study_full_for_new_worker(study: Study, *, external_id: str = "") -> bool:
    """The join page turns this worker away: the study is full and they are not a returning crowd id.

    A returning crowd id resumes whatever they had (their open pair, or their completion code).
    """
    if external_id and Annotator.objects.filter(study=study, external_id=external_id).exists():
        return False
    return study_is_full(study)


def study_recent_judgments(study: Study, *, limit: int) -> list[Judgment]:
    """The newest judgments with what the researcher reads: both responses, the prompt, the annotator."""
    return list(
        Judgment.objects.filter(pair__study=study)
        .select_related("annotator", "pair__prompt", "pair__candidate_a", "pair__candidate_b")
        .order_by("-id")[:limit]
    )
