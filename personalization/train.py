"""Training on pre-computed embeddings: ``fit(kind, data, profiles, config)``."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .models import ModelConfig, RewardModel, build_model
from .models.empirical_bayes import fit_user_posteriors
from .models.posterior import link_fn, nll
from .parallel import Beside, can_fork
from .profiles import ProfileEncoder
from .schedule import set_cosine_lr


@dataclass
class PreferenceData:
    """Labelled pairs as tensors; row i: user ``user_ids[user[i]]`` preferred ``chosen[i]`` to ``rejected[i]``."""

    user: torch.Tensor  # (N,) long: index into user_ids
    prompt: torch.Tensor  # (N, d) prompt embeddings
    chosen: torch.Tensor  # (N, d) embeddings of the preferred responses
    rejected: torch.Tensor  # (N, d) embeddings of the other responses
    user_ids: list[str]  # user index → user id

    def __post_init__(self) -> None:
        n = self.user.shape[0]
        for name in ("prompt", "chosen", "rejected"):
            t = getattr(self, name)
            if t.dim() != 2 or t.shape[0] != n:
                raise ValueError(f"PreferenceData.{name} must be ({n}, d), got {tuple(t.shape)}")
        if n and int(self.user.max()) >= len(self.user_ids):
            raise ValueError("PreferenceData.user indexes past user_ids")

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def dim(self) -> int:
        return int(self.prompt.shape[1])

    def subset(self, index: torch.Tensor) -> PreferenceData:
        return PreferenceData(self.user[index], self.prompt[index], self.chosen[index], self.rejected[index],
                              list(self.user_ids))

    @classmethod
    def from_rows(cls, rows: Sequence[Any], encoder: Any, progress: bool = False) -> PreferenceData:
        """Embed PreferenceRow-like rows (user_id, prompt, chosen, rejected) with a TextEncoder."""
        user_ids = list(dict.fromkeys(r.user_id for r in rows))
        index = {u: i for i, u in enumerate(user_ids)}
        n = len(rows)
        texts = [r.prompt for r in rows] + [r.chosen for r in rows] + [r.rejected for r in rows]
        emb = encoder.encode(texts, progress=progress) if texts else torch.zeros(0, encoder.dim)
        return cls(
            torch.tensor([index[r.user_id] for r in rows], dtype=torch.long),
            emb[:n],
            emb[n : 2 * n],
            emb[2 * n :],
            user_ids,
        )


@dataclass(frozen=True)
class FitConfig:
    """How to train (the schedule, batches, VPL/PAL loss weights, the guard) and, in ``model``, what to
    train: the architecture, whose defaults are the tuned ones (models.ModelConfig). Frozen: vary it with
    ``dataclasses.replace(config, epochs=…)`` or ``replace(config, model=replace(config.model, …))``."""

    epochs: int = 30  # passes over the labelled pairs
    batch_size: int = 64  # pairs per step (BT, PAL); small batches = more steps, which PAL needs
    users_per_batch: int = 16  # users per step (VPL)
    context_max: int = 24  # VPL: most context pairs a user shows the encoder in a step
    targets: int = 8  # VPL: held-out target pairs per user per step
    lr: float = 3e-3  # AdamW learning rate of the network (cosine decay)
    user_lr: float = 5e-2  # PAL: learning rate of the per-user mixture logits
    weight_decay: float = 1e-4  # AdamW weight decay
    beta: float = 1.0  # VPL: weight of the KL term at the end of annealing
    kl_warmup: float = 0.3  # VPL: fraction of training over which β ramps from 0
    refine_epochs: int = 6  # VPL: epochs of MAP refinement after amortised training (see _refine); 0 = off
    refine_lr: float = 2e-3  # VPL: peak learning rate of the refinement (cosine decay)
    pal_prior_weight: float = 1.0  # PAL: weight of the Gaussian prior on the user logits
    profile_dropout: float = 0.2  # probability a training user's profile is hidden (learns the no-profile prior)
    bf16: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    progress: bool = True  # tqdm progress bar over epochs
    guard: bool = True  # VPL/PAL: choose the back-off to a population BT (blend weight, prior scale, mixture,
    # temperature) on held-out users' held-out labels (guard.py); False = the raw personal model
    guard_user_fraction: float = 0.25  # guard: share of users held out entirely (the new-user setting)
    guard_label_fraction: float = 0.25  # guard: share of each other user's labels held out (the seen setting)
    guard_min_users: int = 4  # guard: fewer users with 4+ labels than this = no split, the raw personal model
    parallel: bool = True  # guard: fit the BT in a forked second process beside the personal model (CPU with
    # 2+ cores; the same models either way, as each fit seeds its own generators)
    cpu_threads: int | None = 1  # torch threads while training on CPU (1 is fastest for these small nets:
    # small kernels otherwise pay thread-pool barriers, badly on busy machines); None keeps torch's setting
    model: ModelConfig = field(default_factory=ModelConfig)  # the architecture (trunk widths, dropout, latent
    # size, profile prior, VPL/PAL heads, mixture prior); fit() sets its kind, dim and profile_dim

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FitConfig:
        """A FitConfig from a mapping (JSON, keyword arguments): the model's settings nested under
        ``"model"``, as ``dataclasses.asdict`` writes them (``model.info["fit_config"]``), or beside the
        training ones as FitConfig held them before it held a ModelConfig (``{"epochs": 5, "hidden": [64]}``).
        An unknown key raises TypeError, as the constructor does."""
        own = {f.name for f in fields(cls)}
        flat = {k: v for k, v in values.items() if k not in own and k in _MODEL_FIELDS}
        rest = {k: v for k, v in values.items() if k != "model" and k not in flat}
        nested = values.get("model")
        model = nested if isinstance(nested, ModelConfig) else ModelConfig(**(nested or {}))
        return cls(**rest, model=replace(model, **flat) if flat else model)


_MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig))


def _resolve_device(device: str | torch.device) -> torch.device:
    dev = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available() else
                       ("cpu" if str(device) == "auto" else device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return dev


class _UserSampler:
    """Context/target sets per user for VPL steps, vectorised over a batch of users."""

    def __init__(self, user: torch.Tensor, n_users: int, gen: torch.Generator):
        self.gen = gen
        counts = torch.bincount(user, minlength=n_users)
        self.counts = counts
        width = max(int(counts.max()) if len(user) else 1, 1)
        order = torch.argsort(user, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(order)) - starts[user[order]]
        self.index = torch.zeros(n_users, width, dtype=torch.long)
        self.index[user[order], slot] = order
        self.eligible = torch.nonzero(counts >= 2).flatten()
        if len(self.eligible) == 0:
            self.eligible = torch.nonzero(counts >= 1).flatten()

    def sample(self, n: int, context_max: int, targets: int) -> dict[str, torch.Tensor]:
        pick = self.eligible[torch.randint(len(self.eligible), (n,), generator=self.gen)]
        counts = self.counts[pick]
        width = self.index.shape[1]
        keys = torch.rand(n, width, generator=self.gen)
        keys[torch.arange(width).unsqueeze(0) >= counts.unsqueeze(1)] = 2.0
        perm = torch.gather(self.index[pick], 1, torch.argsort(keys, dim=1))
        cmax = torch.clamp(counts - 1, min=0).clamp(max=context_max)
        n_ctx = (torch.rand(n, generator=self.gen) * (cmax + 1).float()).long().clamp(max=cmax)
        cpos = torch.arange(context_max).unsqueeze(0)
        ctx_mask = cpos < n_ctx.unsqueeze(1)
        ctx_idx = torch.gather(perm, 1, cpos.clamp(max=width - 1).expand(n, -1))
        tpos = n_ctx.unsqueeze(1) + torch.arange(targets).unsqueeze(0)
        tgt_mask = tpos < counts.unsqueeze(1)
        tgt_idx = torch.gather(perm, 1, tpos.clamp(max=width - 1))
        return {"users": pick, "ctx_idx": ctx_idx, "ctx_mask": ctx_mask, "tgt_idx": tgt_idx, "tgt_mask": tgt_mask}


def _profile_matrix(
    user_ids: Sequence[str], profiles: Mapping[str, Mapping[str, Any]] | None
) -> tuple[ProfileEncoder | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Profile encoder fitted on the training users, their feature rows, has-profile flags, missing row."""
    if not profiles:
        return None, torch.zeros(len(user_ids), 0), torch.zeros(len(user_ids), dtype=torch.bool), torch.zeros(0)
    rows = [profiles.get(u) for u in user_ids]
    enc = ProfileEncoder().fit([r for r in rows if r])
    if enc.dim == 0:
        return None, torch.zeros(len(user_ids), 0), torch.zeros(len(user_ids), dtype=torch.bool), torch.zeros(0)
    feats = enc.transform(rows)
    has = torch.tensor([bool(r) for r in rows])
    return enc, feats, has, enc.transform_one(None)


