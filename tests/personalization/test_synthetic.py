"""personalization/synthetic.py: the one population model (tensor benchmarks, app simulation, demo)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from personalization import profiles, synthetic, synthetic_text
from personalization.synthetic import Population, UserType


def test_it_draws_named_types_with_ground_truth_and_profiles():
    pop = synthetic_text.opposite()
    users = pop.draw_users(10, random.Random(0), prefix="sim-")
    assert [u.type_name for u in users].count("short") == 3  # stratified: 30% of 10
    assert users[0].id == "sim-1"
    diffs = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    short = next(u for u in users if u.type_name == "short")
    p = pop.prob(short, diffs)
    assert isinstance(p, np.ndarray) and p[0] < 0.5 < p[1] and abs(p[2] - 0.5) < 1e-9
    assert pop.bayes_optimal_accuracy(short, diffs) == pytest.approx(np.maximum(p, 1 - p).mean())
    labels = pop.label(short, diffs, random.Random(1))
    assert labels.dtype == bool and labels.shape == (3,)
    # sliders agree with the weights: short-answer people rate "directly answering" high
    assert short.profile["stated_prefs"]["helpfulness"] > 50


def test_it_draws_from_either_generator_reproducibly():
    """The same population model under a torch.Generator (tensor benchmarks) or a random.Random (the app's
    simulation): each seeded draw repeats exactly, and tensors in give tensors out."""
    pop = Population(synthetic.PRESETS["pets"]())
    for make in (lambda: torch.Generator().manual_seed(3), lambda: random.Random(3)):
        a, b = pop.draw_users(6, make(), prefix="x"), pop.draw_users(6, make(), prefix="x")
        assert [u.type for u in a] == [u.type for u in b] and [u.profile for u in a] == [u.profile for u in b]
        assert all(torch.equal(u.weights, v.weights) for u, v in zip(a, b, strict=True))
    pairs = pop.sample_pairs(8)
    user = pop.draw_users(1, random.Random(0))[0]  # float64 weights against float32 pairs
    assert pop.prob(user, pairs).dtype == torch.float32
    assert pop.label(user, pairs).dtype == torch.bool


def test_it_echoes_weights_in_sliders_through_the_one_stated_preference_mapping():
    """Every slider the mapping ties to an attribute moves with that attribute's weight, in the mapping's
    direction (the dashboard reads revealed preferences back through the same mapping)."""
    assert synthetic.STATED_PREF_ATTRIBUTES is profiles.STATED_PREF_ATTRIBUTES
    assert synthetic.SLIDERS == list(profiles.STATED_PREF_CODES)
    attrs = sorted({attr for attr, _ in profiles.STATED_PREF_ATTRIBUTES.values()})
    for attr in attrs:
        likes = Population.of_types([UserType("likes", {attr: 1.0}, 1.0, {})], attrs, individual_std=0.0,
                                    slider_noise=0.0)
        user = likes.draw_users(1, random.Random(0))[0]
        for code, value in user.profile["stated_prefs"].items():
            link = profiles.STATED_PREF_ATTRIBUTES.get(code)
            if link and link[0] == attr:
                assert value == 50 + round(18.0 * link[1]), (code, attr, value)
            else:
                assert value == 50, (code, attr, value)
