"""Numbers behind the study dashboard, sliced by any profile field. Pure reads; JSON-ready output.

Everything a chart shows is in this dict, so the page, its tables and the API can never disagree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import median
from typing import Any

import numpy as np
import torch
from django.db.models import Count

from feedback.models import Annotator, Assignment, Candidate, Judgment, Pair, Study, text_hash
from feedback.profile_schema import PREFER_NOT, STATED_PREFS, group_value, groupable_fields
from personalization.profiles import STATED_PREF_ATTRIBUTES
from training import stats
from training.embeddings import load_vectors, prompt_text
from training.models import AnnotatorPosterior, ModelVersion
from training.selectors import active_version, load_version_model

BOOTSTRAP_ROUNDS = 200
# Which visible response attribute reveals each stated preference, and in which direction, is
# personalization.profiles.STATED_PREF_ATTRIBUTES: the one mapping, which the simulated annotators'
# sliders (personalization.synthetic) echo too.
_LENGTH = {"short": 0.0, "medium": 0.5, "long": 1.0}


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else x


def _clean(obj: Any) -> Any:
    """JSON has no NaN: undefined statistics become null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return _nan_to_none(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _judgment_rows(study: Study) -> list[dict[str, Any]]:
    qs = (
        Judgment.objects.filter(pair__study=study)
        .order_by("id")
        .values(
            "id", "annotator_id", "pair_id", "choice", "shown_order", "time_ms",
            "pair__candidate_a__model_name", "pair__candidate_b__model_name", "pair__gold_choice",
        )
    )
    return [dict(r) for r in qs]


def _leaderboard(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    battles = []
    for r in rows:
        a, b = r["pair__candidate_a__model_name"], r["pair__candidate_b__model_name"]
        if not a or not b or a == b:
            continue  # data without model names (e.g. hh-rlhf) has no leaderboard
        if r["choice"] == "bad" or r.get("pair__gold_choice"):
            continue  # "both bad" says nothing about which is better; gold pairs are quality checks
        outcome = 1.0 if r["choice"] == "a" else 0.0 if r["choice"] == "b" else 0.5
        battles.append((a, b, outcome))
    if not battles:
        return []
    return stats.bootstrap_bt(battles, rounds=BOOTSTRAP_ROUNDS, seed=0, ridge=1.0)


def _agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_pair: dict[int, list[str]] = defaultdict(list)
    for r in rows:
        by_pair[r["pair_id"]].append(r["choice"])
    coders: dict[int, dict[int, str]] = defaultdict(dict)
    annotators: list[int] = []
    for r in rows:
        coders[r["pair_id"]][r["annotator_id"]] = r["choice"]
        annotators.append(r["annotator_id"])
    ann_index = {a: i for i, a in enumerate(dict.fromkeys(annotators))}
    matrix = []
    for labels in coders.values():
        if len(labels) < 2:
            continue
        row: list[str | None] = [None] * len(ann_index)
        for a, c in labels.items():
            row[ann_index[a]] = c
        matrix.append(row)
    return {
        "pairwise": stats.pairwise_agreement(by_pair),
        "alpha": stats.krippendorff_alpha(matrix) if matrix else float("nan"),
        "items": sum(1 for v in by_pair.values() if len(v) >= 2),
    }


def _profiles(study: Study) -> dict[int, dict[str, Any]]:
    return {
        a.pk: (a.profile.data if hasattr(a, "profile") else {})
        for a in Annotator.objects.filter(study=study).select_related("profile")
    }


def _posteriors(version: ModelVersion | None) -> dict[int, np.ndarray]:
    if version is None:
        return {}
    return {
        s.annotator_id: np.asarray(s.state.get("mean", []), dtype=np.float64)
        for s in AnnotatorPosterior.objects.filter(model_version=version)
        if s.state.get("mean")
    }


def _latent_map(means: dict[int, np.ndarray], groups: dict[int, str], pseudonyms: dict[int, str]) -> list[dict]:
    """2-D PCA of posterior means (the latent space itself is learned, so only relative positions matter)."""
    ids = [a for a, m in means.items() if m.size]
    if not ids:
        return []
    X = np.stack([means[a] for a in ids])
    if X.shape[1] == 0:
        return []
    Xc = X - X.mean(axis=0)
    if len(ids) >= 2 and np.abs(Xc).sum() > 0:
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        coords = Xc @ vt[: min(2, vt.shape[0])].T
    else:
        coords = Xc[:, :2]
    if coords.shape[1] == 1:
        coords = np.hstack([coords, np.zeros((len(ids), 1))])
    return [
        {"annotator": pseudonyms[a], "x": float(coords[i, 0]), "y": float(coords[i, 1]), "group": groups.get(a, "")}
        for i, a in enumerate(ids)
    ]


def _attribute_value(meta: dict[str, Any], attr: str) -> float | None:
    if ":" in attr:
        key, wanted = attr.split(":", 1)
        return None if key not in meta else float(str(meta[key]) == wanted)
    value = meta.get(attr)
    if attr == "length" and isinstance(value, str):
        return _LENGTH.get(value)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _revealed(study: Study, version: ModelVersion | None, annotator_ids: list[int]) -> dict[int, dict[str, float]]:
    """Per annotator and stated preference: correlation between their model's reward of each candidate and
    the visible attribute that reveals the preference, signed so that positive means "prefers what a high
    slider says" (for helpfulness, "directly answering": SHORTER answers)."""
    if version is None or not annotator_ids:
        return {}
    cands = list(Candidate.objects.filter(prompt__study=study).select_related("prompt")[:2000])
    attrs = {name: [_attribute_value(c.metadata or {}, attr) for c in cands]
             for name, (attr, _) in STATED_PREF_ATTRIBUTES.items()}
    attrs = {k: v for k, v in attrs.items() if sum(x is not None for x in v) >= 5}
    if not attrs:
        return {}
    model = load_version_model(version)
    p_hash = [text_hash(prompt_text(c.prompt)) for c in cands]
    vecs = load_vectors(p_hash + [c.text_hash for c in cands])
    ok = [i for i, c in enumerate(cands) if p_hash[i] in vecs and c.text_hash in vecs]
    if len(ok) < 5:
        return {}
    P = torch.from_numpy(np.stack([vecs[p_hash[i]] for i in ok]))
    R = torch.from_numpy(np.stack([vecs[cands[i].text_hash] for i in ok]))
    from personalization import Posterior

    out: dict[int, dict[str, float]] = {}
    for s in AnnotatorPosterior.objects.filter(model_version=version, annotator_id__in=annotator_ids):
        rewards = model.reward(Posterior.from_dict(s.state), P, R, scaled=False).numpy()
        row = {}
        for name, values in attrs.items():
            xs = np.array([values[i] if values[i] is not None else np.nan for i in ok])
            mask = ~np.isnan(xs)
            if mask.sum() >= 5 and xs[mask].std() > 0 and rewards[mask].std() > 0:
                sign = STATED_PREF_ATTRIBUTES[name][1]
                row[name] = sign * float(np.corrcoef(xs[mask], rewards[mask])[0, 1])
        out[s.annotator_id] = row
    return out


def _quality_flags(study: Study, rows: list[dict[str, Any]], profiles: dict[int, dict], pseudonyms: dict[int, str]):
    by_ann: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_ann[r["annotator_id"]].append(r)
    repeats = defaultdict(list)
    # A repeated pair (shown again, sides swapped: Assignment.is_repeat, scheduled at the study's
    # repeat_rate) is consistent when both choices agree in pair terms.
    repeated = set(
        Assignment.objects.filter(annotator__study=study, is_repeat=True, judgment__isnull=False)
        .values_list("annotator_id", "pair_id")
    )
    for a_id, pair_id, choice in Assignment.objects.filter(
        annotator__study=study, judgment__isnull=False
    ).values_list("annotator_id", "pair_id", "judgment__choice"):
        if (a_id, pair_id) in repeated:
            repeats[(a_id, pair_id)].append(choice)
    flags = []
    for a_id, js in by_ann.items():
        times = [j["time_ms"] for j in js if j["time_ms"] is not None]
        sided = [j for j in js if j["choice"] not in ("tie", "bad") and not j.get("pair__gold_choice")]
        gold = [j["choice"] == j["pair__gold_choice"] for j in js if j.get("pair__gold_choice")]
        gold_share = sum(gold) / len(gold) if gold else None
        left = sum(1 for j in sided if (j["choice"] == "a") == (j["shown_order"] == "ab"))
        left_share = left / len(sided) if sided else None
        rep = [v for (a, _), v in repeats.items() if a == a_id and len(v) >= 2]
        consistency = (sum(1 for v in rep if len(set(v)) == 1) / len(rep)) if rep else None
        prefs = (profiles.get(a_id) or {}).get("stated_prefs") or {}
        at_default = bool(prefs) and all(v == 50 for v in prefs.values() if v != PREFER_NOT)
        median_ms = median(times) if times else None
        issues = []
        if median_ms is not None and median_ms < 3000:
            issues.append("fast")
        if left_share is not None and len(sided) >= 8 and not 0.2 <= left_share <= 0.8:
            issues.append("side-bias")
        if consistency is not None and consistency < 0.5:
            issues.append("inconsistent")
        if at_default:
            issues.append("sliders-at-default")
        # Attention checks have one right answer: missing more than one in four (or any of the first few).
        if gold and (gold_share is not None and gold_share < 0.75 or (len(gold) < 4 and not all(gold))):
            issues.append("failed-attention")
        flags.append({
            "annotator": pseudonyms[a_id], "judgments": len(js), "median_time_ms": median_ms,
            "left_share": left_share, "consistency": consistency, "repeats": len(rep),
            "sliders_at_default": at_default, "flags": issues,
            "gold": len(gold), "gold_correct": gold_share,
        })
    return sorted(flags, key=lambda f: (-len(f["flags"]), f["annotator"]))


def _between_or_within(by_pair_group: dict[str, dict[int, list[str]]], a: str, b: str) -> float:
    """One cell of the between-group agreement matrix; the diagonal is the WITHIN-group figure.

    between_group_agreement(g, g) would pair every label with itself (100% with a single label per
    item), so the diagonal uses pairwise_agreement: distinct label pairs within the group, nan (blank)
    when no item has two labels — the same number as the group's row in the within-group table.
    """
    if a == b:
        return stats.pairwise_agreement(by_pair_group[a])
    return stats.between_group_agreement(by_pair_group[a], by_pair_group[b])


def _accuracy_by_group(version: ModelVersion | None, field: str) -> dict[str, dict[str, Any]]:
    if version is None:
        return {}
    return (version.metrics.get("groups") or {}).get(field, {})


def _cross_group_accuracy(
    version: ModelVersion | None, study: Study, rows: list[dict], groups: dict[int, str], means: dict[int, np.ndarray]
) -> dict[str, Any]:
    """Group A's model (the mean latent of A's annotators) predicting group B's judgments."""
    if version is None or not means or not rows:
        return {}
    from personalization import Posterior

    model = load_version_model(version)
    names = sorted({groups[a] for a in means})
    centroids = {}
    for g in names:
        members = [means[a] for a in means if groups.get(a) == g]
        mean = np.mean(members, axis=0)
        centroids[g] = Posterior(torch.tensor(mean, dtype=torch.float32), torch.zeros(len(mean), len(mean)))
    sided = [r for r in rows if r["choice"] not in ("tie", "bad") and groups.get(r["annotator_id"]) in names]
    if not sided:
        return {}
    pairs = {p.pk: p for p in Pair.objects.filter(id__in={r["pair_id"] for r in sided}).select_related(
        "prompt", "candidate_a", "candidate_b")}
    p_hash = {pid: text_hash(prompt_text(p.prompt)) for pid, p in pairs.items()}
    vecs = load_vectors(list(p_hash.values()) + [c.text_hash for p in pairs.values() for c in (p.candidate_a, p.candidate_b)])
    usable = [r for r in sided if p_hash[r["pair_id"]] in vecs and pairs[r["pair_id"]].candidate_a.text_hash in vecs
              and pairs[r["pair_id"]].candidate_b.text_hash in vecs]
    if not usable:
        return {}
    P = torch.from_numpy(np.stack([vecs[p_hash[r["pair_id"]]] for r in usable]))
    A = torch.from_numpy(np.stack([vecs[pairs[r["pair_id"]].candidate_a.text_hash] for r in usable]))
    B = torch.from_numpy(np.stack([vecs[pairs[r["pair_id"]].candidate_b.text_hash] for r in usable]))
    truth = np.array([r["choice"] == "a" for r in usable])
    target_group = np.array([groups[r["annotator_id"]] for r in usable])
    matrix: dict[str, dict[str, float | None]] = {}
    for g in names:
        pred = model.predict_proba(centroids[g], P, A, B)[0].numpy() > 0.5
        matrix[g] = {}
        for h in names:
            mask = target_group == h
            matrix[g][h] = float((pred[mask] == truth[mask]).mean()) if mask.any() else None
    return {"groups": names, "matrix": matrix, "note": "in-sample: judgments these posteriors were fitted on"}


def study_dashboard(study: Study, group_by: str = "gender") -> dict[str, Any]:
    if group_by not in groupable_fields():
        raise ValueError(f"cannot group by {group_by!r}; choose one of {groupable_fields()}")
    rows = _judgment_rows(study)
    profiles = _profiles(study)
    pseudonyms = dict(Annotator.objects.filter(study=study).values_list("id", "pseudonym"))
    groups = {a: group_value(profiles.get(a) or {}, group_by) for a in pseudonyms}
    version = active_version(study.pk)
    means = _posteriors(version)
    acc_groups = _accuracy_by_group(version, group_by)

    rows_by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        rows_by_group[groups.get(r["annotator_id"], "unanswered")].append(r)
    annotators_by_group: dict[str, int] = defaultdict(int)
    for g in groups.values():
        annotators_by_group[g] += 1

    out_groups = []
    leaderboards: dict[str, dict[str, float]] = {}
    for name in sorted(set(annotators_by_group) | set(rows_by_group)):
        g_rows = rows_by_group.get(name, [])
        board = _leaderboard(g_rows)
        leaderboards[name] = {b["model"]: b["score"] for b in board}
        acc = acc_groups.get(name, {})
        out_groups.append({
            "name": name,
            "annotators": annotators_by_group.get(name, 0),
            "judgments": len(g_rows),
            "leaderboard": board,
            "agreement": _agreement(g_rows),
            "reward_accuracy": {
                "personalized": acc.get("accuracy"),
                "population": acc.get("accuracy_population"),
                "n_heldout": acc.get("n", 0),
            },
        })
    names: list[str] = [str(g["name"]) for g in out_groups]
    by_pair_group: dict[str, dict[int, list[str]]] = {n: defaultdict(list) for n in names}
    for n in names:
        for r in rows_by_group.get(n, []):
            by_pair_group[n][r["pair_id"]].append(r["choice"])
    between = {a: {b: _between_or_within(by_pair_group, a, b) for b in names} for a in names}
    rank_corr = {a: {b: stats.rank_correlation(leaderboards[a], leaderboards[b]) for b in names} for a in names}

    pair_stats = Pair.objects.filter(study=study).aggregate(n=Count("id"))
    complete = Pair.objects.filter(study=study, n_judgments__gte=study.overlap_target).count()
    revealed = _revealed(study, version, list(means))
    stated_vs_revealed = _stated_vs_revealed(profiles, revealed, groups)
    result = {
        "study": {"id": study.pk, "name": study.name, "overlap_target": study.overlap_target},
        "group_by": group_by,
        "fields": groupable_fields(),
        "progress": {
            "judgments": len(rows),
            "annotators": len(pseudonyms),
            "pairs": pair_stats["n"],
            "pairs_complete": complete,
            "target_judgments": pair_stats["n"] * study.overlap_target,
        },
        "overall": {
            "leaderboard": _leaderboard(rows),
            "agreement": _agreement(rows),
            "reward_accuracy": {
                "personalized": (version.metrics.get("accuracy") if version else None),
                "population": (version.metrics.get("accuracy_population") if version else None),
                "n_heldout": (version.metrics.get("n_heldout", 0) if version else 0),
            },
        },
        "groups": out_groups,
        "between_group_agreement": between,
        "rank_correlation": rank_corr,
        "cross_group_accuracy": _cross_group_accuracy(version, study, rows, groups, means),
        "latent_map": _latent_map(means, groups, pseudonyms),
        "stated_vs_revealed": stated_vs_revealed,
        "quality": _quality_flags(study, rows, profiles, pseudonyms),
        "model_version": (
            {"id": version.pk, "kind": version.kind, "finished_at": version.finished_at.isoformat()
             if version.finished_at else None} if version else None
        ),
    }
    return _clean(result)


def _revealed_by(stated: str) -> str | None:
    """The attribute that reveals a stated preference, "−" in front where less of it is what the slider asks."""
    if stated not in STATED_PREF_ATTRIBUTES:
        return None
    attr, sign = STATED_PREF_ATTRIBUTES[stated]
    return attr if sign > 0 else f"−{attr}"


def _stated_vs_revealed(
    profiles: dict[int, dict], revealed: dict[int, dict[str, float]], groups: dict[int, str]
) -> dict[str, Any]:
    """Per stated-preference attribute: correlation across annotators of slider vs revealed weight."""
    attributes = []
    for attr, label in STATED_PREFS:
        pts = []
        for a, row in revealed.items():
            stated = ((profiles.get(a) or {}).get("stated_prefs") or {}).get(attr)
            if isinstance(stated, int) and attr in row:
                pts.append((stated, row[attr], groups.get(a, "")))
        per_group = defaultdict(list)
        for s, r, g in pts:
            per_group[g].append((s, r))

        def corr(values: list[tuple[int, float]]) -> float | None:
            if len(values) < 3:
                return None
            x, y = np.array([v[0] for v in values], float), np.array([v[1] for v in values], float)
            return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None

        attributes.append({
            "attribute": attr,
            "label": label,
            "revealed_by": _revealed_by(attr),
            "n": len(pts),
            "correlation": corr([(s, r) for s, r, _ in pts]),
            "by_group": {g: {"n": len(v), "correlation": corr(v),
                             "mean_stated": float(np.mean([s for s, _ in v])),
                             "mean_revealed": float(np.mean([r for _, r in v]))} for g, v in per_group.items()},
        })
    return {"attributes": attributes}