def fit(
    kind: str,
    data: PreferenceData,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    config: FitConfig | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> RewardModel:
    """Train a ``kind`` ("bt" | "vpl" | "pal") model on embedded preference data; returns it in eval mode."""
    config = config or FitConfig()
    dev = _resolve_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        if kind != "bt" and config.guard:
            return _fit_guarded(kind, data, profiles, config, dev, seed)
        return _fit(kind, data, profiles, config, dev, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_guarded(
    kind: str,
    data: PreferenceData,
    profiles: Mapping[str, Mapping[str, Any]] | None,
    config: FitConfig,
    dev: torch.device,
    seed: int,
) -> RewardModel:
    """The personal model with the population guard (guard.py): candidates scored out-of-fold over
    users, then the final model fitted on all data with the winner applied."""
    from .guard import apply_choice, select

    t0 = time.perf_counter()
    sub = replace(config, guard=False)
    # The final models (fitted from scratch on all pairs) do not depend on the guard's choice, only the
    # way it is applied does: on a CPU with two or more cores they are fitted in a second process while
    # this one fits the split's models and searches, which halves the wall time. The final BT is then
    # fitted even when the choice turns out not to need it (λ = 1), on the core that would otherwise idle.
    # A fit from the split's models (a warm restart, a third cheaper in CPU) lost up to 0.016 of accuracy
    # to BT on the realistic populations (BENCHMARKS.md), so the final models start again.
    parallel = config.parallel and can_fork(dev)
    final_job = Beside(_fit_final, kind, data, profiles, replace(sub, progress=False), dev, seed, enabled=parallel)
    record = select(kind, data, profiles, config, lambda k, d, p, c, s: _fit(k, d, p, c, dev, s), seed)
    record["parallel"] = parallel
    choice = record.pop("choice")
    need_bt = choice is not None and choice.personal_weight < 1.0
    population: RewardModel | None = None
    if final_job.forked:
        model, bt = final_job.result()
        population = bt if need_bt else None
    else:
        model = _fit(kind, data, profiles, sub, dev, seed)
        population = _fit("bt", data, None, sub, dev, seed) if need_bt else None
    if choice is not None:
        _enc, feats, has_profile, _missing = _profile_matrix(data.user_ids, profiles)
        tau = apply_choice(model, population, choice, data, feats if model.prior_net is not None else None,
                           has_profile, split_spread=record.get("logit_spread_split"))
        record["temperature_split"] = record["temperature"]
        record["temperature"] = round(tau, 4)
    model.info["guard"] = record
    model.info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    model.info["fit_config"] = asdict(config)
    return model


def _fit_final(kind: str, data: PreferenceData, profiles: Mapping[str, Mapping[str, Any]] | None,
               config: FitConfig, dev: torch.device, seed: int) -> tuple[RewardModel, RewardModel]:
    """The guard's final personal model and population BT, both on all pairs."""
    return _fit(kind, data, profiles, config, dev, seed), _fit("bt", data, None, config, dev, seed)


def _fit(
    kind: str,
    data: PreferenceData,
    profiles: Mapping[str, Mapping[str, Any]] | None,
    config: FitConfig,
    dev: torch.device,
    seed: int,
) -> RewardModel:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    prof_enc, prof_feats, has_profile, missing_row = _profile_matrix(data.user_ids, profiles)
    profile_dim = prof_enc.dim if prof_enc is not None else 0
    model = build_model(config.model.for_data(kind, data.dim, profile_dim), data.user_ids, prof_enc).to(dev)
    model.train()

    user = data.user.to(dev)
    prompt, chosen, rejected = (x.to(dev, torch.float32) for x in (data.prompt, data.chosen, data.rejected))
    counts = torch.bincount(data.user, minlength=len(data.user_ids)).clamp_min(1).float().to(dev)
    feats_dev = prof_feats.to(dev)
    missing_dev = missing_row.to(dev)
    use_profiles = model.prior_net is not None

    user_params = [p for n, p in model.named_parameters() if n == "user_logits"]
    net_params = [p for n, p in model.named_parameters() if n != "user_logits"]
    groups: list[dict[str, Any]] = [{"params": net_params, "lr": config.lr, "weight_decay": config.weight_decay}]
    if user_params:
        groups.append({"params": user_params, "lr": config.user_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, fused=True)  # one kernel per step: ~30% less optimizer time on a CPU

    n = len(data)
    if model.batching == "users":
        sampler = _UserSampler(data.user, len(data.user_ids), gen)
        steps_per_epoch = max(1, math.ceil(n / (config.users_per_batch * config.targets)))
    else:
        steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total = steps_per_epoch * config.epochs
    base_lrs = [g["lr"] for g in opt.param_groups]
    warm = max(1, total // 20)
    autocast = dev.type == "cuda" and config.bf16

    def profile_rows(users: torch.Tensor) -> torch.Tensor | None:
        if not use_profiles:
            return None
        rows = feats_dev[users]
        drop = torch.rand(users.shape[0], generator=gen) < config.profile_dropout
        drop = drop.to(dev) | ~has_profile.to(dev)[users]
        return torch.where(drop.unsqueeze(1), missing_dev.unsqueeze(0), rows)

    step = 0
    bar = tqdm(range(config.epochs), desc=f"fit {kind}", unit="epoch", disable=not config.progress)
    last: dict[str, float] = {}
    for _epoch in bar:
        perm = torch.randperm(n, generator=gen).to(dev)
        for i in range(steps_per_epoch):
            frac = step / max(total, 1)
            set_cosine_lr(opt, base_lrs, step, total, warmup=warm)
            if model.batching == "users":
                s = sampler.sample(config.users_per_batch, config.context_max, config.targets)
                ci, ti = s["ctx_idx"].to(dev), s["tgt_idx"].to(dev)
                batch = {
                    "ctx_prompt": prompt[ci], "ctx_chosen": chosen[ci], "ctx_rejected": rejected[ci],
                    "ctx_mask": s["ctx_mask"].to(dev, torch.float32),
                    "tgt_prompt": prompt[ti], "tgt_chosen": chosen[ti], "tgt_rejected": rejected[ti],
                    "tgt_mask": s["tgt_mask"].to(dev, torch.float32),
                }
                prof = profile_rows(s["users"].to(dev))
            else:
                idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
                if len(idx) == 0:
                    continue
                u = user[idx]
                batch = {"user": u, "prompt": prompt[idx], "chosen": chosen[idx], "rejected": rejected[idx],
                         "user_count": counts[u]}
                prof = profile_rows(u)
            if prof is not None:
                batch["profile"] = prof
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
                loss, stats = model.training_loss(batch, frac, config)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            last = {"loss": float(loss.detach()), **stats}
        bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})

    model.eval()
    logits = getattr(model, "user_logits", None)
    init = logits.detach() if isinstance(logits, torch.Tensor) else None
    model.set_reference(data.prompt, data.chosen, seed=seed)
    refining = model.batching == "users" and model.latent_dim > 0 and config.refine_epochs > 0
    fit_user_posteriors(
        model, data.user, data.prompt, data.chosen, data.rejected,
        prof_feats if use_profiles else None, has_profile, init=init, mixture=not refining,
    )
    refined = 0
    if refining:
        refined = _refine(model, user, prompt, chosen, rejected, counts, feats_dev if use_profiles else None,
                          has_profile.to(dev), config, gen)
        fit_user_posteriors(
            model, data.user, data.prompt, data.chosen, data.rejected,
            prof_feats if use_profiles else None, has_profile, init=model.user_mean.clone(),
        )
    model.info.update({
        "fit_seconds": round(time.perf_counter() - t0, 3),
        "n_pairs": n,
        "n_users": len(data.user_ids),
        "epochs": config.epochs,
        "steps": step,
        "refine_steps": refined,
        "device": str(dev),
        "seed": seed,
        "final": last,
        "active_units": model.active_units(),
        "fit_config": asdict(config),
    })
    return model


def _refine(
    model: RewardModel,
    user: torch.Tensor,
    prompt: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    counts: torch.Tensor,
    feats: torch.Tensor | None,
    has_profile: torch.Tensor,
    config: FitConfig,
    gen: torch.Generator,
) -> int:
    """MAP refinement of an amortised model (VPL): each seen user's latent becomes a free parameter,
    started at their Laplace posterior mean under the empirical-Bayes prior, and the trunk and decoder
    are trained with them on all the user's labels. The encoder only ever saw random subsets of a user's
    labels, so its posteriors are noisier than the user's data allow (the amortisation gap); decoders
    trained on them under-fit seen users. Semi-amortised inference (Kim et al. 2018) closes the gap with
    a few such steps. Returns the number of steps."""
    dev = prompt.device
    theta = nn.Parameter(model.user_mean.detach().clone().to(dev))
    with torch.no_grad():
        mu_prof = model.prior_mean(feats).to(dev) if feats is not None else None
        mu_pop = model.prior_mean(model.profile_features([None]) if feats is not None else None).to(dev)
        mu0 = torch.where(has_profile.unsqueeze(1), mu_prof, mu_pop) if mu_prof is not None else mu_pop
        mu0 = mu0.expand(theta.shape[0], -1)
        var = torch.where(has_profile.unsqueeze(1), model.prior_var_profile.to(dev),
                          model.prior_var_population.to(dev)) if mu_prof is not None else (
            model.prior_var_population.to(dev).expand_as(theta))
    net = list(model.parameters())  # only the trunk and decoder get gradients here; AdamW skips the rest
    opt = torch.optim.AdamW(fused=True, params=[
        {"params": net, "lr": config.refine_lr, "weight_decay": config.weight_decay},
        {"params": [theta], "lr": config.user_lr, "weight_decay": 0.0},
    ])
    base_lrs = [g["lr"] for g in opt.param_groups]
    n = prompt.shape[0]
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total = steps_per_epoch * config.refine_epochs
    model.train()
    step = 0
    for _epoch in range(config.refine_epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        for i in range(steps_per_epoch):
            idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
            if len(idx) == 0:
                continue
            set_cosine_lr(opt, base_lrs, step, total)
            u = user[idx]
            db, dg = model.raw_deltas(prompt[idx], chosen[idx], rejected[idx])
            logits = db + (dg * link_fn(model.link, theta[u])).sum(-1)
            # The user's prior spread over their labels, as in PAL's MAP objective.
            prior = (0.5 * ((theta[u] - mu0[u]) ** 2 / var[u]).sum(-1) / counts[u]).mean()
            loss = nll(logits.float()).mean() + prior
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net, 10.0)
            opt.step()
            step += 1
    model.eval()
    return step
