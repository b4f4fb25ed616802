"""Where the seen-user accuracy of the personalized models is lost: oracle bounds and a data curve.

    .venv/bin/python benchmarks/personalization_ceiling.py                       # ufp, seed 0 (~6 min)
    .venv/bin/python benchmarks/personalization_ceiling.py --write BENCHMARKS.md  # also update that section

Two parts, both on a population from ``personalization.synthetic`` and reported relative to the
Bayes-optimal accuracy (the predictor that knows every user's true weights):

1. **Oracle bounds** — predictors given privileged knowledge of the generator, fitted by logistic
   regression on (Δ) features of each pair:
   * on the TRUE attributes: each user's type weights only (no individual deviation); per-user weights
     estimated from the same number of labels a seen user has, with a flat prior or with a prior centred
     on the user's (known) type;
   * on LINEAR features of the embeddings (their projection on the attribute directions, i.e. what a
     reward linear in the response embedding can see, without the topic-dependent mixing undone):
     the best weights per type and per user, fitted on thousands of pairs with their true probabilities,
     and per-user weights from a seen user's labels with the known type's weights as prior.
2. **Data curve** — the benchmark's split with more labels per seen user (same number of users), for
   the models named, to separate what more data buys from what the architecture caps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import add_report_arguments, publish, quoted_command  # noqa: E402
from personalization_bench import BenchConfig, _score, make_split  # noqa: E402

from personalization.synthetic import PRESETS, PairBatch, Population  # noqa: E402
from personalization.train import FitConfig, fit  # noqa: E402

SECTION = "## Personalized reward models: where seen-user accuracy is lost"


def _expected(p_pred: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
    pick = (p_pred > 0.5).float()
    return (pick * p_true + (1 - pick) * (1 - p_true)).mean()


def _fit_logistic(x: torch.Tensor, target: torch.Tensor, mu: torch.Tensor | None = None,
                  std: float | None = None) -> torch.Tensor:
    """Weights w maximising Σ log σ(±x·w) against soft or hard targets, with an optional N(mu, std²) prior."""
    w = (torch.zeros(x.shape[1]) if mu is None else mu.clone()).requires_grad_(True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")
    tgt = target.expand(x.shape[0]) if target.dim() == 0 else target

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w, tgt, reduction="sum")
        if mu is not None and std is not None:
            loss = loss + ((w - mu) ** 2).sum() / (2 * std * std)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def linear_features(pop: Population, pairs: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The embeddings' coordinates along the attribute directions (what a linear reward can read)."""
    return pairs.a @ pop.attr_dirs.T, pairs.b @ pop.attr_dirs.T


def oracle_bounds(pop: Population, n_users: int, n_labels: int, n_test: int, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed + 500)
    users = pop.draw_users(n_users, g, prefix="oracle")
    test = pop.sample_pairs(n_test, g)
    scale = pop.config.label_scale
    x_true = scale * (test.attrs_a - test.attrs_b)
    fa, fb = linear_features(pop, test)
    x_lin = fa - fb
    probs = [pop.prob(u, test) for u in users]
    bayes = torch.stack([torch.maximum(p, 1 - p).mean() for p in probs]).mean()
    out: dict[str, list[torch.Tensor]] = {k: [] for k in
                                          ("true_type", "true_user_flat", "true_user_type_prior",
                                           "linear_type", "linear_user", "linear_user_type_prior")}
    # Linear features: the best weights per type (pooled true probabilities) and per user.
    type_w: dict[int, torch.Tensor] = {}
    for t in range(pop.n_types):
        members = [i for i, u in enumerate(users) if u.type == t]
        if not members:
            continue
        targets = torch.stack([probs[i] for i in members])
        type_w[t] = _fit_logistic(x_lin.repeat(len(members), 1), targets.reshape(-1))
        pred = torch.sigmoid(x_lin @ type_w[t])
        out["linear_type"] += [_expected(pred, probs[i]) for i in members]
    user_w = [_fit_logistic(x_lin, p) for p in probs]
    spread = {t: float(torch.stack([user_w[i] - w for i, u in enumerate(users) if u.type == t]).std())
              for t, w in type_w.items()}
    for i, (u, p_true) in enumerate(zip(users, probs, strict=True)):
        base = pop.type_weights[u.type]
        out["true_type"].append(_expected(torch.sigmoid(x_true @ base), p_true))
        train = pop.sample_pairs(n_labels, g)
        x_tr = scale * (train.attrs_a - train.attrs_b)
        y = pop.label(u, train, g).float()
        w_flat = _fit_logistic(x_tr, y, torch.zeros_like(base), 3.0)
        out["true_user_flat"].append(_expected(torch.sigmoid(x_true @ w_flat), p_true))
        std = pop.config.individual_std * float(base.norm())
        w_typed = _fit_logistic(x_tr, y, base, std)
        out["true_user_type_prior"].append(_expected(torch.sigmoid(x_true @ w_typed), p_true))
        out["linear_user"].append(_expected(torch.sigmoid(x_lin @ user_w[i]), p_true))
        # The same 50 labels, read through the linear features, with the type's linear weights as prior.
        la, lb = linear_features(pop, train)
        w_lin = _fit_logistic(la - lb, y, type_w[u.type], spread[u.type])
        out["linear_user_type_prior"].append(_expected(torch.sigmoid(x_lin @ w_lin), p_true))
    return {k: float(torch.stack(v).mean() / bayes) for k, v in out.items()} | {"bayes": float(bayes)}


