"""Statistics behind the researcher dashboards: ratings, rank agreement and label reliability.

Pure numpy on purpose: these functions are called from views, Celery tasks and notebooks alike, so they
take plain Python data and must not import Django (or scipy, which is not a dependency).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "between_group_agreement",
    "bootstrap_bt",
    "bradley_terry",
    "krippendorff_alpha",
    "pairwise_agreement",
    "rank_correlation",
    "wilson_interval",
]

# Item ids (comparison pairs, prompts...) are whatever the caller keys its labels by.
ItemT = TypeVar("ItemT", bound=Hashable)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# A battle is (model_a, model_b, outcome): 1.0 means a won, 0.0 b won, 0.5 a tie.
Battle = tuple[str, str, float]

# Absolute L2 penalty on the natural-scale strengths. sklearn's C=1e6, which Chatbot Arena uses, is the
# same penalty: too small to move any estimate that the data pin down, but it keeps the Hessian positive
# definite (ratings are only defined up to a shift) and the optimum finite when a model wins everything.
DEFAULT_RIDGE = 1e-6


# --------------------------------------------------------------------------------------------------------
# Bradley-Terry
# --------------------------------------------------------------------------------------------------------


class _PairData:
    """Battles collapsed to distinct (pair, outcome) kinds.

    The likelihood only depends on how often each kind occurs, so a bootstrap resample is just a new count
    vector over kinds; that is what lets all rounds be fitted at once as one batched weighted problem.
    """

    def __init__(self, battles: Sequence[Battle]) -> None:
        a_names: list[str] = []
        b_names: list[str] = []
        outcomes: list[float] = []
        for model_a, model_b, outcome in battles:
            y = float(outcome)
            if model_a == model_b:
                raise ValueError(f"a model cannot battle itself: {model_a!r}")
            if not 0.0 <= y <= 1.0:  # also rejects nan
                raise ValueError(f"outcome must lie in [0, 1], got {outcome!r}")
            a_names.append(model_a)
            b_names.append(model_b)
            outcomes.append(y)

        # Sorted so that indices (and hence results) do not depend on battle order.
        self.models: list[str] = sorted(set(a_names) | set(b_names))
        index = {m: i for i, m in enumerate(self.models)}
        a = np.array([index[m] for m in a_names], dtype=np.intp)
        b = np.array([index[m] for m in b_names], dtype=np.intp)
        y_arr = np.array(outcomes, dtype=np.float64)

        # Orient every battle as (low index, high index) with y = share won by the low-index model.
        swap = a > b
        lo = np.where(swap, b, a)
        hi = np.where(swap, a, b)
        y_lo = np.where(swap, 1.0 - y_arr, y_arr)

        m = len(self.models)
        kinds, kind_counts = np.unique(
            np.stack([(lo * m + hi).astype(np.float64), y_lo], axis=1), axis=0, return_counts=True
        )
        self.n_battles = len(outcomes)
        self.kind_counts: IntArray = kind_counts.astype(np.intp)
        self.kind_y: FloatArray = kinds[:, 1]
        pair_code = kinds[:, 0].astype(np.intp)

        pair_codes, self.pair_of_kind = np.unique(pair_code, return_inverse=True)
        self.pair_of_kind = self.pair_of_kind.reshape(-1).astype(np.intp)
        self.pair_i: IntArray = (pair_codes // m).astype(np.intp)
        self.pair_j: IntArray = (pair_codes % m).astype(np.intp)

        # Raw tallies for the leaderboard table (from each model's own point of view).
        self.appearances = np.bincount(np.concatenate([a, b]), minlength=m)
        won_a, won_b = y_arr > 0.5, y_arr < 0.5
        tie = ~(won_a | won_b)
        self.wins = np.bincount(a[won_a], minlength=m) + np.bincount(b[won_b], minlength=m)
        self.losses = np.bincount(a[won_b], minlength=m) + np.bincount(b[won_a], minlength=m)
        self.ties = np.bincount(a[tie], minlength=m) + np.bincount(b[tie], minlength=m)

    def pair_totals(self, counts: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Per round and pair: games played (n) and games won by the pair's first model (s), ties as 1/2."""
        n = _sum_by_index(counts, self.pair_of_kind, len(self.pair_i))
        s = _sum_by_index(counts * self.kind_y, self.pair_of_kind, len(self.pair_i))
        return n, s


