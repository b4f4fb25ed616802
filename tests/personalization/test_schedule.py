import math

import pytest
import torch

from personalization.schedule import cosine_lr, set_cosine_lr


def test_it_decays_from_the_peak_to_zero_by_half_a_cosine():
    assert cosine_lr(0, 100, 3e-3) == pytest.approx(3e-3)
    assert cosine_lr(50, 100, 3e-3) == pytest.approx(1.5e-3)
    assert cosine_lr(100, 100, 3e-3) == pytest.approx(0.0, abs=1e-18)
    steps = [cosine_lr(s, 100) for s in range(101)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))
    assert cosine_lr(25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_it_warms_up_linearly_then_follows_the_cosine():
    total, warm = 200, 10
    assert cosine_lr(0, total, 1.0, warmup=warm) == pytest.approx(0.1 * cosine_lr(0, total))
    assert cosine_lr(4, total, 1.0, warmup=warm) == pytest.approx(0.5 * cosine_lr(4, total))
    for s in (9, 50, 199):
        assert cosine_lr(s, total, 1.0, warmup=warm) == cosine_lr(s, total)


def test_it_keeps_the_factor_train_py_always_used():
    # The loop's own formula before there was a schedule module: fits must stay bit-identical.
    total, warm, lr = 480, 24, 3e-3
    for step in range(total):
        scale = min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * (step / max(total, 1))))
        assert cosine_lr(step, total, lr, warmup=warm) == lr * scale


def test_it_sets_every_param_group_from_its_own_peak():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 5e-2}])
    peaks = [g["lr"] for g in opt.param_groups]
    set_cosine_lr(opt, peaks, 30, 60)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-4, 2.5e-2])
    with pytest.raises(ValueError):
        set_cosine_lr(opt, peaks[:1], 0, 60)