def data_curve(pop_name: str, labels: list[int], kinds: list[str], n_users: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    for n_labels in labels:
        cfg = BenchConfig(n_train_users=n_users, pairs_per_user=n_labels, context_sizes=(10,),
                          kinds=tuple(kinds), fit=FitConfig(progress=False), seed=seed)
        pop = Population(PRESETS[pop_name](seed=seed))
        split = make_split(pop, cfg)
        for kind in kinds:
            t0 = time.perf_counter()
            model = fit(kind, split["data"], split["profiles"], cfg.fit, device="cpu", seed=seed)
            fit_s = time.perf_counter() - t0
            posts = [model.user_posterior(u.id) for u in split["seen"]]
            seen = _score(pop, model, split["seen"], posts, split["seen_test"], torch.Generator().manual_seed(seed + 7))
            rows.append({"labels": n_labels, "pairs": len(split["data"]), "kind": kind, "seen": seen["rel"],
                         "fit_s": fit_s})
            print(f"[curve] {n_labels} labels/user {kind}: seen {seen['rel']:.3f} ({fit_s:.0f}s)", file=sys.stderr)
    return rows


def markdown(pop_name: str, bounds: dict[str, float], curve: list[dict[str, Any]], n_labels: int,
             command: str, machine: str, date: str) -> str:
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. Date: {date}. Torch {torch.__version__}.  ",
        f"Population: `{pop_name}` (Bayes-optimal accuracy {bounds['bayes']:.3f}); all figures relative to it.",
        "",
        "Oracle bounds (privileged predictors, fitted by logistic regression; harness "
        "`benchmarks/personalization_ceiling.py`):",
        "",
        "| predictor | rel. accuracy |",
        "|---|---|",
        f"| true attributes, each user's TYPE weights (no individual deviation) | {bounds['true_type']:.3f} |",
        f"| true attributes, per-user weights from {n_labels} labels, flat prior | {bounds['true_user_flat']:.3f} |",
        f"| true attributes, per-user weights from {n_labels} labels, prior centred on the known type | "
        f"{bounds['true_user_type_prior']:.3f} |",
        f"| linear embedding features, best weights per TYPE (fitted on true probabilities) | "
        f"{bounds['linear_type']:.3f} |",
        f"| linear embedding features, best weights per USER (fitted on true probabilities) | "
        f"{bounds['linear_user']:.3f} |",
        f"| linear embedding features, per-user weights from {n_labels} labels, prior at the known type's best "
        f"linear weights (spread of the users around them) | {bounds['linear_user_type_prior']:.3f} |",
        "",
        "Data curve: the benchmark's split with more labels per seen user (same users, same test pairs per user):",
        "",
        "| labels per seen user | training pairs | model | seen rel | fit s |",
        "|---|---|---|---|---|",
    ]
    for row in curve:
        lines.append(f"| {row['labels']} | {row['pairs']} | {row['kind']} | {row['seen']:.3f} | {row['fit_s']:.0f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", default="ufp", choices=sorted(PRESETS))
    ap.add_argument("--labels", default="50,100,200", help="labels per seen user for the data curve")
    ap.add_argument("--kinds", default="pal,vpl", help="models for the data curve ('' skips it)")
    ap.add_argument("--users", type=int, default=200, help="seen users in the data curve")
    ap.add_argument("--oracle-users", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    add_report_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    labels = [int(x) for x in args.labels.split(",") if x]
    pop = Population(PRESETS[args.population](seed=args.seed))
    bounds = oracle_bounds(pop, args.oracle_users, labels[0] if labels else 50, 2000, args.seed)
    kinds = [k for k in args.kinds.split(",") if k]
    curve = data_curve(args.population, labels, kinds, args.users, args.seed) if kinds else []
    command = quoted_command("benchmarks/personalization_ceiling.py", argv if argv is not None else sys.argv[1:])
    text = markdown(args.population, bounds, curve, labels[0] if labels else 50, command, args.machine, args.date)
    publish(text, section=SECTION, write=args.write, json_path=None, raw=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
