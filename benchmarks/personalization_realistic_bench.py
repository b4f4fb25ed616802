"""Personalized reward models on REAL-ANNOTATOR-LIKE populations: many annotators, few labels, mostly alike.

    .venv/bin/python benchmarks/personalization_realistic_bench.py --quick   # a few minutes, 2 CPU cores
    .venv/bin/python benchmarks/personalization_realistic_bench.py           # full run
    .venv/bin/python benchmarks/personalization_realistic_bench.py --write BENCHMARKS.md

``personalization_bench.py`` scores pluralistic populations of distinct user types. Real annotators are
different: they mostly share one taste, each deviates a little, their labels are noisy, and each gives
few labels. Populations here (known truth, so Bayes-optimal figures are exact):

* ``ratings``: items (prompt × 4 responses, synthetic 384-d embeddings) are rated 1–100 by many
  annotators (PRISM-style sliders); every annotator rates all responses of a few prompts, and the
  ratings become within-annotator pairs (higher rating = chosen, ties dropped). Rating = 50 + 15·r_u(x)
  + noise, r_u = shared reward + a small individual deviation; each annotator has their own noise level.
  Profiles (age, gender) explain a little of the deviation.
* ``homogeneous``: the same without individual deviations.
* ``noise``: the individual "signal" is pure noise (a fresh deviation for every label): nothing personal
  to learn; a personal model must predict like BT.
* ``hh``: the hh-rlhf harmless-base test pairs (``../shared/data/hh-rlhf-harmless-base/test.jsonl.gz``,
  embedded with all-MiniLM-L6-v2) relabelled by simulated annotators (~15 votes each, no profiles):
  shared reward = the data set's own chosen/rejected signal + a direction in embedding space, plus
  small individual deviations, Bradley–Terry label noise.

Models are fitted with their defaults (``personalization.train.fit``: for VPL and PAL the population
guard, ``guard.py``); ``-raw`` variants are the same models with the guard off (what shipped before).
Accuracy and cross-entropy are *expected* against the true preference probabilities; ECE uses sampled
labels. Seen users: held-out prompts; new users: posterior from n labels (with their profile).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import add_report_arguments, publish, quoted_command  # noqa: E402

from personalization.guard import ece  # noqa: E402
from personalization.train import FitConfig, PreferenceData, fit  # noqa: E402

SECTION = "## Personalized reward models on real-annotator-like data"
CONTEXT_SIZES = (0, 1, 2, 5, 10)
HH_PATH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base" / "test.jsonl.gz"
AGES, GENDERS = ("18-24", "25-44", "45+"), ("female", "male")


@dataclass
class RealisticConfig:
    n_seen: int = 262  # annotators in training
    n_new: int = 80  # annotators never seen (new users)
    prompts_per_user: int = 12  # prompts an annotator rates (all 4 responses each: 6 pairs per prompt)
    test_prompts: int = 2  # of those, held out for the seen users' test pairs
    n_prompts: int = 300  # item pool: prompts × 4 responses, each rated by many annotators
    deviation: float = 0.15  # per-direction std of an annotator's deviation (4 directions: its reward has
    # std ≈ 0.3 against the shared reward's 1)
    profile_share: float = 0.3  # share of the deviation's variance the profile explains
    hh_seen: int = 600  # hh: training annotators
    hh_new: int = 100  # hh: new annotators
    hh_votes: int = 15  # hh: training votes per annotator (and 15 more as test/context pairs)
    hh_pairs: int = 2312  # hh: pairs used (the whole test split)
    seed: int = 0


def quick_config() -> RealisticConfig:
    return RealisticConfig(n_seen=120, n_new=40, prompts_per_user=10, n_prompts=150, hh_seen=200, hh_new=40,
                           hh_pairs=800)


# ---- populations -----------------------------------------------------------------------------------------
class Population:
    """Annotators u with reward r_u(x) = w0·x + δ_u·(B x), label noise σ_u; x = response embedding."""

    def __init__(self, dim: int, deviation: float, profile_share: float, noise: bool, gen: torch.Generator,
                 rank: int = 4):
        self.w0 = torch.randn(dim, generator=gen)
        self.basis = torch.randn(rank, dim, generator=gen)
        self.deviation, self.profile_share, self.noise, self.rank = deviation, profile_share, noise, rank
        self.group_effect = {(a, g): torch.randn(rank, generator=gen) for a in AGES for g in GENDERS}

    def draw(self, n: int, prefix: str, gen: torch.Generator, profiles: bool = True) -> list[dict[str, Any]]:
        users = []
        for i in range(n):
            age, gender = AGES[int(torch.randint(3, (1,), generator=gen))], GENDERS[int(torch.randint(2, (1,), generator=gen))]
            own = torch.randn(self.rank, generator=gen)
            share = self.profile_share if profiles else 0.0
            delta = self.deviation * (math.sqrt(share) * self.group_effect[(age, gender)] + math.sqrt(1 - share) * own)
            users.append({"id": f"{prefix}{i}", "delta": delta, "sigma": 0.5 + float(torch.rand(1, generator=gen)),
                          "profile": {"age": age, "gender": gender} if profiles else None})
        return users

    def reward(self, u: dict[str, Any], x: torch.Tensor, scale: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """r_u(x) for rows x (n, d), in units of the shared reward's spread; with ``noise`` the deviation is
        drawn afresh for every call (no persistent individual signal)."""
        delta = self.deviation * torch.randn(self.rank, generator=gen) if self.noise else u["delta"]
        return (x @ self.w0 + (x @ self.basis.T) @ delta) / scale


def _embeddings(n_prompts: int, dim: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt (P, d) and response (P, 4, d) embeddings: responses near their prompt, unit norm."""
    p = torch.nn.functional.normalize(torch.randn(n_prompts, dim, generator=gen), dim=-1)
    r = torch.nn.functional.normalize(0.5 * p.unsqueeze(1) + torch.randn(n_prompts, 4, dim, generator=gen) / math.sqrt(dim),
                                      dim=-1)
    return p, r