def _sum_by_index(values: FloatArray, index: IntArray, size: int) -> FloatArray:
    """Row-wise scatter-add: out[r, k] = sum of values[r, c] with index[c] == k (bincount beats np.add.at)."""
    rows = values.shape[0]
    flat = (np.arange(rows, dtype=np.intp)[:, None] * size + index[None, :]).ravel()
    out = np.bincount(flat, weights=values.ravel(), minlength=rows * size)
    return out.reshape(rows, size).astype(np.float64, copy=False)


def _softplus(x: FloatArray) -> FloatArray:
    return np.logaddexp(0.0, x)


def _fit_strengths(
    pair_i: IntArray,
    pair_j: IntArray,
    n: FloatArray,
    s: FloatArray,
    n_models: int,
    *,
    ridge: float,
    max_iter: int,
    tol: float = 1e-9,
) -> FloatArray:
    """Penalised maximum-likelihood BT strengths (natural log-odds scale) for R weighted data sets at once.

    n, s have shape (R, pairs). Minimises, per row, sum_pairs [s*softplus(-d) + (n-s)*softplus(d)]
    + ridge/2*|theta|^2 with d = theta_i - theta_j, i.e. logistic regression on the Arena design matrix.
    Damped Newton: the problem is strictly convex and has only a handful of parameters, so each step is
    an exact (R, M, M) solve and it converges in ~10 steps where MM or gradient descent would need hundreds.
    """
    rounds = n.shape[0]
    theta = np.zeros((rounds, n_models))
    diag = np.arange(n_models)
    off_ij = pair_i * n_models + pair_j
    off_ji = pair_j * n_models + pair_i

    def objective(th: FloatArray) -> FloatArray:
        d = th[:, pair_i] - th[:, pair_j]
        nll = (s * _softplus(-d) + (n - s) * _softplus(d)).sum(axis=1)
        return nll + 0.5 * ridge * (th * th).sum(axis=1)

    value = objective(theta)
    for _ in range(max_iter):
        d = theta[:, pair_i] - theta[:, pair_j]
        log_p, log_q = -_softplus(-d), -_softplus(d)  # log P(i wins), log P(j wins), stable in the tails
        g_pair = n * np.exp(log_p) - s
        w_pair = n * np.exp(log_p + log_q)
        grad = _sum_by_index(g_pair, pair_i, n_models) - _sum_by_index(g_pair, pair_j, n_models)
        grad += ridge * theta

        # Hessian = weighted graph Laplacian of the comparison graph + ridge * I. Pairs are unique, so the
        # off-diagonal entries can be assigned rather than accumulated.
        flat_hess = np.zeros((rounds, n_models * n_models))
        flat_hess[:, off_ij] = -w_pair
        flat_hess[:, off_ji] = -w_pair
        hess = flat_hess.reshape(rounds, n_models, n_models)
        degree = _sum_by_index(w_pair, pair_i, n_models) + _sum_by_index(w_pair, pair_j, n_models)
        hess[:, diag, diag] = degree + ridge
        step = -np.linalg.solve(hess, grad[:, :, None])[:, :, 0]

        # Backtracking (Armijo) line search per row: a full Newton step can overshoot on near-separable data
        # (a model that wins nearly everything), where the log-likelihood is almost linear.
        slope = (grad * step).sum(axis=1)
        t = np.ones(rounds)
        accepted = np.zeros(rounds, dtype=bool)
        new_value = value
        for _ in range(40):
            candidate = objective(theta + t[:, None] * step)
            ok = candidate <= value + 1e-4 * t * slope + 1e-12 * np.abs(value)
            new_value = np.where(ok & ~accepted, candidate, new_value)
            accepted |= ok
            if accepted.all():
                break
            t = np.where(accepted, t, 0.5 * t)
        t = np.where(accepted, t, 0.0)  # a row that cannot improve has converged to rounding precision
        theta = theta + t[:, None] * step
        value = new_value
        if np.abs(step).max(initial=0.0) < tol:
            break
    else:
        warnings.warn("Bradley-Terry fit did not converge; raise max_iter", RuntimeWarning, stacklevel=3)
    return theta


