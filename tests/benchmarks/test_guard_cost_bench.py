"""benchmarks/guard_cost_bench.py runs end to end on a tiny population and reports every row asked for."""

from __future__ import annotations

from personalization.train import FitConfig

from .conftest import load


def test_it_times_the_fits_it_is_asked_for(capsys, monkeypatch):
    guard_cost_bench = load("guard_cost_bench")

    small = FitConfig.from_dict({"epochs": 1, "hidden": [8], "latent_dim": 2, "encoder_hidden": 8,
                                 "profile_hidden": 4, "progress": False})
    monkeypatch.setattr(guard_cost_bench, "FitConfig", lambda **kw: small)
    assert guard_cost_bench.main(["--pairs", "240", "--users", "24", "--only", "bt,guarded"]) == 0
    out = capsys.readouterr().out
    assert "240 pairs, 24 users" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| fit")]
    assert [r.split(" | ")[0] for r in rows] == ["| bt", "| vpl guarded, 1 process", "| vpl guarded, 2 processes"]
    assert "| False |" in rows[1] and ("| True |" in rows[2] or "| False |" in rows[2])  # forked or not
