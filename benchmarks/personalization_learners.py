"""Is the seen-user target reachable at all at the benchmark's data size? Learner-independent checks.

    .venv/bin/python benchmarks/personalization_learners.py                       # ufp, seed 0 (~3 min)
    .venv/bin/python benchmarks/personalization_learners.py --write BENCHMARKS.md  # also update that section

The personalized models reach about 0.933 of the Bayes-optimal accuracy on `ufp`'s seen users, whatever
the architecture. This harness asks whether that is the models or the data, on the benchmark's own split
(`personalization_bench.make_split`: 200 seen users × 50 labels), relative to Bayes-optimal:

1. **A well-specified learner on ever better features.** The simplest personalized reward that fits
   the generator's linear part, ``logit = Δ·w₀ + (Δ W)·θ_u`` (a rank-L user factorisation, MAP with a
   N(0, I) prior on θ_u spread over the user's labels and an L2 penalty λ on w₀, W), trained on the same
   10k labels with Δ = the pair's feature difference, for features that know progressively more of the
   generator: the raw 384-d embeddings; their projection on the generator's response subspace
   (attribute + nuisance directions: the noise dimensions removed); their projection on the attribute
   directions alone (the "linear features" of the ceiling section, topic mixing still in); and the true
   attributes themselves (topic mixing undone). Reported at the best λ of a small grid *chosen on the
   test pairs* — an optimistic figure for each feature set. Then the attribute directions again, told each
   pair's true topic, with only the topic mixing (a matrix per topic) left to learn.
2. **Where a trained model loses** (for each kind named): its seen-user accuracy as benchmarked; the
   same basis with each user's θ fitted on the true probabilities of 400 fresh pairs (what the learned
   basis can express at all); and the user's 50 labels under an oracle prior at the mean and covariance
   of those best-fit θ within the user's true type.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import add_report_arguments, publish, quoted_command  # noqa: E402
from personalization_bench import BenchConfig, _expected_acc, _score, make_split  # noqa: E402

from personalization.models.posterior import Posterior, link_fn  # noqa: E402
from personalization.schedule import cosine_lr  # noqa: E402
from personalization.synthetic import PRESETS, PairBatch, Population  # noqa: E402
from personalization.train import FitConfig, fit  # noqa: E402

SECTION = "## Personalized reward models: is the seen-user target reachable at 50 labels per user?"

def feature_sets(pop: Population) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """name → f(a, b) giving the (n, k) feature difference of two responses' embeddings."""
    subspace = torch.cat([pop.attr_dirs, pop.nuisance_dirs]).T  # (d, A + N), orthonormal columns
    attrs = pop.attr_dirs.T  # (d, A)
    return {
        "embeddings (384-d)": lambda a, b: a - b,
        "response subspace (attr + nuisance dirs)": lambda a, b: (a - b) @ subspace,
        "attribute directions (linear features)": lambda a, b: (a - b) @ attrs,
    }


