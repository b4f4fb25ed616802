"""Bradley–Terry: one global reward for everybody (the baseline). Its posterior is empty (L = 0)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import RewardModel
from .posterior import nll


class BTModel(RewardModel):
    kind = "bt"

    def __init__(self, config, user_ids=(), profile_encoder=None):
        super().__init__(config, user_ids, profile_encoder)  # the config's resolved(): no latent
        self.base_head = nn.Linear(self.trunk.out_dim, 1)

    def basis(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base_head(h).squeeze(-1), h.new_zeros(h.shape[0], 0)

    def training_loss(
        self, batch: dict[str, torch.Tensor], step_frac: float, fit: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        db, _ = self.raw_deltas(batch["prompt"], batch["chosen"], batch["rejected"])
        loss = nll(db).mean()
        return loss, {"nll": float(loss.detach())}

    def export_head(self) -> dict[str, torch.Tensor]:
        h = self.trunk.out_dim
        out = {
            "head.base_w": self.base_head.weight.reshape(h),
            "head.base_b": self.base_head.bias.reshape(1),
            "head.basis_w": torch.zeros(0, h),
            "head.basis_b": torch.zeros(0),
        }
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}
