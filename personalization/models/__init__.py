"""Reward models behind one interface (see base.RewardModel); ``MODELS`` maps a kind to its class."""

from __future__ import annotations

from .base import DEFAULT_DROPOUT, ModelConfig, RewardModel
from .bt import BTModel
from .pal import PALModel
from .vpl import VPLModel

MODELS: dict[str, type[RewardModel]] = {"bt": BTModel, "vpl": VPLModel, "pal": PALModel}


def build_model(config: ModelConfig, user_ids=(), profile_encoder=None) -> RewardModel:
    """A fresh model of ``config.kind``."""
    try:
        cls = MODELS[config.kind]
    except KeyError:
        raise ValueError(f"unknown model kind {config.kind!r}; expected one of {sorted(MODELS)}") from None
    return cls(config, user_ids, profile_encoder)


__all__ = ["DEFAULT_DROPOUT", "MODELS", "BTModel", "ModelConfig", "PALModel", "RewardModel", "VPLModel", "build_model"]
