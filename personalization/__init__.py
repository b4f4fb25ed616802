"""Personalized reward models on frozen text embeddings (BT baseline, VPL, PAL) — pure torch, no Django.

Public API (imported lazily, so ``from personalization import load_reward_model`` pulls in only torch,
safetensors and the standalone loader):

* ``fit(kind, data, profiles=None, config=FitConfig(), device="cpu", seed=0)`` → a model
* ``load_model(dir)`` / ``model.save(dir)`` — safetensors + JSON checkpoints
* ``Posterior`` — a user's Gaussian belief (the collapse of per-type components under a mixture-of-types
  prior, which it carries along); ``model.posterior/update/predict_proba/info_gain/reward``
* ``export_user_model(model, posterior, dir)`` and ``load_reward_model(dir)`` — standalone per-user models
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "fit": "train",
    "FitConfig": "train",
    "PreferenceData": "train",
    "load_model": "artifacts",
    "save_model": "artifacts",
    "export_user_model": "artifacts",
    "load_reward_model": "standalone",
    "PersonalRewardModel": "standalone",
    "Posterior": "models.posterior",
    "ModelConfig": "models",
    "RewardModel": "models",
    "MODELS": "models",
    "build_model": "models",
    "ProfileEncoder": "profiles",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'personalization' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
