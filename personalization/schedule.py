"""The one learning-rate schedule: optional linear warm-up, then cosine decay to zero."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def cosine_lr(step: int, total: int, peak: float = 1.0, warmup: int = 0) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: ``peak`` times a factor that rises linearly to 1
    over the first ``warmup`` steps (0 = none) and decays by a half cosine from 1 at step 0 to 0 at step
    ``total``. With ``peak = 1`` it is the multiplier of a base rate."""
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    # The factor first, then the peak: the order train.py always multiplied in (fits stay bit-identical).
    return peak * (warm * 0.5 * (1 + math.cos(math.pi * (step / max(total, 1)))))


def set_cosine_lr(opt: torch.optim.Optimizer, peaks: Sequence[float], step: int, total: int,
                  warmup: int = 0) -> None:
    """Set every param group of ``opt`` to its ``cosine_lr`` at ``step`` (``peaks``: one per group, the
    rates the groups started with)."""
    for group, peak in zip(opt.param_groups, peaks, strict=True):
        group["lr"] = cosine_lr(step, total, peak, warmup)
