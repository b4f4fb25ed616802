"""Which pair an annotator sees next.

A selector only *ranks* eligible pairs; `assignment_next` in services claims the first one whose
overlap slot is still free with a conditional UPDATE, so selectors never have to think about races.
Issue-specific selectors (uncertainty, info_gain, …) register themselves in SELECTORS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from django.db.models import F

from feedback.models import Annotator, Pair


class PairSelector(Protocol):
    name: str

    def rank(self, *, annotator: Annotator, limit: int) -> list[int]:
        """Up to `limit` ids of pairs this annotator may get, best first."""
        ...


def eligible_pairs(annotator: Annotator):
    """Pairs of the annotator's study with a free overlap slot that they have not been given yet."""
    study = annotator.study
    return Pair.objects.filter(study_id=study.pk, n_assigned__lt=study.overlap_target).exclude(
        assignments__annotator_id=annotator.pk
    )


class RandomSelector:
    """Overlap-balanced random: pairs with the fewest claimed slots first, random among equals.

    Filling pairs evenly gives every pair its overlap before any pair gets more, which keeps
    agreement statistics comparable across pairs.
    """

    name = "random"

    def rank(self, *, annotator: Annotator, limit: int) -> list[int]:
        qs = eligible_pairs(annotator).order_by(F("n_assigned").asc(), "?")
        return list(qs.values_list("id", flat=True)[:limit])


SELECTORS: dict[str, Callable[[], PairSelector]] = {"random": RandomSelector}


def register_selector(name: str, factory: Callable[[], PairSelector]) -> None:
    SELECTORS[name] = factory


def get_selector(name: str) -> PairSelector:
    # Unknown names fall back to random rather than stopping a running study.
    return SELECTORS.get(name, RandomSelector)()
