"""A standalone personal reward model: one user's reward, loadable with torch + safetensors + transformers.

This file is self-contained (copy it anywhere): it needs ``personalization.encoder`` only if importable,
and otherwise embeds texts itself (mean-pooled, L2-normalised Hugging Face encoder — the same recipe).

Folder layout (written by ``personalization.export_user_model``):
``config.json`` — format, encoder {model_id, model_path}, trunk shape, head kind, user facts;
``model.safetensors`` — trunk.* (first layer blocks and hidden layers), head.*, user.w (the user's weights
on the reward basis) and user.w_cov (their posterior covariance, used by ``prefer``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

STANDALONE_FORMAT = "chorus-personal-reward/1"


class _HFEncoder:
    """Fallback text encoder when personalization.encoder is not importable."""

    def __init__(self, model_path: str, device: str = "cpu", max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
        self.device, self.max_length = device, max_length
        self.model_id = Path(model_path).name
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)
        return pooled.to(torch.float16).float().cpu()


def _build_encoder(spec: dict[str, Any], model_path: str | None, device: str) -> Any:
    path = model_path if model_path is not None else spec.get("model_path")
    try:
        from personalization.encoder import EncoderConfig, TextEncoder
    except ImportError:
        if path is None:
            raise RuntimeError("no encoder model_path in config and personalization.encoder is unavailable") from None
        return _HFEncoder(path, device="cpu" if device == "auto" else device)
    return TextEncoder(EncoderConfig(model_path=path, device=device))


class PersonalRewardModel:
    """One user's reward model over texts: ``score(prompt, response)`` and ``prefer(prompt, a, b)``."""

    def __init__(self, path: str | Path, encoder: Any = None, encoder_path: str | None = None,
                 device: str = "cpu"):
        folder = Path(path)
        self.config: dict[str, Any] = json.loads((folder / "config.json").read_text())
        if self.config.get("format") != STANDALONE_FORMAT:
            raise ValueError(f"{folder}: not a {STANDALONE_FORMAT} export")
        self.weights = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.user_id: str | None = self.config["user"].get("id")
        self.encoder = encoder if encoder is not None else _build_encoder(self.config["encoder"], encoder_path, device)
        want = self.config["encoder"].get("model_id")
        got = getattr(self.encoder, "model_id", None)
        if want and got and want != got and encoder is None and encoder_path is None:
            raise ValueError(f"encoder mismatch: the model was trained on {want!r} but {got!r} was loaded")

    # ---- embeddings → reward ---------------------------------------------------------------------
    def _trunk(self, p: torch.Tensor, r: torch.Tensor, prefix: str = "trunk.") -> torch.Tensor:
        w = self.weights
        h = F.linear(r, w[f"{prefix}first.w_r"], w[f"{prefix}first.bias"])
        if f"{prefix}first.w_p" in w:
            h = h + F.linear(p, w[f"{prefix}first.w_p"])
        if f"{prefix}first.w_x" in w:
            h = h + F.linear(p * r, w[f"{prefix}first.w_x"])
        h = F.silu(h)
        for i in range(int(self.config["n_layers"])):
            h = F.silu(F.linear(h, w[f"{prefix}layers.{i}.weight"], w[f"{prefix}layers.{i}.bias"]))
        return h

    def _blend(self) -> tuple[float, float]:
        """(weight of the personal reward, temperature); exports without a population back-off: (1, τ)."""
        blend = self.config.get("blend") or {}
        lam = float(blend.get("personal_weight", 1.0)) if blend.get("population") else 1.0
        return lam, float(self.config.get("temperature", 1.0))

    def _base_basis(self, p: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights
        f = self._trunk(p, r)
        if self.config["head"]["proj"]:
            f = F.linear(f, w["head.proj_w"], w["head.proj_b"])
        base = f @ w["head.base_w"] + w["head.base_b"] + float(self.config["head"]["sqnorm"]) * (f * f).sum(-1)
        basis = F.linear(f, w["head.basis_w"], w["head.basis_b"])
        lam, tau = self._blend()
        if "pop.head.base_w" in w and lam < 1.0:
            # The population back-off (the guard's blend): r = λ·personal + (1 − λ)·population.
            pop = self._trunk(p, r, "pop.trunk.") @ w["pop.head.base_w"] + w["pop.head.base_b"]
            base, basis = lam * base + (1.0 - lam) * pop, lam * basis
        return base / tau, basis / tau

    @torch.no_grad()
    def reward_embeddings(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """Rewards (n,) of (n, d) response embeddings under (n, d) or (d,) prompt embeddings."""
        p, r = prompt.float(), response.float()
        p = p.reshape(1, -1).expand(r.shape[0], -1) if p.dim() == 1 else p
        base, basis = self._base_basis(p, r)
        lam, tau = self._blend()
        return base + basis @ self.weights["user.w"] + lam * float(self.config["user"]["offset"]) / tau

    @torch.no_grad()
    def prefer_embeddings(self, prompt: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """p(a ≻ b) (n,) with the user's posterior uncertainty folded in (probit approximation)."""
        p = prompt.float()
        p = p.reshape(1, -1).expand(a.shape[0], -1) if p.dim() == 1 else p
        ba, ga = self._base_basis(p, a.float())
        bb, gb = self._base_basis(p, b.float())
        dg = ga - gb
        m = ba - bb + dg @ self.weights["user.w"]
        s2 = ((dg @ self.weights["user.w_cov"]) * dg).sum(-1).clamp_min(0)
        return torch.sigmoid(m / torch.sqrt(1.0 + math.pi / 8.0 * s2))

    # ---- texts -------------------------------------------------------------------------------------
    def score(self, prompt: str, response: str) -> float:
        """The user's reward of ``response`` to ``prompt``."""
        emb = self.encoder.encode([prompt, response])
        return float(self.reward_embeddings(emb[0], emb[1:2])[0])

    def scores(self, prompt: str, responses: Sequence[str]) -> list[float]:
        emb = self.encoder.encode([prompt, *responses])
        return [float(x) for x in self.reward_embeddings(emb[0], emb[1:])]

    def prefer(self, prompt: str, a: str, b: str) -> float:
        """Probability that the user prefers response ``a`` to ``b``."""
        emb = self.encoder.encode([prompt, a, b])
        return float(self.prefer_embeddings(emb[0], emb[1:2], emb[2:3])[0])


def load_reward_model(path: str | Path, encoder: Any = None, encoder_path: str | None = None,
                      device: str = "cpu") -> PersonalRewardModel:
    """Load a per-user export; builds its TextEncoder from the config unless ``encoder`` is given."""
    return PersonalRewardModel(path, encoder=encoder, encoder_path=encoder_path, device=device)
