"""Tests for training.stats: known answers where they exist, simulation where only the truth is known."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from training.stats import (
    between_group_agreement,
    bootstrap_bt,
    bradley_terry,
    krippendorff_alpha,
    pairwise_agreement,
    rank_correlation,
    wilson_interval,
)

# True Elo-scale strengths; they average 1000 so they are directly comparable with an unanchored fit.
TRUE_RATINGS = {"alpha": 1200.0, "bravo": 1100.0, "charlie": 950.0, "delta": 750.0}


def simulate_battles(ratings: dict[str, float], n: int, seed: int) -> list[tuple[str, str, float]]:
    """Draw battles from the Bradley-Terry model itself (no ties, which would shrink the gaps)."""
    rng = np.random.default_rng(seed)
    names = list(ratings)
    strength = np.array([ratings[m] for m in names])
    first = rng.integers(0, len(names), n)
    second = (first + rng.integers(1, len(names), n)) % len(names)  # uniform over the other models
    p_first = 1.0 / (1.0 + 10.0 ** ((strength[second] - strength[first]) / 400.0))
    outcome = (rng.random(n) < p_first).astype(float)
    return [(names[i], names[j], float(y)) for i, j, y in zip(first, second, outcome, strict=True)]


def win_probability(r_a: float, r_b: float) -> float:
    return 1.0 / (1.0 + 10.0 ** ((r_b - r_a) / 400.0))


# --------------------------------------------------------------------------------------------------------
# Bradley-Terry
# --------------------------------------------------------------------------------------------------------


def test_it_recovers_known_strengths_within_bootstrap_intervals():
    battles = simulate_battles(TRUE_RATINGS, 4000, seed=7)

    rows = bootstrap_bt(battles, rounds=200, seed=1, ci=0.99)

    # 99% rather than 95%: four independent 95% intervals would all cover the truth only ~80% of the time,
    # so the check would hinge on the seed rather than on the estimator.
    assert [row["model"] for row in rows] == ["alpha", "bravo", "charlie", "delta"]
    for row in rows:
        assert row["ci_low"] <= TRUE_RATINGS[row["model"]] <= row["ci_high"], row
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
        assert abs(row["score"] - TRUE_RATINGS[row["model"]]) < 40
    assert [row["rank"] for row in rows] == [1, 2, 3, 4]


def test_it_solves_the_bradley_terry_likelihood_equations():
    # At the MLE every model's expected number of wins equals its observed wins (ties as 1/2); checking
    # this pins down the optimiser independently of any simulation noise.
    battles = simulate_battles(TRUE_RATINGS, 600, seed=3) + [("alpha", "delta", 0.5)] * 20

    ratings = bradley_terry(battles)

    for model in TRUE_RATINGS:
        observed = expected = 0.0
        for a, b, y in battles:
            if model == a:
                observed += y
                expected += win_probability(ratings[a], ratings[b])
            elif model == b:
                observed += 1.0 - y
                expected += win_probability(ratings[b], ratings[a])
        assert expected == pytest.approx(observed, abs=1e-4)
    assert np.mean(list(ratings.values())) == pytest.approx(1000.0)


def test_it_gives_equal_scores_for_symmetric_data():
    cyclic = [("a", "b", 1.0), ("b", "c", 1.0), ("c", "a", 1.0)] * 5
    split = [("a", "b", 1.0), ("a", "b", 0.0), ("b", "c", 0.0), ("c", "b", 0.0)]

    for battles in (cyclic, split):
        ratings = bradley_terry(battles)
        assert ratings == pytest.approx({"a": 1000.0, "b": 1000.0, "c": 1000.0}, abs=1e-6)


def test_it_counts_a_tie_as_half_a_win():
    # One win plus one tie is 1.5 wins out of 2, so P(a beats b) = 0.75, i.e. odds 3:1 = 400*log10(3) points.
    ratings = bradley_terry([("a", "b", 1.0), ("b", "a", 0.5)])
    assert ratings["a"] - ratings["b"] == pytest.approx(400 * math.log10(3), abs=1e-3)
    assert ratings == pytest.approx(bradley_terry([("a", "b", 1.0)] * 3 + [("a", "b", 0.0)]), abs=1e-3)

    only_ties = bradley_terry([("a", "b", 0.5)] * 4)
    assert only_ties["a"] == pytest.approx(only_ties["b"], abs=1e-9)


def test_it_uses_the_requested_elo_scale():
    ratings = bradley_terry([("a", "b", 1.0)] * 3 + [("a", "b", 0.0)], scale=1.0, base=math.e, init_rating=0)
    assert ratings["a"] - ratings["b"] == pytest.approx(math.log(3), abs=1e-6)
    assert ratings["a"] + ratings["b"] == pytest.approx(0.0, abs=1e-9)


def test_it_anchors_the_scale_on_one_model():
    battles = simulate_battles(TRUE_RATINGS, 500, seed=5)

    free = bradley_terry(battles)
    anchored = bradley_terry(battles, anchor="charlie", init_rating=1114)

    assert anchored["charlie"] == 1114
    shift = anchored["alpha"] - free["alpha"]
    assert {m: r - shift for m, r in anchored.items()} == pytest.approx(free, abs=1e-6)
    with pytest.raises(ValueError, match="anchor"):
        bradley_terry(battles, anchor="nobody")


def test_it_does_not_depend_on_battle_order_or_side():
    battles = simulate_battles(TRUE_RATINGS, 300, seed=11)
    mirrored = [(b, a, 1.0 - y) for a, b, y in reversed(battles)]
    assert bradley_terry(mirrored) == pytest.approx(bradley_terry(battles), abs=1e-6)


def test_it_keeps_a_model_that_wins_everything_finite():
    ratings = bradley_terry([("a", "b", 1.0)] * 10 + [("b", "c", 0.5)])
    assert all(math.isfinite(r) for r in ratings.values())
    # b and c only tied each other; they differ by the ridge's pull alone (hundredths of a point).
    assert ratings["a"] > ratings["b"] == pytest.approx(ratings["c"], abs=0.1)


def test_it_rejects_malformed_battles():
    with pytest.raises(ValueError, match="itself"):
        bradley_terry([("a", "a", 1.0)])
    with pytest.raises(ValueError, match="outcome"):
        bradley_terry([("a", "b", 2.0)])
    with pytest.raises(ValueError, match="outcome"):
        bradley_terry([("a", "b", math.nan)])


def test_it_returns_nothing_for_no_battles():
    assert bradley_terry([]) == {}
    assert bootstrap_bt([]) == []


def test_it_reports_tallies_and_sorts_rows_by_score():
    battles = [("a", "b", 1.0), ("b", "a", 1.0), ("a", "c", 0.5), ("c", "b", 0.0), ("a", "b", 1.0)]

    rows = bootstrap_bt(battles, rounds=50)

    by_model = {row["model"]: row for row in rows}
    assert set(rows[0]) == set("model score ci_low ci_high battles wins losses ties rank".split())
    assert [by_model["a"][k] for k in ("battles", "wins", "losses", "ties")] == [4, 2, 1, 1]
    assert [by_model["b"][k] for k in ("battles", "wins", "losses", "ties")] == [4, 2, 2, 0]
    assert [by_model["c"][k] for k in ("battles", "wins", "losses", "ties")] == [2, 0, 1, 1]
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    assert {row["model"]: row["score"] for row in rows} == pytest.approx(bradley_terry(battles))


def test_it_shares_a_rank_when_intervals_overlap():
    rows = bootstrap_bt([("a", "b", 1.0), ("a", "b", 0.0)] * 10, rounds=100)
    assert [row["rank"] for row in rows] == [1, 1]


def test_it_is_reproducible_for_a_seed():
    battles = simulate_battles(TRUE_RATINGS, 300, seed=2)
    assert bootstrap_bt(battles, rounds=30, seed=4) == bootstrap_bt(battles, rounds=30, seed=4)
    assert bootstrap_bt(battles, rounds=30, seed=4) != bootstrap_bt(battles, rounds=30, seed=5)


def test_it_survives_models_missing_from_a_resample():
    # "rare" plays once in 201 battles, so it is absent from roughly e^-1 of the resamples; with it as the
    # anchor those rounds cannot be anchored at all. Neither may crash or leave the intervals empty.
    battles = [("a", "b", 1.0), ("b", "a", 1.0), ("a", "b", 0.5)] * 67 + [("rare", "a", 0.5)]

    for anchor in (None, "rare"):
        rows = bootstrap_bt(battles, rounds=200, seed=0, anchor=anchor)
        assert {row["model"] for row in rows} == {"a", "b", "rare"}
        for row in rows:
            assert math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])
            assert row["ci_low"] <= row["ci_high"]


def test_it_bootstraps_ten_thousand_battles_quickly():
    battles = simulate_battles(TRUE_RATINGS, 10_000, seed=0)
    start = time.perf_counter()
    bootstrap_bt(battles, rounds=200)
    # Measured ~0.03 s; the bound is loose so a busy CI machine does not fail it, yet a per-round
    # Python loop over battles (seconds) would.
    assert time.perf_counter() - start < 1.0


def test_it_validates_bootstrap_arguments():
    battles = [("a", "b", 1.0)]
    with pytest.raises(ValueError):
        bootstrap_bt(battles, rounds=0)
    with pytest.raises(ValueError):
        bootstrap_bt(battles, ci=1.0)
    with pytest.raises(TypeError):
        bootstrap_bt(battles, anker="a")


# --------------------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------------------


def test_it_computes_kendall_tau_b_by_hand():
    # One discordant pair (y, z) out of six: (5 - 1) / 6.
    a = {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}
    b = {"x": 10.0, "y": 30.0, "z": 20.0, "w": 40.0}
    assert rank_correlation(a, b) == pytest.approx(4 / 6)

    # Tie on (p, q) in b only: C=2, D=0, tau-b = 2 / sqrt(3 * 2).
    assert rank_correlation({"p": 1, "q": 2, "r": 3}, {"p": 1, "q": 1, "r": 2}) == pytest.approx(
        2 / math.sqrt(6)
    )


def test_it_correlates_only_shared_models():
    a = {"x": 1.0, "y": 2.0, "z": 3.0, "only_a": 100.0}
    b = {"x": 3.0, "y": 2.0, "z": 1.0, "only_b": -5.0}
    assert rank_correlation(a, b) == pytest.approx(-1.0)
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert math.isnan(rank_correlation({"x": 1.0, "y": 2.0}, {"x": 1.0}))
    assert math.isnan(rank_correlation({"x": 1.0, "y": 1.0}, {"x": 1.0, "y": 2.0}))


# --------------------------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------------------------

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: observers A-D (columns)
# x units 1-12 (rows), None where an observer gave no value. Unit 12 has a single value and is not pairable.
KRIPPENDORFF_2011: list[list[int | None]] = [
    [1, 1, None, 1],
    [2, 2, 3, 2],
    [3, 3, 3, 3],
    [3, 3, 3, 3],
    [2, 2, 2, 2],
    [1, 2, 3, 4],
    [4, 4, 4, 4],
    [1, 1, 2, 1],
    [2, 2, 2, 2],
    [None, 5, 5, 5],
    [None, None, 1, 1],
    [None, 3, None, None],
]


@pytest.mark.parametrize(
    ("level", "expected"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_it_reproduces_krippendorffs_worked_example(level, expected):
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level), 3) == expected


def test_it_ignores_coder_order_and_nan_missing_values():
    shuffled = [list(reversed(row)) for row in KRIPPENDORFF_2011]
    as_nan = [[math.nan if v is None else float(v) for v in row] for row in KRIPPENDORFF_2011]
    assert krippendorff_alpha(shuffled) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011))
    assert krippendorff_alpha(as_nan, "interval") == pytest.approx(0.849, abs=5e-4)


def test_it_computes_a_small_alpha_by_hand():
    # Values a:3, b:5 (n=8); one disagreeing unit gives o_ab = o_ba = 1, so
    # alpha = 1 - (n - 1) * 2 / (2 * n_a * n_b) = 1 - 7 * 2 / 30.
    data = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"]]
    assert krippendorff_alpha(data) == pytest.approx(1 - 14 / 30)


def test_it_gives_alpha_one_for_perfect_agreement():
    data: list[list[str | None]] = [["a", "a", "a"], ["b", "b", None], ["c", "c", "c"]]
    assert krippendorff_alpha(data) == pytest.approx(1.0)
    assert krippendorff_alpha([[1, 1], [3, 3], [2, 2]], "interval") == pytest.approx(1.0)


def test_it_leaves_alpha_undefined_without_variation_or_pairs():
    # Everyone always says "a": no expected disagreement, so agreement says nothing; alpha is 0/0 -> nan.
    assert math.isnan(krippendorff_alpha([["a", "a"], ["a", "a", "a"]]))
    no_pairs: list[list[str | None]] = [["a", None], [None, "b"]]
    assert math.isnan(krippendorff_alpha(no_pairs))
    assert math.isnan(krippendorff_alpha([]))
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(KRIPPENDORFF_2011, "cosine")


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_agrees_with_the_krippendorff_package(level, seed):
    # The reference implementation (PyPI `krippendorff`, coders x units with nan = missing) on random
    # matrices with missing values and uneven coder counts.
    import krippendorff

    rng = np.random.default_rng(seed)
    units, coders = 40, 6
    values = rng.integers(1, 6, size=(units, coders)).astype(float)
    values[rng.random((units, coders)) < 0.35] = np.nan
    ours = krippendorff_alpha([[None if np.isnan(v) else int(v) for v in row] for row in values], level)
    theirs = krippendorff.alpha(reliability_data=values.T, level_of_measurement=level)
    assert ours == pytest.approx(theirs, abs=1e-9)


# --------------------------------------------------------------------------------------------------------
# Agreement and Wilson interval
# --------------------------------------------------------------------------------------------------------


def test_it_computes_pairwise_agreement_by_hand():
    # i1: 3 pairs, 1 agreeing; i2: 1 pair, agreeing; i3 has no pair -> 2 / 4.
    labels = {"i1": ["a", "a", "b"], "i2": ["tie", "tie"], "i3": ["b"]}
    assert pairwise_agreement(labels) == pytest.approx(0.5)
    assert pairwise_agreement({"i1": ["a", None, "a"]}) == pytest.approx(1.0)
    assert math.isnan(pairwise_agreement({"i1": ["a"], "i2": []}))


def test_it_computes_between_group_agreement_by_hand():
    # i1: 2 cross pairs, 1 agreeing; i2: 2 cross pairs, none agreeing; i3 is only in group B -> 1 / 4.
    group_a = {"i1": ["a", "b"], "i2": ["a"]}
    group_b = {"i1": ["a"], "i2": ["b", "b"], "i3": ["a"]}
    assert between_group_agreement(group_a, group_b) == pytest.approx(0.25)
    assert between_group_agreement(group_b, group_a) == pytest.approx(0.25)
    assert math.isnan(between_group_agreement({"i1": ["a"]}, {"i2": ["a"]}))


def test_it_computes_wilson_intervals():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)

    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
