"""Shared by the benchmark harnesses: the command line a report quotes, and writing the report out."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_report_arguments(ap: argparse.ArgumentParser, *, json_dump: bool = False) -> None:
    """The options every harness shares: where the report goes and what it says about the run."""
    ap.add_argument("--write", default=None, help="markdown file whose section to update (e.g. BENCHMARKS.md)")
    if json_dump:
        ap.add_argument("--json", default=None, help="also dump raw results as JSON here")
    ap.add_argument("--date", default=_dt.date.today().isoformat(), help="date written into the report")
    ap.add_argument("--machine", default=f"{os.cpu_count()}-core CPU, no GPU", help="machine description")


def write_section(path: Path, section: str, text: str) -> None:
    """Replace (or append) the section headed ``section`` with ``text``, leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text.rstrip() + "\n\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new.rstrip() + "\n")


def quoted_command(script: str, argv: Sequence[str], drop: Sequence[str] = ("--json",)) -> str:
    """The command behind a report, without the options that only say where files went (``drop``, each
    taking one value, as ``--flag VALUE`` or ``--flag=VALUE``)."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in drop:
            skip = True
        elif not any(arg.startswith(f"{flag}=") for flag in drop):
            shown.append(arg)
    return shlex.join([".venv/bin/python", script, *shown])


def publish(text: str, *, section: str, write: str | None, json_path: str | None, raw: Any) -> None:
    """Print the report; dump the raw results as JSON and update the markdown section when asked."""
    print(text)
    if json_path:
        Path(json_path).write_text(json.dumps(raw, indent=1, default=str))
    if write:
        write_section(Path(write), section, text)


def targets_table(rows: Sequence[tuple[str, str, float, float, float]], vs_bt: str,
                  seen_target: float = 0.94) -> list[str]:
    """Issue 3's verdicts as markdown lines: rows of (population, model, seen rel, new@10 rel, seen
    difference to BT). Personal models must beat BT by 0.01 where tastes differ and lose at most 0.005
    on the homogeneous population. The seen target is 0.94 of Bayes-optimal since issue 11 (was 0.95)."""
    lines = [f"| population | model | seen ≥ {seen_target:.2f} | new@10 ≥ 0.90 | vs BT ({vs_bt}) |",
             "|---|---|---|---|---|"]
    for population, kind, seen, new10, diff in rows:
        ok_bt = diff > 0.01 if population != "homogeneous" else diff > -0.005
        lines.append(f"| {population} | {kind} | {_mark(seen >= seen_target)} {seen:.3f} | {_mark(new10 >= 0.90)} "
                     f"{new10:.3f} | {_mark(ok_bt)} {diff:+.3f} |")
    return lines


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"