@dataclass
class Split:
    data: PreferenceData
    profiles: dict[str, Any]
    seen_test: list[dict[str, torch.Tensor]]  # per seen user: prompt, a, b, p_true (a ≻ b), y
    new_ctx: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per new user: labelled pairs
    new_test: list[dict[str, torch.Tensor]]
    new_profiles: list[Any]
    info: str


def _pairs_from_ratings(pop: Population, u: dict[str, Any], prompts: torch.Tensor, resp: torch.Tensor,
                        scale: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """An annotator rates all 4 responses of each prompt 1–100; pairs = response pairs ordered by rating
    (ties dropped). Returns prompt, a (chosen), b (rejected), p_true of the observed order."""
    ps, as_, bs, pt = [], [], [], []
    for j in range(prompts.shape[0]):
        x = resp[j]
        r = pop.reward(u, x, scale, gen)
        rating = (50 + 15 * r + 15 * u["sigma"] * torch.randn(4, generator=gen)).round().clamp(1, 100)
        for a in range(4):
            for b in range(a + 1, 4):
                if rating[a] == rating[b]:
                    continue
                hi, lo = (a, b) if rating[a] > rating[b] else (b, a)
                # P(rating_hi > rating_lo) for this annotator (noise on both ratings; rounding ignored)
                z = float(r[hi] - r[lo]) / (math.sqrt(2) * u["sigma"])
                ps.append(prompts[j])
                as_.append(x[hi])
                bs.append(x[lo])
                pt.append(0.5 * (1 + math.erf(z / math.sqrt(2))))
    if not ps:
        return {"prompt": torch.zeros(0, resp.shape[-1]), "a": torch.zeros(0, resp.shape[-1]),
                "b": torch.zeros(0, resp.shape[-1]), "p_true": torch.zeros(0)}
    return {"prompt": torch.stack(ps), "a": torch.stack(as_), "b": torch.stack(bs), "p_true": torch.tensor(pt)}


def _randomise(t: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Test pairs in random order (a is the chosen one half the time), with a sampled label y."""
    flip = torch.rand(t["a"].shape[0], generator=gen) < 0.5
    a = torch.where(flip.unsqueeze(1), t["b"], t["a"])
    b = torch.where(flip.unsqueeze(1), t["a"], t["b"])
    p = torch.where(flip, 1 - t["p_true"], t["p_true"])
    return {"prompt": t["prompt"], "a": a, "b": b, "p_true": p, "y": torch.rand(p.shape[0], generator=gen) < p}


def ratings_split(cfg: RealisticConfig, kind: str) -> Split:
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    dim = 384
    prompts, resp = _embeddings(cfg.n_prompts, dim, gen)
    deviation = 0.0 if kind == "homogeneous" else cfg.deviation
    pop = Population(dim, deviation, cfg.profile_share, kind == "noise", gen)
    scale = (resp.reshape(-1, dim) @ pop.w0).std()
    seen, new = pop.draw(cfg.n_seen, "seen", gen), pop.draw(cfg.n_new, "new", gen)
    rows: dict[str, list[torch.Tensor]] = {"user": [], "prompt": [], "chosen": [], "rejected": []}
    seen_test = []
    for i, u in enumerate(seen):
        pick = torch.randperm(cfg.n_prompts, generator=gen)[: cfg.prompts_per_user]
        train_p, test_p = pick[cfg.test_prompts :], pick[: cfg.test_prompts]
        tr = _pairs_from_ratings(pop, u, prompts[train_p], resp[train_p], scale, gen)
        rows["user"].append(torch.full((tr["a"].shape[0],), i))
        rows["prompt"].append(tr["prompt"])
        rows["chosen"].append(tr["a"])
        rows["rejected"].append(tr["b"])
        seen_test.append(_randomise(_pairs_from_ratings(pop, u, prompts[test_p], resp[test_p], scale, gen), gen))
    data = PreferenceData(torch.cat(rows["user"]), torch.cat(rows["prompt"]), torch.cat(rows["chosen"]),
                          torch.cat(rows["rejected"]), [u["id"] for u in seen])
    new_ctx, new_test = [], []
    for u in new:
        pick = torch.randperm(cfg.n_prompts, generator=gen)[: cfg.prompts_per_user]
        ctx = _pairs_from_ratings(pop, u, prompts[pick[cfg.test_prompts :]], resp[pick[cfg.test_prompts :]], scale, gen)
        order = torch.randperm(ctx["a"].shape[0], generator=gen)  # labels arrive in random order
        new_ctx.append((ctx["prompt"][order], ctx["a"][order], ctx["b"][order]))
        new_test.append(_randomise(_pairs_from_ratings(pop, u, prompts[pick[: cfg.test_prompts]],
                                                       resp[pick[: cfg.test_prompts]], scale, gen), gen))
    profiles = {u["id"]: u["profile"] for u in seen + new}
    info = (f"{len(seen)} seen annotators, {len(data)} training pairs ({len(data) / len(seen):.0f} per annotator, "
            f"from {cfg.prompts_per_user - cfg.test_prompts} prompts × 4 rated responses), {len(new)} new annotators, "
            f"deviation std {deviation:g}{' (fresh per label: pure noise)' if kind == 'noise' else ''}")
    return Split(data, profiles, seen_test, new_ctx, new_test, [u["profile"] for u in new], info)


def _hh_rows(limit: int) -> list[tuple[str, str, str]]:
    out = []
    with gzip.open(HH_PATH, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            c, r = row["chosen"], row["rejected"]
            cut_c, cut_r = c.rfind("\n\nAssistant:"), r.rfind("\n\nAssistant:")
            if cut_c < 0 or cut_r < 0:
                continue
            prompt = c[:cut_c].strip()
            out.append((prompt, c[cut_c + 12 :].strip(), r[cut_r + 12 :].strip()))
            if len(out) >= limit:
                break
    return out


def hh_split(cfg: RealisticConfig) -> Split:
    from personalization.encoder import EncoderConfig, TextEncoder

    rows = _hh_rows(cfg.hh_pairs)
    enc = TextEncoder(EncoderConfig(device="cpu", cache_dir=str(ROOT / "var" / "embedding-cache")))
    texts = [t for row in rows for t in row]
    emb = enc.encode(texts, progress=False).float().reshape(len(rows), 3, -1)
    prompt, chosen, rejected = emb[:, 0], emb[:, 1], emb[:, 2]
    gen = torch.Generator().manual_seed(cfg.seed + 23)
    dim = emb.shape[-1]
    pop = Population(dim, cfg.deviation, 0.0, False, gen)
    scale = (torch.cat([chosen, rejected]) @ pop.w0).std()
    bonus = 1.0  # the data set's own label: the hh "chosen" response gets this much shared reward

    def label_pairs(u: dict[str, Any], idx: torch.Tensor) -> dict[str, torch.Tensor]:
        ra = pop.reward(u, chosen[idx], scale, gen) + bonus
        rb = pop.reward(u, rejected[idx], scale, gen)
        p = torch.sigmoid((ra - rb) / u["sigma"])
        y = torch.rand(p.shape[0], generator=gen) < p
        a = torch.where(y.unsqueeze(1), chosen[idx], rejected[idx])
        b = torch.where(y.unsqueeze(1), rejected[idx], chosen[idx])
        return {"prompt": prompt[idx], "a": a, "b": b, "p_true": torch.where(y, p, 1 - p)}

    seen, new = pop.draw(cfg.hh_seen, "seen", gen, profiles=False), pop.draw(cfg.hh_new, "new", gen, profiles=False)
    users, ps, cs, rs, seen_test = [], [], [], [], []
    for i, u in enumerate(seen):
        idx = torch.randperm(len(rows), generator=gen)[: 2 * cfg.hh_votes]
        tr = label_pairs(u, idx[: cfg.hh_votes])
        users.append(torch.full((cfg.hh_votes,), i))
        ps.append(tr["prompt"])
        cs.append(tr["a"])
        rs.append(tr["b"])
        seen_test.append(_randomise(label_pairs(u, idx[cfg.hh_votes :]), gen))
    data = PreferenceData(torch.cat(users), torch.cat(ps), torch.cat(cs), torch.cat(rs), [u["id"] for u in seen])
    new_ctx, new_test = [], []
    for u in new:
        idx = torch.randperm(len(rows), generator=gen)[: 2 * cfg.hh_votes]
        ctx = label_pairs(u, idx[: cfg.hh_votes])
        new_ctx.append((ctx["prompt"], ctx["a"], ctx["b"]))
        new_test.append(_randomise(label_pairs(u, idx[cfg.hh_votes :]), gen))
    info = (f"{len(rows)} hh-rlhf harmless-base test pairs (all-MiniLM-L6-v2), {len(seen)} seen annotators × "
            f"{cfg.hh_votes} votes = {len(data)} training pairs, {len(new)} new annotators, no profiles, "
            f"deviation std {cfg.deviation:g}")
    return Split(data, {}, seen_test, new_ctx, new_test, [None] * len(new), info)


# ---- scoring -------------------------------------------------------------------------------------------
def _score(model: Any, posts: list[Any], tests: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    preds, truth, ys = [], [], []
    for post, t in zip(posts, tests, strict=True):
        if t["a"].shape[0] == 0:
            continue
        p, _ = model.predict_proba(post, t["prompt"], t["a"], t["b"])
        preds.append(p)
        truth.append(t["p_true"])
        ys.append(t["y"])
    p, q, y = torch.cat(preds).clamp(1e-6, 1 - 1e-6), torch.cat(truth), torch.cat(ys)
    pick = (p > 0.5).float() + 0.5 * (p == 0.5).float()
    acc = float((pick * q + (1 - pick) * (1 - q)).mean())
    ce = float(-(q * p.log() + (1 - q) * (1 - p).log()).mean())
    qc = q.clamp(1e-6, 1 - 1e-6)
    return {"acc": acc, "ce": ce, "ece": ece(p, y), "bayes_acc": float(torch.maximum(q, 1 - q).mean()),
            "bayes_ce": float(-(qc * qc.log() + (1 - qc) * (1 - qc).log()).mean()), "n": int(p.numel())}


def run(split: Split, kinds: list[str], fit_cfg: FitConfig, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in kinds:
        kind, raw = name.removesuffix("-raw"), name.endswith("-raw")
        cfg = replace(fit_cfg, guard=not raw)
        t0 = time.perf_counter()
        model = fit(kind, split.data, split.profiles or None, cfg, device="cpu", seed=seed)
        res: dict[str, Any] = {"fit_s": time.perf_counter() - t0}
        res["seen"] = _score(model, [model.user_posterior(u) for u in split.data.user_ids], split.seen_test)
        res["new"] = {}
        for n in CONTEXT_SIZES:
            posts = [model.posterior((p[:n], c[:n], r[:n]), prof)
                     for (p, c, r), prof in zip(split.new_ctx, split.new_profiles, strict=True)]
            res["new"][n] = _score(model, posts, split.new_test)
        g = model.info.get("guard") or {}
        res["guard"] = g.get("chosen") or ("—" if kind == "bt" or raw else g.get("skipped", "—"))
        res["temperature"] = model.config.temperature
        out[name] = res
        print(f"  {name}: fit {res['fit_s']:.1f}s seen acc {res['seen']['acc']:.3f} ce {res['seen']['ce']:.3f} "
              f"new@10 {res['new'][10]['acc']:.3f} guard {res['guard']}", file=sys.stderr)
    return out


def markdown(results: list[dict[str, Any]], cfg: RealisticConfig, fit_cfg: FitConfig, command: str,
             machine: str, date: str) -> str:
    lines = [SECTION, "", f"Command: `{command}`  ",
             f"Machine: {machine}. Date: {date}. Torch {torch.__version__}. FitConfig defaults "
             f"(epochs {fit_cfg.epochs}, hidden {fit_cfg.model.hidden}, latent {fit_cfg.model.latent_dim}).", "",
             "Expected accuracy / cross-entropy (nats) against the true preference probabilities; ECE on "
             "sampled labels. `vpl`, `pal` = defaults (population guard on); `-raw` = guard off (before). "
             "`guard` = the candidate the guard chose on held-out users (`bt` = back off to the population; "
             "`lambda` = weight of the personal reward, `s` = prior scale, `+mix` = mixture prior), τ = "
             "fitted temperature.", ""]
    for res in results:
        lines += [f"### {res['population']}", "", res["info"], ""]
        head = ["model", "seen acc", "seen CE", "seen ECE"]
        head += [f"new n={n} acc" for n in CONTEXT_SIZES] + ["new n=10 CE", "new n=10 ECE", "guard", "τ", "fit s"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        first = next(iter(res["models"].values()))
        bayes = ["**Bayes-optimal**", f"{first['seen']['bayes_acc']:.3f}", f"{first['seen']['bayes_ce']:.3f}", "—"]
        bayes += [f"{first['new'][n]['bayes_acc']:.3f}" for n in CONTEXT_SIZES] + [
            f"{first['new'][10]['bayes_ce']:.3f}", "—", "", "", ""]
        lines.append("| " + " | ".join(bayes) + " |")
        for name, m in res["models"].items():
            row = [name, f"{m['seen']['acc']:.3f}", f"{m['seen']['ce']:.3f}", f"{m['seen']['ece']:.3f}"]
            row += [f"{m['new'][n]['acc']:.3f}" for n in CONTEXT_SIZES]
            row += [f"{m['new'][10]['ce']:.3f}", f"{m['new'][10]['ece']:.3f}", str(m["guard"]),
                    f"{m['temperature']:.2f}", f"{m['fit_s']:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    # Targets: the default personal models vs BT.
    lines += ["Targets (issue 11): the default personal model has accuracy ≥ BT's on seen and new users and "
              "cross-entropy ≤ BT's (realistic populations); within 0.005 of BT on `homogeneous` and `noise`. "
              "New users are checked at every n (the worst n is shown); `meets` allows a loss of 0.002 (0.005 on "
              "`homogeneous` and `noise`), so read the differences.", "",
              "| population | model | seen acc − BT | seen CE − BT | worst new acc − BT (n) | worst new CE − BT (n) | meets |",
              "|---|---|---|---|---|---|---|"]
    for res in results:
        bt = res["models"].get("bt")
        if bt is None:
            continue
        for name, m in res["models"].items():
            if name == "bt" or name.endswith("-raw"):
                continue
            d_acc = m["seen"]["acc"] - bt["seen"]["acc"]
            d_ce = m["seen"]["ce"] - bt["seen"]["ce"]
            new_acc = min(((m["new"][n]["acc"] - bt["new"][n]["acc"]), n) for n in CONTEXT_SIZES)
            new_ce = max(((m["new"][n]["ce"] - bt["new"][n]["ce"]), n) for n in CONTEXT_SIZES)
            tol = 0.005 if res["key"] in ("homogeneous", "noise") else 0.002
            ok = d_acc >= -tol and d_ce <= tol and new_acc[0] >= -tol and new_ce[0] <= tol
            lines.append(f"| {res['key']} | {name} | {d_acc:+.3f} | {d_ce:+.3f} | {new_acc[0]:+.3f} ({new_acc[1]}) | "
                         f"{new_ce[0]:+.3f} ({new_ce[1]}) | {'yes' if ok else '**no**'} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller populations (a few minutes)")
    ap.add_argument("--populations", default="ratings,homogeneous,noise,hh", help="comma-separated")
    ap.add_argument("--kinds", default="bt,vpl,pal,vpl-raw,pal-raw", help="comma-separated; -raw = guard off")
    ap.add_argument("--epochs", type=int, default=None, help="override training epochs")
    ap.add_argument("--seed", type=int, default=0)
    add_report_arguments(ap, json_dump=True)
    args = ap.parse_args(argv)
    cfg = quick_config() if args.quick else RealisticConfig()
    cfg.seed = args.seed
    fit_cfg = FitConfig(progress=False)
    if args.epochs is not None:
        fit_cfg = replace(fit_cfg, epochs=args.epochs)
    results = []
    for key in args.populations.split(","):
        t = time.perf_counter()
        split = hh_split(cfg) if key == "hh" else ratings_split(cfg, key)
        print(f"[{key}] {split.info}", file=sys.stderr)
        models = run(split, args.kinds.split(","), fit_cfg, args.seed)
        results.append({"key": key, "population": key, "info": split.info, "models": models})
        print(f"[{key}] done in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        # The tables so far, on stderr: a long run that is stopped early still leaves its figures.
        print(markdown(results, cfg, fit_cfg, "(partial)", args.machine, args.date), file=sys.stderr)
    command = quoted_command("benchmarks/personalization_realistic_bench.py",
                             argv if argv is not None else sys.argv[1:])
    text = markdown(results, cfg, fit_cfg, command, args.machine, args.date)
    publish(text, section=SECTION, write=args.write, json_path=args.json, raw=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