def _to_ratings(
    theta: FloatArray,
    present: NDArray[np.bool_],
    models: list[str],
    *,
    anchor: str | None,
    scale: float,
    base: float,
    init_rating: float,
) -> FloatArray:
    """Map natural-scale strengths to Elo-style ratings; nan where a model had no battles in that row.

    Without an anchor the present models' mean is init_rating (what Arena's unanchored fit gives, since
    the ridge picks the zero-mean solution). With an anchor that model gets exactly init_rating; rows in
    which the anchor did not play cannot be anchored and become all-nan.
    """
    theta = np.where(present, theta, np.nan)
    if anchor is None:
        counts = present.sum(axis=1, keepdims=True)
        shift = np.nansum(theta, axis=1, keepdims=True) / np.maximum(counts, 1)
    else:
        shift = theta[:, [models.index(anchor)]]
    # P(a beats b) = 1 / (1 + base ** ((R_b - R_a) / scale)), so one natural unit is scale / ln(base).
    return init_rating + (theta - shift) * (scale / math.log(base))


def _check_scale(anchor: str | None, models: list[str], scale: float, base: float) -> None:
    if anchor is not None and anchor not in models:
        raise ValueError(f"anchor {anchor!r} has no battles")
    if not scale > 0 or not base > 1:
        raise ValueError("scale must be > 0 and base > 1")


def bradley_terry(
    battles: Sequence[Battle],
    *,
    anchor: str | None = None,
    scale: float = 400,
    base: float = 10,
    init_rating: float = 1000,
    max_iter: int = 200,
    ridge: float = DEFAULT_RIDGE,
) -> dict[str, float]:
    """Chatbot-Arena-style Bradley-Terry ratings by (near-unpenalised) maximum likelihood.

    Each battle is (model_a, model_b, outcome) with outcome 1.0 = a won, 0.0 = b won, 0.5 = tie; a tie
    counts as half a win for each side, as in Arena (any outcome in [0, 1] is accepted as a soft label).
    Ratings are on the Elo scale: a `scale`-point gap means `base`:1 odds. They average `init_rating`, or
    `anchor` gets exactly `init_rating` so that scores are comparable across fits sharing that model.
    Models in disconnected parts of the comparison graph are not comparable with each other; the ridge
    merely centres each part. Returns {} for no battles.
    """
    data = _PairData(battles)
    if data.n_battles == 0:
        return {}
    _check_scale(anchor, data.models, scale, base)
    n, s = data.pair_totals(data.kind_counts[None, :].astype(np.float64))
    theta = _fit_strengths(data.pair_i, data.pair_j, n, s, len(data.models), ridge=ridge, max_iter=max_iter)
    present = np.ones_like(theta, dtype=bool)
    ratings = _to_ratings(
        theta, present, data.models, anchor=anchor, scale=scale, base=base, init_rating=init_rating
    )[0]
    return {m: float(r) for m, r in zip(data.models, ratings, strict=True)}


