"""The guard's second fit process: same models as in-process, and a failed child costs nothing."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from personalization.parallel import Beside, can_fork, usable_cores
from personalization.train import _fit

from .conftest import make_data, small_config

# Not can_fork(): that also refuses a process with other threads, which the rest of the suite leaves behind
# (asgiref's pools, live servers); the tests fork anyway, as nothing here holds a lock across the fork.
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods() or usable_cores() < 2,
                                reason="needs fork and 2+ cores")


@needs_fork
def test_it_fits_the_same_model_in_a_forked_process():
    data, _profiles, _direction, _types = make_data(n_users=6, per_user=10, seed=4)
    cfg = small_config(guard=False)
    job = Beside(_fit, "bt", data, None, cfg, torch.device("cpu"), 3)
    assert job.forked
    here = _fit("bt", data, None, cfg, torch.device("cpu"), 3)
    there = job.result()
    assert there.info["n_pairs"] == len(data)
    for (name, a), (_, b) in zip(here.state_dict().items(), there.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


_PARENT = os.getpid()


def _fails_in_a_child(x: int) -> int:
    if os.getpid() != _PARENT:
        raise RuntimeError("boom in the child")
    return x * 2


@needs_fork
def test_it_runs_the_function_here_when_the_child_fails(caplog):
    job = Beside(_fails_in_a_child, 21)
    assert job.forked
    assert job.result() == 42
    assert "boom in the child" in caplog.text


def test_it_runs_in_this_process_when_disabled():
    job = Beside(_fails_in_a_child, 4, enabled=False)
    assert not job.forked
    assert job.result() == 8


def test_it_never_forks_for_cuda():
    assert not can_fork(torch.device("cuda"))


def test_it_never_forks_a_process_with_other_threads():
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="busy")
    t.start()
    try:
        assert not can_fork(torch.device("cpu"))
    finally:
        stop.set()
        t.join()


@needs_fork
def test_it_gives_the_same_guarded_model_with_and_without_the_second_process(monkeypatch):
    from dataclasses import replace

    import personalization.train as train
    from personalization.train import fit

    monkeypatch.setattr(train, "can_fork", lambda device: True)

    data, profiles, _direction, _types = make_data(n_users=10, per_user=16, seed=5)
    cfg = small_config()
    two = fit("vpl", data, profiles, cfg, seed=1)
    one = fit("vpl", data, profiles, replace(cfg, parallel=False), seed=1)
    assert two.info["guard"]["parallel"] and not one.info["guard"]["parallel"]
    assert two.info["guard"]["chosen"] == one.info["guard"]["chosen"]
    assert two.config == one.config
    for (name, a), (_, b) in zip(two.state_dict().items(), one.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
