"""Shared by the benchmark harnesses: update one section of a markdown report (e.g. BENCHMARKS.md)."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, section: str, text: str) -> None:
    """Replace (or append) the section headed ``section`` with ``text``, leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text.rstrip() + "\n\n", old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new.rstrip() + "\n")
