"""Which pair an annotator sees next.

A selector only *ranks* eligible pairs; `assignment_next` in services claims the first one whose
overlap slot is still free with a conditional UPDATE, so selectors never have to think about races.
Issue-specific selectors (uncertainty, info_gain, …) register themselves in SELECTORS.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from django.db import router
from django.db.models import F, Max, Min, QuerySet

from feedback.compiled import Compiled, compile_once
from feedback.models import Annotator, Pair, Study


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


_ELIGIBLE_PAIRS = eligible_pairs


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
        using = router.db_for_read(Pair)
        # Only the module's own eligibility rule is compiled: a replaced one (simulation_protocol holds
        # evaluation pairs out this way) is built by the ORM on every call, as it asks.
        statements = _rank_statements(using, limit) if eligible_pairs is _ELIGIBLE_PAIRS else None
        if statements is None:
            after, before = (list(qs) for qs in _rank_querysets(annotator, start, limit))
        else:
            values = {"study": annotator.study.pk, "target": annotator.study.overlap_target,
                      "annotator": annotator.pk, "start": start}
            after, before = (scan.tuples(**values) for scan in statements)
        # Stable merge: fewest claimed slots first, then in rotation order from the random start.
        merged = sorted(after + before, key=lambda row: row[0])
        return [pair_id for _, pair_id in merged[:limit]]


def _rank_querysets(annotator: Annotator, start: int, limit: int):
    """The two bounded scans of RandomSelector.rank: from `start` up, and the wrap-around below it."""
    qs = eligible_pairs(annotator).order_by(F("n_assigned").asc(), "id")
    return (
        qs.filter(id__gte=start).values_list("n_assigned", "id")[:limit],
        qs.filter(id__lt=start).values_list("n_assigned", "id")[:limit],
    )


def _rank_statements(using: str, limit: int) -> tuple[Compiled, Compiled] | None:
    """The rank scans compiled once per process, database and limit (None: use the ORM each time).

    Building and compiling these two querysets (eligible_pairs' exclude is a subquery) cost several times
    the CPU of running them, on every claim (benchmarks/judgment_cpu_bench.py). Their SQL depends only on
    the models and `limit`, so it is generated once from the very same querysets (feedback.compiled), built
    by eligible_pairs for a stand-in annotator whose ids are sentinels.
    """
    def scan(which: int) -> Callable[[Mapping[str, int]], QuerySet[Any, Any]]:
        def build(s: Mapping[str, int]) -> QuerySet[Any, Any]:
            stand_in = Annotator(pk=s["annotator"], study=Study(pk=s["study"], overlap_target=s["target"]))
            return _rank_querysets(stand_in, s["start"], limit)[which]
        return build

    expected = ["study", "target", "annotator", "start"]
    after = compile_once(f"rank-after-{limit}", using, scan(0), expected)
    before = compile_once(f"rank-before-{limit}", using, scan(1), expected)
    return (after, before) if after is not None and before is not None else None


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