def bootstrap_bt(
    battles: Sequence[Battle],
    *,
    rounds: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    **bt_kwargs: Any,
) -> list[dict[str, Any]]:
    """Leaderboard rows with percentile-bootstrap confidence intervals, best score first.

    Row keys: model, score (BT on all battles), ci_low/ci_high (percentiles of BT refitted on `rounds`
    resamples of the battles with replacement), battles/wins/losses/ties (raw tallies) and rank.
    `rank` is Arena's "Rank (UB)": 1 + the number of models whose ci_low is above this model's ci_high,
    so models that are not statistically separable share a rank instead of getting a spurious order.

    Resampling N battles with replacement is a multinomial draw over the distinct (pair, outcome) kinds,
    so every round is a count vector and all rounds are fitted together in one batched Newton solve.
    A model that is absent from a resample has no rating in that round (it is skipped, not imputed);
    so is every model in a round where the `anchor` is absent. `bt_kwargs` go to `bradley_terry`.
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if not 0.0 < ci < 1.0:
        raise ValueError("ci must lie strictly between 0 and 1")
    data = _PairData(battles)
    if data.n_battles == 0:
        return []
    anchor = bt_kwargs.get("anchor")
    scale = float(bt_kwargs.get("scale", 400))
    base = float(bt_kwargs.get("base", 10))
    init_rating = float(bt_kwargs.get("init_rating", 1000))
    max_iter = int(bt_kwargs.get("max_iter", 200))
    ridge = float(bt_kwargs.get("ridge", DEFAULT_RIDGE))
    unknown = set(bt_kwargs) - {"anchor", "scale", "base", "init_rating", "max_iter", "ridge"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
    _check_scale(anchor, data.models, scale, base)

    rng = np.random.default_rng(seed)
    kind_share = data.kind_counts / data.n_battles
    resampled = rng.multinomial(data.n_battles, kind_share, size=rounds).astype(np.float64)
    # Row 0 is the full data set so that the point estimate comes from the very same solver call.
    counts = np.vstack([data.kind_counts[None, :].astype(np.float64), resampled])
    n, s = data.pair_totals(counts)
    m = len(data.models)
    theta = _fit_strengths(data.pair_i, data.pair_j, n, s, m, ridge=ridge, max_iter=max_iter)
    present = (_sum_by_index(n, data.pair_i, m) + _sum_by_index(n, data.pair_j, m)) > 0
    ratings = _to_ratings(
        theta, present, data.models, anchor=anchor, scale=scale, base=base, init_rating=init_rating
    )
    score, boot = ratings[0], ratings[1:]

    tail = (1.0 - ci) / 2.0 * 100.0
    rows: list[dict[str, Any]] = []
    for k, model in enumerate(data.models):
        samples = boot[:, k][~np.isnan(boot[:, k])]
        if samples.size:
            low, high = np.percentile(samples, [tail, 100.0 - tail])
        else:  # possible only with very few rounds: say "unknown" rather than invent a width
            low = high = np.nan
        rows.append(
            {
                "model": model,
                "score": float(score[k]),
                "ci_low": float(low),
                "ci_high": float(high),
                "battles": int(data.appearances[k]),
                "wins": int(data.wins[k]),
                "losses": int(data.losses[k]),
                "ties": int(data.ties[k]),
            }
        )
    for row in rows:
        row["rank"] = 1 + sum(other["ci_low"] > row["ci_high"] for other in rows)
    rows.sort(key=lambda r: (-r["score"], r["model"]))
    return rows


# --------------------------------------------------------------------------------------------------------
# Rank correlation between groups
# --------------------------------------------------------------------------------------------------------


def rank_correlation(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall's tau-b between two score maps over the models they share (nan scores are skipped).

    tau-b rather than tau-a because leaderboards of small groups often contain exact ties. Returns nan
    when fewer than two models are shared or when either side ranks all shared models equal.
    """
    shared = sorted(k for k in a.keys() & b.keys() if not (math.isnan(a[k]) or math.isnan(b[k])))
    if len(shared) < 2:
        return math.nan
    x = np.array([a[k] for k in shared], dtype=np.float64)
    y = np.array([b[k] for k in shared], dtype=np.float64)
    iu = np.triu_indices(len(shared), k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    pairs = dx.size
    untied_x = pairs - int((dx == 0).sum())
    untied_y = pairs - int((dy == 0).sum())
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float((dx * dy).sum() / math.sqrt(untied_x * untied_y))


# --------------------------------------------------------------------------------------------------------
# Inter-rater reliability and agreement
# --------------------------------------------------------------------------------------------------------


def _is_missing(value: object) -> bool:
    # None is the documented marker; float nan is accepted too so numeric matrices can be passed as-is.
    return value is None or (isinstance(value, float) and math.isnan(value))


def krippendorff_alpha(data: Sequence[Sequence[Hashable | None]], level: str = "nominal") -> float:
    """Krippendorff's alpha for a units x coders reliability matrix (None = missing).

    Follows Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": build the coincidence
    matrix o_ck from every unit with at least two values (others are not pairable and are dropped), then
    alpha = 1 - (n - 1) * sum(o_ck * delta_ck) / sum(n_c * n_k * delta_ck).
    `level` is "nominal", "ordinal" (values must be sortable), "interval" or "ratio" (values numeric).
    Returns nan when alpha is undefined: no pairable values, or no expected disagreement because every
    pairable value is the same (agreement is then trivial, not evidence of reliability, so not 1.0).
    Rows may have different lengths; coder order within a row does not matter.
    """
    if level not in {"nominal", "ordinal", "interval", "ratio"}:
        raise ValueError(f"unknown level {level!r}; use nominal, ordinal, interval or ratio")
    units = [[v for v in row if not _is_missing(v)] for row in data]
    units = [u for u in units if len(u) >= 2]
    if not units:
        return math.nan

    values: list[Hashable] = list({v for u in units for v in u})
    if level != "nominal":
        values = sorted(cast(list[Any], values))  # orderable by contract for these levels
    index = {v: i for i, v in enumerate(values)}
    k = len(values)

    # counts[u, c]: how often value c occurs in unit u. Each unit contributes its ordered value pairs
    # (excluding a value paired with itself) weighted by 1 / (m_u - 1), which is the paper's o_ck.
    counts = np.zeros((len(units), k))
    for row, unit in enumerate(units):
        for v in unit:
            counts[row, index[v]] += 1
    weight = 1.0 / (counts.sum(axis=1) - 1.0)
    coincidence = (counts * weight[:, None]).T @ counts - np.diag((counts * weight[:, None]).sum(axis=0))
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()

    delta = _delta_squared(values, n_c, level)
    expected = float((np.outer(n_c, n_c) * delta).sum())
    if expected <= 0.0:
        return math.nan
    observed = float((coincidence * delta).sum())
    return 1.0 - (n - 1.0) * observed / expected


def _delta_squared(values: list[Hashable], n_c: FloatArray, level: str) -> FloatArray:
    """Squared difference function between every pair of values, as defined in Krippendorff (2011)."""
    k = len(values)
    if level == "nominal":
        return 1.0 - np.eye(k)
    if level == "ordinal":
        # (sum of n_g for g from c to k, minus half of n_c and n_k)^2: distance in the pooled rank order.
        cum = np.cumsum(n_c)
        between = cum[None, :] - cum[:, None] + n_c[:, None]  # sum_{g=c}^{k} n_g for c <= k
        between = np.where(np.arange(k)[None, :] >= np.arange(k)[:, None], between, between.T)
        return (between - (n_c[:, None] + n_c[None, :]) / 2.0) ** 2 * (1.0 - np.eye(k))
    x = np.array(values, dtype=np.float64)
    diff = x[:, None] - x[None, :]
    if level == "interval":
        return diff**2
    total = x[:, None] + x[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total != 0.0, diff / total, 0.0)
    return ratio**2


def _agreeing_pairs(labels: Iterable[Hashable | None]) -> tuple[int, int]:
    counts = Counter(v for v in labels if not _is_missing(v))
    m = sum(counts.values())
    return sum(c * (c - 1) // 2 for c in counts.values()), m * (m - 1) // 2


def pairwise_agreement(labels_by_item: Mapping[ItemT, Sequence[Hashable | None]]) -> float:
    """Share of agreeing label pairs among all unordered label pairs on the same item (None skipped).

    Pooled over items rather than averaged per item, so an item labelled by many people weighs more, as
    it contributes more evidence. Items with fewer than two labels have no pairs; nan if no item has any.
    """
    agree = total = 0
    for labels in labels_by_item.values():
        a, t = _agreeing_pairs(labels)
        agree += a
        total += t
    return agree / total if total else math.nan


def between_group_agreement(
    labels_a: Mapping[ItemT, Sequence[Hashable | None]],
    labels_b: Mapping[ItemT, Sequence[Hashable | None]],
) -> float:
    """Share of agreeing (label from group A, label from group B) pairs, pooled over shared items.

    Comparable to `pairwise_agreement` within each group: if groups agree with each other about as much
    as among themselves, they do not really differ. nan if no item has labels from both groups.
    """
    agree = total = 0
    for item in labels_a.keys() & labels_b.keys():
        count_a = Counter(v for v in labels_a[item] if not _is_missing(v))
        count_b = Counter(v for v in labels_b[item] if not _is_missing(v))
        agree += sum(c * count_b[v] for v, c in count_a.items())
        total += sum(count_a.values()) * sum(count_b.values())
    return agree / total if total else math.nan


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (e.g. reward-model accuracy on held-out judgments).

    Preferred over the normal approximation because it stays inside [0, 1] and is not zero-width at
    0/n or n/n, which is common for small groups. Returns (nan, nan) for n == 0.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
