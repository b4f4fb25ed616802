"""Checkpoints as safetensors + a JSON sidecar (never pickle), and standalone per-user exports."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .models import ModelConfig, RewardModel, build_model
from .models.posterior import Posterior, link_fn, link_jacobian
from .profiles import ProfileEncoder
from .standalone import STANDALONE_FORMAT

MODEL_FORMAT = "chorus-personalization/1"
WEIGHTS, CONFIG = "model.safetensors", "config.json"
# ModelConfig's defaults before they became the tuned ones fit() trains with: a sidecar written before a
# setting existed meant the default of its day, so a key missing from an older sidecar reads as this.
_SIDECAR_DEFAULTS: dict[str, Any] = {"hidden": [256], "dropout": 0.0, "latent_dim": 0, "profile_hidden": 64,
                                     "vpl_likelihood": "sample"}


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: str(o)))


def save_model(model: RewardModel, path: str | Path) -> Path:
    """Write ``model.safetensors`` (all parameters and buffers) and ``config.json`` into folder ``path``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": MODEL_FORMAT, "kind": model.kind})
    meta = {
        "format": MODEL_FORMAT,
        "kind": model.kind,
        "config": asdict(model.config),
        "user_ids": model.user_ids,
        "profile_encoder": model.profile_encoder.to_dict() if model.profile_encoder is not None else None,
        "encoder": model.encoder_info,
        "info": _json_safe(model.info),
    }
    (out / CONFIG).write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return out


def load_model(path: str | Path, device: str | torch.device = "cpu") -> RewardModel:
    """Load a folder written by ``save_model``/``model.save`` (eval mode, on ``device``)."""
    folder = Path(path)
    meta = json.loads((folder / CONFIG).read_text())
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{folder / CONFIG}: not a {MODEL_FORMAT} model (format={meta.get('format')!r})")
    prof = meta.get("profile_encoder")
    model = build_model(
        ModelConfig(**{**_SIDECAR_DEFAULTS, **meta["config"]}),
        meta["user_ids"],
        ProfileEncoder.from_dict(prof) if prof else None,
    )
    state = load_file(str(folder / WEIGHTS))
    for name, tensor in model.state_dict().items():
        # Models saved before the mixture-of-types prior existed: keep it empty (single Gaussian).
        if name.startswith("mix_") and name not in state:
            state[name] = tensor
    buffers = dict(model.named_buffers())
    for name, tensor in state.items():  # buffers whose size depends on the data (reference set …)
        if name in buffers and buffers[name].shape != tensor.shape:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(owner, name.rsplit(".", 1)[-1], torch.empty_like(tensor))
    model.load_state_dict(state, strict=True)
    model.info = meta.get("info", {})
    model.encoder_info = meta.get("encoder", {}) or {}
    return model.to(device).eval()


def export_user_model(
    model: RewardModel,
    posterior: Posterior,
    path: str | Path,
    encoder: dict[str, Any] | None = None,
) -> Path:
    """Write a STANDALONE reward model of one user: ``personalization.load_reward_model(path)`` reads it
    with torch + safetensors + transformers only (see standalone.py).

    ``encoder`` ({"model_id", "model_path"}) defaults to the encoder the model was trained with.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    mean = posterior.mean.float().cpu()
    cov = posterior.cov.float().cpu()
    with torch.no_grad():
        w = link_fn(model.link, mean) if mean.numel() else mean
        jac = link_jacobian(model.link, mean) if mean.numel() else cov
        w_cov = jac @ cov @ jac.T if mean.numel() else cov
        offset = float(model.reward_offset(w.to(model.device)).cpu()) if mean.numel() else 0.0
    weights = model.trunk.export_weights("trunk.")
    head = model.export_head()
    weights.update(head)
    pop = model.population
    lam = model.config.personal_weight if pop is not None else 1.0
    if pop is not None:
        # The population back-off travels as a second trunk + base head (same shapes as the first).
        weights.update(pop.trunk.export_weights("pop.trunk."))
        for key, value in pop.export_head().items():
            if key in ("head.base_w", "head.base_b"):
                weights["pop." + key] = value
    weights["user.w"] = w.contiguous()
    weights["user.w_cov"] = (0.5 * (w_cov + w_cov.T)).contiguous()
    save_file(weights, str(out / WEIGHTS), metadata={"format": STANDALONE_FORMAT})
    enc = dict(encoder if encoder is not None else model.encoder_info)
    cfg = {
        "format": STANDALONE_FORMAT,
        "encoder": {"model_id": enc.get("model_id"), "model_path": enc.get("model_path")},
        "dim": model.config.dim,
        "hidden": list(model.config.hidden),
        "features": model.config.features,
        "n_layers": len(model.trunk.layers),
        "head": {"proj": "head.proj_w" in head, "sqnorm": float(head.get("head.sqnorm", torch.zeros(1))[0])},
        "user": {"id": posterior.user_id, "n_labels": posterior.n_labels, "offset": offset},
        # reward = (personal_weight · (base + w·basis + offset) + (1 − personal_weight) · population) / temperature
        "blend": {"personal_weight": lam, "population": pop is not None},
        "temperature": float(model.config.temperature),
        "source": {"kind": model.kind, "model_format": MODEL_FORMAT},
    }
    (out / CONFIG).write_text(json.dumps(cfg, indent=1))
    return out
