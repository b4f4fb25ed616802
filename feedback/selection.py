"""Which pair an annotator sees next.

A selector only *ranks* eligible pairs; `assignment_next` in services claims the first one whose
overlap slot is still free with a conditional UPDATE, so selectors never have to think about races.
Issue-specific selectors (uncertainty, info_gain, …) register themselves in SELECTORS.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Protocol

from django.db.models import F, Max, Min

from feedback.models import Annotator, Pair


class PairSelector(Protocol):
    name: str

    def rank(self, *, annotator: Annotator, limit: int) -> list[int]:
        """Up to `limit` ids of pairs this annotator may get, best first."""
        ...


def eligible_pairs(annotator: Annotator):
    """Pairs of the annotator's study with a free overlap slot that they have not been given yet."""
    study = annotator.study
    # Gold/attention pairs are never ranked: services schedule them at the study's gold_rate.
    return Pair.objects.filter(study_id=study.pk, n_assigned__lt=study.overlap_target, gold_choice="").exclude(
        assignments__annotator_id=annotator.pk
    )


class RandomSelector:
    """Overlap-balanced random: pairs with the fewest claimed slots first, random among equals.

    Filling pairs evenly gives every pair its overlap before any pair gets more, which keeps
    agreement statistics comparable across pairs.
    """

    name = "random"

    def rank(self, *, annotator: Annotator, limit: int) -> list[int]:
        # ORDER BY random() would sort the whole study on every claim. Instead start at a random id and
        # read the lowest-filled pairs on each side of it from the (study, n_assigned, id) index: two
        # bounded index scans, and every pair stays reachable because the second wraps around.
        lo, hi = _id_bounds(annotator.study_id)
        start = random.randint(lo, hi) if hi >= lo else 0
        qs = eligible_pairs(annotator).order_by(F("n_assigned").asc(), "id")
        after = list(qs.filter(id__gte=start).values_list("n_assigned", "id")[:limit])
        before = list(qs.filter(id__lt=start).values_list("n_assigned", "id")[:limit])
        # Stable merge: fewest claimed slots first, then in rotation order from the random start.
        merged = sorted(after + before, key=lambda row: row[0])
        return [pair_id for _, pair_id in merged[:limit]]


_bounds: dict[int, tuple[float, tuple[int, int]]] = {}
BOUNDS_TTL_SECONDS = 60.0


def _id_bounds(study_id: int) -> tuple[int, int]:
    """Min and max pair id of a study, cached briefly: stale bounds only skew the random start."""
    now = time.monotonic()
    cached = _bounds.get(study_id)
    if cached and now - cached[0] < BOUNDS_TTL_SECONDS:
        return cached[1]
    agg = Pair.objects.filter(study_id=study_id).aggregate(lo=Min("id"), hi=Max("id"))
    bounds = (agg["lo"] or 0, agg["hi"] or -1)
    _bounds[study_id] = (now, bounds)
    return bounds


SELECTORS: dict[str, Callable[[], PairSelector]] = {"random": RandomSelector}


def register_selector(name: str, factory: Callable[[], PairSelector]) -> None:
    SELECTORS[name] = factory


def get_selector(name: str) -> PairSelector:
    # Unknown names fall back to random rather than stopping a running study.
    return SELECTORS.get(name, RandomSelector)()
