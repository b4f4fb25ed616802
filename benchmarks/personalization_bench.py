"""Benchmark of personalized reward models (bt / vpl / pal) on synthetic pluralistic populations.

    .venv/bin/python benchmarks/personalization_bench.py            # full run (a few minutes, 2 CPU cores)
    .venv/bin/python benchmarks/personalization_bench.py --quick    # smoke run (< 1 min)
    .venv/bin/python benchmarks/personalization_bench.py --write BENCHMARKS.md   # also update that section

Accuracies are *expected* accuracies against the users' true preference probabilities (less noisy than
sampled labels) and are reported relative to the Bayes-optimal accuracy (a predictor knowing each user's
true reward). Calibration (ECE, Brier) uses sampled labels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import add_report_arguments, publish, quoted_command, targets_table  # noqa: E402

from personalization.models import ModelConfig  # noqa: E402
from personalization.synthetic import PRESETS, Population, PopulationConfig, labelled  # noqa: E402
from personalization.train import FitConfig, PreferenceData, fit  # noqa: E402

SECTION = "## Personalized reward models"
CONTEXT_SIZES = (0, 1, 2, 5, 10, 20)


@dataclass
class BenchConfig:
    n_train_users: int = 200  # seen users
    pairs_per_user: int = 50  # labelled training pairs per seen user (200 × 50 = 10k pairs)
    test_pairs: int = 40  # held-out pairs per user for evaluation
    n_new_users: int = 100  # unseen users
    context_sizes: tuple[int, ...] = CONTEXT_SIZES  # labels given to new users
    kinds: tuple[str, ...] = ("bt", "vpl", "pal")  # models to compare
    fit: FitConfig = field(default_factory=lambda: FitConfig(progress=False))  # training settings
    seed: int = 0  # seed of users, pairs, labels and training


class _PeakRSS:
    """Peak resident memory growth (MiB) during a block, sampled every 5 ms from /proc."""

    def __init__(self) -> None:
        self.peak = self.base = self._rss()
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> _PeakRSS:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> float:
        return self.peak - self.base


def _ece(p: torch.Tensor, y: torch.Tensor, bins: int = 10) -> float:
    idx = (p * bins).long().clamp(max=bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += float(m.float().mean()) * abs(float(p[m].mean()) - float(y[m].float().mean()))
    return total


def _expected_acc(p_pred: torch.Tensor, p_true: torch.Tensor) -> torch.Tensor:
    """Per-pair expected accuracy of predicting a when p_pred > 0.5 (ties count half)."""
    pick_a = (p_pred > 0.5).float() + 0.5 * (p_pred == 0.5).float()
    return pick_a * p_true + (1 - pick_a) * (1 - p_true)


def make_split(pop: Population, cfg: BenchConfig) -> dict[str, Any]:
    g = torch.Generator().manual_seed(cfg.seed + 100)
    seen = pop.draw_users(cfg.n_train_users, g, prefix="seen")
    new = pop.draw_users(cfg.n_new_users, g, prefix="new")
    rows_u, rows_p, rows_c, rows_r = [], [], [], []
    seen_test = []
    for i, u in enumerate(seen):
        pairs = pop.sample_pairs(cfg.pairs_per_user, g)
        p, c, r = labelled(pairs, pop.label(u, pairs, g))
        rows_u.append(torch.full((len(pairs),), i))
        rows_p.append(p)
        rows_c.append(c)
        rows_r.append(r)
        seen_test.append(pop.sample_pairs(cfg.test_pairs, g))
    data = PreferenceData(torch.cat(rows_u), torch.cat(rows_p), torch.cat(rows_c), torch.cat(rows_r),
                          [u.id for u in seen])
    max_ctx = max(cfg.context_sizes)
    new_ctx, new_test = [], []
    for u in new:
        pairs = pop.sample_pairs(max_ctx, g)
        new_ctx.append(labelled(pairs, pop.label(u, pairs, g)))
        new_test.append(pop.sample_pairs(cfg.test_pairs, g))
    profiles = {u.id: u.profile for u in seen + new}
    return {"seen": seen, "new": new, "data": data, "seen_test": seen_test, "new_ctx": new_ctx,
            "new_test": new_test, "profiles": profiles, "gen": g}


def _score(pop: Population, model: Any, users, posts, tests, g: torch.Generator) -> dict[str, float]:
    accs, bayes, ps, ys = [], [], [], []
    for u, post, pairs in zip(users, posts, tests, strict=True):
        p_pred, _ = model.predict_proba(post, pairs.prompt, pairs.a, pairs.b)
        p_true = pop.prob(u, pairs)
        accs.append(_expected_acc(p_pred, p_true))
        bayes.append(torch.maximum(p_true, 1 - p_true))
        ps.append(p_pred)
        ys.append(torch.rand(len(pairs), generator=g) < p_true)
    acc, bay = float(torch.cat(accs).mean()), float(torch.cat(bayes).mean())
    p, y = torch.cat(ps), torch.cat(ys)
    return {"acc": acc, "bayes": bay, "rel": acc / bay, "ece": _ece(p, y), "brier": float(((p - y.float()) ** 2).mean())}


def run_population(pop_cfg: PopulationConfig, cfg: BenchConfig) -> dict[str, Any]:
    """Fit every model kind on one population and evaluate seen users, new users, calibration, speed."""
    pop = Population(pop_cfg)
    split = make_split(pop, cfg)
    out: dict[str, Any] = {"population": pop_cfg.name, "models": {}}
    for kind in cfg.kinds:
        eval_g = torch.Generator().manual_seed(cfg.seed + 7)
        with _PeakRSS() as mem:
            t0 = time.perf_counter()
            model = fit(kind, split["data"], split["profiles"], cfg.fit, device="cpu", seed=cfg.seed)
            fit_s = time.perf_counter() - t0
        res: dict[str, Any] = {"fit_s": fit_s, "peak_mib": mem.growth, "active_units": model.info.get("active_units"),
                               "types": model.mix_log_weights.numel() if model.has_mixture else int(kind != "bt")}
        guard = model.info.get("guard") or {}
        if "chosen" in guard:
            res["guard"] = f"{guard['chosen']} ({model.config.temperature:.2f})"
        seen_posts = [model.user_posterior(u.id) for u in split["seen"]]
        res["seen"] = _score(pop, model, split["seen"], seen_posts, split["seen_test"], eval_g)
        for use_profile in (True, False):
            key = "new_profile" if use_profile else "new_noprofile"
            res[key] = {}
            for n in cfg.context_sizes:
                posts = []
                for u, (p, c, r) in zip(split["new"], split["new_ctx"], strict=True):
                    ctx = (p[:n], c[:n], r[:n])
                    posts.append(model.posterior(ctx, u.profile if use_profile else None))
                res[key][n] = _score(pop, model, split["new"], posts, split["new_test"], eval_g)
        # Latency of one posterior update and of BALD over 10k candidates.
        u0 = split["new"][0]
        p, c, r = split["new_ctx"][0]
        post = model.posterior(None, u0.profile)
        times = []
        for i in range(min(200, 20 * len(p))):
            j = i % len(p)
            t = time.perf_counter()
            post2 = model.update(post, p[j], c[j], r[j])
            times.append(time.perf_counter() - t)
        del post2
        res["update_ms"] = 1000 * statistics.median(times)
        cand = pop.sample_pairs(10_000, torch.Generator().manual_seed(5))
        model.info_gain(post, cand.prompt, cand.a, cand.b)
        t = time.perf_counter()
        for _ in range(3):
            model.info_gain(post, cand.prompt, cand.a, cand.b)
        res["bald10k_ms"] = 1000 * (time.perf_counter() - t) / 3
        pool = model.pair_deltas(cand.prompt, cand.a, cand.b)  # an active-learning pool, scored once
        t = time.perf_counter()
        for _ in range(10):
            model.info_gain(post, pool)
        res["bald10k_cached_ms"] = 1000 * (time.perf_counter() - t) / 10
        out["models"][kind] = res
    return out


def markdown(results: list[dict[str, Any]], cfg: BenchConfig, command: str, machine: str, date: str) -> str:
    sizes = cfg.context_sizes
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}. Date: {date}. Torch {torch.__version__}, {torch.get_num_threads()} threads.  ",
        f"Data: synthetic populations (`personalization/synthetic.py`), {cfg.n_train_users} seen users × "
        f"{cfg.pairs_per_user} labelled pairs = {cfg.n_train_users * cfg.pairs_per_user} training pairs, "
        f"{cfg.n_new_users} new users, {cfg.test_pairs} test pairs per user, {cfg.fit.epochs} epochs "
        f"(VPL then {cfg.fit.refine_epochs} refinement epochs), "
        f"384-d synthetic embeddings.",
        "",
        "Accuracy is expected accuracy against the true preference probabilities, shown as a fraction of the "
        "Bayes-optimal accuracy (rel); `acc` is absolute. New users: posterior from n labels, with the profile "
        "prior (`+prof`) or without (`-prof`). Calibration on seen users' test pairs.",
        "",
    ]
    for res in results:
        lines.append(f"### {res['population']} (Bayes-optimal accuracy "
                     f"{next(iter(res['models'].values()))['seen']['bayes']:.3f})")
        lines.append("")
        head = "| model | seen acc | seen rel | " + " | ".join(f"new n={n} +prof" for n in sizes)
        head += " | " + " | ".join(f"n={n} -prof" for n in sizes) + " | ECE | Brier |"
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        for kind, m in res["models"].items():
            cells = [kind, f"{m['seen']['acc']:.3f}", f"{m['seen']['rel']:.3f}"]
            cells += [f"{m['new_profile'][n]['rel']:.3f}" for n in sizes]
            cells += [f"{m['new_noprofile'][n]['rel']:.3f}" for n in sizes]
            cells += [f"{m['seen']['ece']:.3f}", f"{m['seen']['brier']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Speed and memory (CPU; GPU: none available on this machine):")
    lines.append("")
    lines.append("| population | model | fit s | peak RSS growth MiB | update ms (median) | BALD 10k pairs ms "
                 "(with network / cached `pair_deltas`) | active units | types in the prior | population guard (τ) |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for kind, m in res["models"].items():
            lines.append(f"| {res['population']} | {kind} | {m['fit_s']:.1f} | {m['peak_mib']:.0f} | "
                         f"{m['update_ms']:.2f} | {m['bald10k_ms']:.1f} / {m['bald10k_cached_ms']:.2f} | "
                         f"{m['active_units']} | {m.get('types', '—') or '—'} | {m.get('guard') or '—'} |")
    lines.append("")
    lines.append("Targets (issue 3, seen target revised by issue 11): seen users ≥ 0.94 × Bayes-optimal; new users after 10 labels (with profile) "
                 "≥ 0.90 × Bayes-optimal; beat BT where preferences differ; not lose to BT (−0.005) on the "
                 "homogeneous set.")
    lines.append("")
    rows = []
    for res in results:
        bt = res["models"].get("bt")
        for kind, m in res["models"].items():
            if kind != "bt":
                diff = m["seen"]["acc"] - bt["seen"]["acc"] if bt else float("nan")
                new10 = m["new_profile"].get(10, m["seen"])["rel"]
                rows.append((res["population"], kind, m["seen"]["rel"], new10, diff))
    lines += targets_table(rows, "seen acc")
    lines.append("")
    return "\n".join(lines)


def quick_config() -> BenchConfig:
    return BenchConfig(
        n_train_users=60, pairs_per_user=30, test_pairs=20, n_new_users=30, context_sizes=(0, 2, 10),
        fit=FitConfig(progress=False, epochs=8, model=ModelConfig(hidden=[64], latent_dim=4, encoder_hidden=64)),
    )


def _overrides(pop_cfg: PopulationConfig, items: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings → typed PopulationConfig overrides (JSON values, e.g. 0.3 or [0.5, 0.5])."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not hasattr(pop_cfg, name) or name in ("name", "seed"):
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a PopulationConfig field")
        try:
            out[name] = json.loads(raw)
        except json.JSONDecodeError:
            raise SystemExit(f"--set {item!r}: VALUE must be JSON (a number, list …)") from None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run (< 1 min)")
    ap.add_argument("--populations", default="pets,ufp,homogeneous", help="comma-separated presets")
    ap.add_argument("--kinds", default="bt,vpl,pal", help="comma-separated model kinds")
    ap.add_argument("--epochs", type=int, default=None, help="override training epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs-per-user", type=int, default=None, help="labelled training pairs per seen user")
    ap.add_argument("--no-guard", action="store_true", help="fit VPL/PAL without the population guard")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a PopulationConfig field of every population (e.g. individual_std=0, "
                         "label_scale=3): variants the models were not tuned on")
    add_report_arguments(ap, json_dump=True)
    args = ap.parse_args(argv)
    cfg = quick_config() if args.quick else BenchConfig()
    cfg.kinds = tuple(args.kinds.split(","))
    cfg.seed = args.seed
    if args.epochs is not None:
        cfg.fit = replace(cfg.fit, epochs=args.epochs)
    if args.pairs_per_user is not None:
        cfg.pairs_per_user = args.pairs_per_user
    if args.no_guard:
        cfg.fit = replace(cfg.fit, guard=False)
    results = []
    for name in args.populations.split(","):
        t = time.perf_counter()
        pop_cfg = PRESETS[name](seed=args.seed)
        if args.set:
            changes = _overrides(pop_cfg, args.set)
            label = ", ".join(f"{k}={v}" for k, v in changes.items())
            pop_cfg = replace(pop_cfg, name=f"{pop_cfg.name} [{label}]", **changes)
        res = run_population(pop_cfg, cfg)
        results.append(res)
        print(f"[{name}] done in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    command = quoted_command("benchmarks/personalization_bench.py", argv if argv is not None else sys.argv[1:])
    text = markdown(results, cfg, command, args.machine, args.date)
    publish(text, section=SECTION, write=args.write, json_path=args.json, raw=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
