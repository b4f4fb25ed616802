"""benchmarks/judgment_cpu_bench.py at toy size: it drives the real ASGI app and reports statements per loop."""

from __future__ import annotations

import pytest

from feedback.models import Study
from tests.benchmarks.conftest import load


@pytest.mark.django_db(transaction=True)  # the requests run in threads of their own: they must see the study
def test_it_runs_the_annotation_loop_and_reports_statements_per_loop():
    bench = load("judgment_cpu_bench")
    result = bench.run_bench(annotators=2, loops=3, batches=2, warmup=1, profile=True, hooks=False)
    assert result["errors"] == {}
    assert len(result["cpu_ms_per_loop_batches"]) == 2 and result["cpu_ms_per_loop_median"] > 0
    stmts = result["statements_per_loop"]
    # Constant per loop (no N+1): next-pair claims a pair, the judgment records it; at most these many.
    assert 0 < stmts["next_pair"] <= 6 and 0 < stmts["judgment"] <= 6
    assert stmts["total"] == stmts["next_pair"] + stmts["judgment"]
    profile = result["profile_ms_per_loop"]
    assert profile["python_calls_per_loop"] > 0
    assert profile["whole sync chain (middleware + view)"] >= profile["DRF view dispatch (all of the view)"] > 0
    assert not Study.objects.exists()  # the study is deleted afterwards


def test_it_refuses_a_database_that_is_not_postgresql(monkeypatch):
    bench = load("judgment_cpu_bench")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.sqlite3")
    with pytest.raises(SystemExit, match="PostgreSQL"):
        bench.setup_django(bench.parse_args([]))
