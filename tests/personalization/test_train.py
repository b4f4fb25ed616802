import dataclasses
from dataclasses import replace

import pytest

from personalization import fit
from personalization.models import ModelConfig
from personalization.train import FitConfig

from .conftest import make_data, small_config


def test_it_trains_with_the_tuned_model_defaults():
    # What FitConfig declared field by field before it held a ModelConfig (kind, dim and profile_dim
    # come from fit's arguments and the data).
    tuned = {"hidden": [128], "features": "p_r_pr", "latent_dim": 8, "encoder_hidden": 128, "free_bits": 0.05,
             "reward_scaling": False, "vpl_likelihood": "probit", "pal_dim": 32, "pal_form": "dot",
             "prior_std": 1.0, "mixture_max_k": 6, "profile_hidden": 16, "n_reference": 128, "laplace_iters": 20}
    for kind, dropout in (("bt", 0.5), ("vpl", 0.2), ("pal", 0.5)):
        cfg = FitConfig().model.for_data(kind, 384, 7)
        expected = {**tuned, "kind": kind, "dim": 384, "dropout": dropout,
                    "latent_dim": 0 if kind == "bt" else 8, "profile_dim": 0 if kind == "bt" else 7}
        assert {k: v for k, v in dataclasses.asdict(cfg).items() if k in expected} == expected


def test_it_reads_nested_and_flat_settings():
    nested = FitConfig.from_dict({"epochs": 5, "model": {"hidden": [64], "latent_dim": 4}})
    flat = FitConfig.from_dict({"epochs": 5, "hidden": [64], "latent_dim": 4})
    assert nested == flat == FitConfig(epochs=5, model=ModelConfig(hidden=[64], latent_dim=4))
    assert FitConfig.from_dict({"model": ModelConfig(pal_dim=8), "pal_form": "distance"}).model == ModelConfig(
        pal_dim=8, pal_form="distance")
    with pytest.raises(TypeError):
        FitConfig.from_dict({"epochs": 5, "no_such_setting": 1})
    with pytest.raises(TypeError):
        FitConfig.from_dict({"model": {"no_such_setting": 1}})


def test_it_never_changes_a_config_and_records_the_one_it_used():
    cfg = small_config(epochs=2, guard=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    data, profiles, *_ = make_data(n_users=6, per_user=10)
    before = replace(cfg)
    model = fit("pal", data, profiles, cfg, seed=0)
    assert cfg == before
    assert model.info["fit_config"]["model"]["hidden"] == [16]
    assert FitConfig.from_dict(model.info["fit_config"]) == cfg