def lowrank_linear_fit(x: torch.Tensor, user: torch.Tensor, n_users: int, latent: int, lam: float,
                       steps: int = 1500, lr: float = 1e-2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """MAP fit of logit = x·w₀ + (x W)·θ_u on rows x (N, k) where the first response won; returns
    (w₀, W, θ). The θ prior N(0, I) counts once per user (spread over their rows), like PAL's."""
    gen = torch.Generator().manual_seed(seed)
    k = x.shape[1]
    w0 = torch.zeros(k, requires_grad=True)
    w = (0.01 * torch.randn(k, latent, generator=gen)).requires_grad_(True)
    theta = torch.randn(n_users, latent, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([w0, w, theta], lr=lr)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr)
        logits = x @ w0 + ((x @ w) * theta[user]).sum(-1)
        loss = (F.softplus(-logits).mean() + 0.5 * (theta**2).sum() / x.shape[0]
                + lam * ((w**2).sum() + (w0**2).sum()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w0.detach(), w.detach(), theta.detach()


def _rel(pop: Population, users: Sequence[Any], tests: Sequence[PairBatch],
         predict: Callable[[int, PairBatch], torch.Tensor]) -> float:
    accs, bayes = [], []
    for i, (u, pairs) in enumerate(zip(users, tests, strict=True)):
        p_true = pop.prob(u, pairs)
        accs.append(_expected_acc(predict(i, pairs), p_true))
        bayes.append(torch.maximum(p_true, 1 - p_true))
    return float(torch.cat(accs).mean() / torch.cat(bayes).mean())


def learner_check(pop: Population, split: dict[str, Any], lams: Sequence[float] = (3e-4, 1e-3, 3e-3),
                  latent: int = 8, steps: int = 1500) -> list[dict[str, Any]]:
    """Part 1: the low-rank linear learner on each feature set; rows of (features, λ → seen rel)."""
    data = split["data"]
    n_users = len(data.user_ids)
    # Training rows are chosen − rejected. The split keeps embeddings only, so the true-attribute learner
    # gets its own draw of pairs and labels for the same users (true_attribute_check).
    rows: list[dict[str, Any]] = []
    for name, f in feature_sets(pop).items():
        x = f(data.chosen, data.rejected)
        by_lam = {}
        for lam in lams:
            w0, w, theta = lowrank_linear_fit(x, data.user, n_users, latent, lam, steps)

            def predict(i: int, pairs: PairBatch, w0=w0, w=w, theta=theta, f=f) -> torch.Tensor:
                d = f(pairs.a, pairs.b)
                return torch.sigmoid(d @ w0 + (d @ w) @ theta[i])

            by_lam[lam] = _rel(pop, split["seen"], split["seen_test"], predict)
        rows.append({"features": name, "by_lam": by_lam})
    rows.append(true_attribute_check(pop, split, lams, latent, steps))
    return rows


def unmixing_check(pop: Population, split: dict[str, Any], lam_us: Sequence[float] = (1e-2, 1e-3, 1e-4),
                   lam: float = 1e-3, latent: int = 8, steps: int = 2000, lr: float = 1e-2) -> dict[float, float]:
    """The learner on the attribute directions, given each pair's TRUE topic, with the topic mixing to
    learn: a per-topic matrix U_t (features x → (I + U_t) x, L2 penalty λ_U on U), jointly with w₀, W, θ.
    Everything of the generator is given except the mixing matrices themselves; returns λ_U → seen rel."""
    data = split["data"]
    topics = F.normalize(pop.topic_vecs, dim=-1)

    def topic_of(prompt: torch.Tensor) -> torch.Tensor:
        return (prompt @ topics.T).argmax(-1)  # exact on the generator's prompts (topic noise is small)

    attrs = pop.attr_dirs.T
    x = (data.chosen - data.rejected) @ attrs
    t_train = topic_of(data.prompt)
    k, n_users = x.shape[1], len(data.user_ids)
    out = {}
    for lam_u in lam_us:
        gen = torch.Generator().manual_seed(0)
        u_mix = torch.zeros(pop.config.n_topics, k, k, requires_grad=True)
        w0 = torch.zeros(k, requires_grad=True)
        w = (0.01 * torch.randn(k, latent, generator=gen)).requires_grad_(True)
        theta = torch.randn(n_users, latent, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([u_mix, w0, w, theta], lr=lr)
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, steps, lr)
            xu = x + torch.einsum("nij,nj->ni", u_mix[t_train], x)
            logits = xu @ w0 + ((xu @ w) * theta[data.user]).sum(-1)
            loss = (F.softplus(-logits).mean() + 0.5 * (theta**2).sum() / x.shape[0]
                    + lam * ((w**2).sum() + (w0**2).sum()) + lam_u * (u_mix**2).sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
        mix, b0, bw, th = (t.detach() for t in (u_mix, w0, w, theta))

        def predict(i: int, pairs: PairBatch, mix=mix, b0=b0, bw=bw, th=th) -> torch.Tensor:
            d = (pairs.a - pairs.b) @ attrs
            d = d + torch.einsum("nij,nj->ni", mix[topic_of(pairs.prompt)], d)
            return torch.sigmoid(d @ b0 + (d @ bw) @ th[i])

        out[lam_u] = _rel(pop, split["seen"], split["seen_test"], predict)
    return out


def true_attribute_check(pop: Population, split: dict[str, Any], lams: Sequence[float], latent: int,
                         steps: int) -> dict[str, Any]:
    """The same learner on the TRUE attributes (topic mixing undone): fresh labelled pairs drawn exactly
    as ``make_split`` draws them (same users, same counts), since the split keeps only embeddings."""
    g = torch.Generator().manual_seed(12345)
    scale = pop.config.label_scale
    xs, us, tests = [], [], []
    n_labels = int(torch.bincount(split["data"].user).max())
    for i, u in enumerate(split["seen"]):
        pairs = pop.sample_pairs(n_labels, g)
        win = pop.label(u, pairs, g).float().unsqueeze(1)
        diff = scale * (pairs.attrs_a - pairs.attrs_b)
        xs.append(diff * (2 * win - 1))  # chosen − rejected
        us.append(torch.full((n_labels,), i))
        tests.append(pop.sample_pairs(split["seen_test"][i].topic.shape[0], g))
    x, user = torch.cat(xs), torch.cat(us)
    by_lam = {}
    for lam in lams:
        w0, w, theta = lowrank_linear_fit(x, user, len(split["seen"]), latent, lam, steps)

        def predict(i: int, pairs: PairBatch, w0=w0, w=w, theta=theta) -> torch.Tensor:
            d = scale * (pairs.attrs_a - pairs.attrs_b)
            return torch.sigmoid(d @ w0 + (d @ w) @ theta[i])

        by_lam[lam] = _rel(pop, split["seen"], tests, predict)
    return {"features": "true attributes (topic mixing undone)", "by_lam": by_lam}


def _best_fit_theta(model: Any, pop: Population, user: Any, start: torch.Tensor, g: torch.Generator,
                    n_pairs: int = 400) -> torch.Tensor:
    """θ maximising the likelihood of the user's TRUE probabilities on fresh pairs, through the model."""
    pairs = pop.sample_pairs(n_pairs, g)
    d = model.pair_deltas(pairs.prompt, pairs.a, pairs.b)
    target = pop.prob(user, pairs)
    theta = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = d.db + link_fn(model.link, theta) @ d.dg.T
        loss = F.binary_cross_entropy_with_logits(logits, target) + 1e-4 * (theta**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach()


def basis_check(pop: Population, split: dict[str, Any], model: Any, seed: int = 0) -> dict[str, float]:
    """Part 2 for one trained model: benchmarked seen rel, best-fit-θ rel, oracle-type-prior rel."""
    users, tests, data = split["seen"], split["seen_test"], split["data"]

    def score(posts: list[Posterior]) -> float:
        return _score(pop, model, users, posts, tests, torch.Generator().manual_seed(seed + 7))["rel"]

    benchmarked = score([model.user_posterior(u.id) for u in users])
    g = torch.Generator().manual_seed(seed + 900)
    latent = model.latent_dim
    best = torch.stack([_best_fit_theta(model, pop, u, model.user_posterior(u.id).mean, g) for u in users])
    cap = score([Posterior(best[i], 1e-6 * torch.eye(latent), 0, u.id) for i, u in enumerate(users)])
    types = torch.tensor([u.type for u in users])
    posts = []
    for i, u in enumerate(users):
        same = best[types == u.type]
        cov = torch.cov(same.T) + 1e-3 * torch.eye(latent) if same.shape[0] > latent else torch.eye(latent)
        rows = data.user == i
        posts.append(model.posterior((data.prompt[rows], data.chosen[rows], data.rejected[rows]),
                                     start=Posterior(same.mean(0), cov, 0, u.id)))
    return {"benchmarked": benchmarked, "best_fit": cap, "oracle_type_prior": score(posts)}


def markdown(pop_name: str, bayes: float, learners: list[dict[str, Any]], unmixing: dict[float, float],
             bases: dict[str, dict[str, float]], cfg: BenchConfig, command: str, machine: str, date: str) -> str:
    lams = list(learners[0]["by_lam"]) if learners else []
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. Date: {date}. Torch {torch.__version__}.  ",
        f"Population: `{pop_name}` (Bayes-optimal accuracy {bayes:.3f}), the benchmark's split: "
        f"{cfg.n_train_users} seen users × {cfg.pairs_per_user} labels, {cfg.test_pairs} test pairs each. "
        "All figures are seen-user accuracy relative to Bayes-optimal. Harness: "
        "`benchmarks/personalization_learners.py`.",
        "",
        "A low-rank linear learner (logit = Δ·w₀ + (ΔW)·θ_u, rank 8, MAP) on the same labels, on features "
        "that know more and more of the generator (λ = L2 penalty; the best λ is picked on the test pairs, "
        "so the last column is optimistic):",
        "",
        "| features | " + " | ".join(f"λ={lam:g}" for lam in lams) + " | best |",
        "|---|" + "---|" * (len(lams) + 1),
    ]
    for row in learners:
        vals = [row["by_lam"][lam] for lam in lams]
        lines.append(f"| {row['features']} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {max(vals):.3f} |")
    if unmixing:
        lines += [
            "",
            "The same learner on the attribute directions, told each pair's true topic, learning only the "
            "topic mixing (a 6×6 matrix per topic, L2 penalty λ_U) with the rest (λ = 0.001):",
            "",
            "| " + " | ".join(f"λ_U={lu:g}" for lu in unmixing) + " | best |",
            "|" + "---|" * (len(unmixing) + 1),
            "| " + " | ".join(f"{v:.3f}" for v in unmixing.values()) + f" | {max(unmixing.values()):.3f} |",
        ]
    if bases:
        lines += [
            "",
            "Where the trained models lose (same split; `fit` with the benchmark's settings):",
            "",
            "| model | seen rel (benchmarked) | same basis, θ fitted on true probabilities (basis cap) | "
            "50 labels under an oracle prior at the user's true type |",
            "|---|---|---|---|",
        ]
        for kind, b in bases.items():
            lines.append(f"| {kind} | {b['benchmarked']:.3f} | {b['best_fit']:.3f} | {b['oracle_type_prior']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", default="ufp", choices=sorted(PRESETS))
    ap.add_argument("--kinds", default="vpl,pal", help="trained models for part 2 ('' skips it)")
    ap.add_argument("--seed", type=int, default=0)
    add_report_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = BenchConfig(seed=args.seed, fit=FitConfig(progress=False))
    pop = Population(PRESETS[args.population](seed=args.seed))
    split = make_split(pop, cfg)
    t0 = time.perf_counter()
    learners = learner_check(pop, split)
    unmixing = unmixing_check(pop, split)
    print(f"[learners] {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    bases = {}
    for kind in [k for k in args.kinds.split(",") if k]:
        model = fit(kind, split["data"], split["profiles"], cfg.fit, device="cpu", seed=args.seed)
        bases[kind] = basis_check(pop, split, model, args.seed)
        print(f"[basis] {kind}: {bases[kind]}", file=sys.stderr)
    bayes = float(torch.cat([torch.maximum(p := pop.prob(u, t), 1 - p)
                             for u, t in zip(split["seen"], split["seen_test"], strict=True)]).mean())
    command = quoted_command("benchmarks/personalization_learners.py", argv if argv is not None else sys.argv[1:])
    text = markdown(args.population, bayes, learners, unmixing, bases, cfg, command, args.machine, args.date)
    publish(text, section=SECTION, write=args.write, json_path=None, raw=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
