"""Text-level convenience: a reward model plus a TextEncoder, taking strings instead of embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .base import RewardModel
from .posterior import Posterior


class TextRewardModel:
    """``predict_proba(posterior, prompt, a, b)`` / ``reward(posterior, prompt, response)`` on strings."""

    def __init__(self, model: RewardModel, encoder: Any):
        if getattr(encoder, "dim", model.config.dim) != model.config.dim:
            raise ValueError(f"encoder dim {encoder.dim} != model dim {model.config.dim}")
        self.model = model
        self.encoder = encoder

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encoder.encode(list(texts))

    def posterior(
        self, context: Sequence[tuple[str, str, str]] = (), profile: Mapping[str, Any] | None = None
    ) -> Posterior:
        """Posterior of a user from (prompt, chosen, rejected) strings and an optional profile."""
        if not context:
            return self.model.prior(profile)
        n = len(context)
        emb = self.embed([c[0] for c in context] + [c[1] for c in context] + [c[2] for c in context])
        return self.model.posterior((emb[:n], emb[n : 2 * n], emb[2 * n :]), profile)

    def update(self, post: Posterior, prompt: str, chosen: str, rejected: str) -> Posterior:
        emb = self.embed([prompt, chosen, rejected])
        return self.model.update(post, emb[0], emb[1], emb[2])

    def predict_proba(self, post: Posterior, prompt: str, a: str, b: str) -> tuple[float, float]:
        """p(a ≻ b) for the user and its posterior std."""
        emb = self.embed([prompt, a, b])
        p, std = self.model.predict_proba(post, emb[0], emb[1:2], emb[2:3])
        return float(p[0]), float(std[0])

    def info_gain(self, post: Posterior, prompt: str, a: str, b: str) -> float:
        emb = self.embed([prompt, a, b])
        return float(self.model.info_gain(post, emb[0], emb[1:2], emb[2:3])[0])

    def reward(self, post: Posterior, prompt: str, response: str) -> float:
        emb = self.embed([prompt, response])
        return float(self.model.reward(post, emb[0], emb[1:2])[0])
