"""Reads of the feedback domain (views and the API call these, never the ORM directly for these)."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from feedback.models import Annotator, Assignment, Judgment, Pair, Study


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
