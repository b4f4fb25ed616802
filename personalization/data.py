"""JSONL readers and writer for preference data, with line-numbered errors.

Every reader accepts plain or gzip-compressed files (detected by magic bytes, whatever the name), skips
blank lines, checks every row, and raises one :class:`DataError` listing all bad lines at once.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .encoder import conversation_text

PathLike = str | os.PathLike[str]
T = TypeVar("T")

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_LISTED = 100  # bad lines spelled out in str(DataError); .errors always holds all of them


class DataError(ValueError):
    """Bad input file. ``str(e)`` starts with ``"{path}:{line}: {reason}"`` for the first bad line; further
    bad lines follow, one per line. ``e.errors`` holds every ``(line, reason)``; lines are 1-based."""

    def __init__(self, path: PathLike, errors: list[tuple[int, str]]):
        if not errors:
            raise ValueError("DataError needs at least one error")
        self.path = str(path)
        self.errors = list(errors)
        self.line, self.reason = self.errors[0]
        lines = [f"{self.path}:{line}: {reason}" for line, reason in self.errors[:_MAX_LISTED]]
        if len(self.errors) > _MAX_LISTED:
            lines.append(f"… and {len(self.errors) - _MAX_LISTED} more bad lines in {self.path}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class PreferenceRow:
    user_id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class TestRow:
    __test__ = False  # not a pytest test class, despite the name

    id: str
    user_id: str
    prompt: str
    a: str
    b: str


class _RowError(Exception):
    pass


# -------------------------------------------------------------------------------------------- reading


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of every line; gzip transparently."""
    opener: Callable[[], Any] = (
        (lambda: gzip.open(path, "rb")) if _is_gzip(path) else (lambda: open(path, "rb"))
    )
    with opener() as fh:
        yield from enumerate(fh, start=1)


def _objects(path: PathLike, errors: list[tuple[int, str]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parsed JSON objects with their line numbers; bad lines are appended to ``errors``."""
    p = Path(path)
    number = 0
    try:
        for number, raw in _lines(p):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append((number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                errors.append((number, f"invalid JSON: {exc.msg} (column {exc.colno})"))
                continue
            if not isinstance(obj, dict):
                errors.append((number, f"expected a JSON object, got {_kind(obj)}"))
                continue
            yield number, obj
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        errors.append((number + 1, f"corrupt gzip data: {exc}"))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _text(obj: dict[str, Any], field: str) -> str:
    if field not in obj:
        raise _RowError(f"missing field {field!r}")
    value = obj[field]
    if not isinstance(value, str):
        raise _RowError(f"field {field!r} must be a string, got {_kind(value)}")
    if not value.strip():
        raise _RowError(f"field {field!r} is empty")
    return value


def _ident(obj: dict[str, Any], field: str) -> str:
    if field not in obj:
        raise _RowError(f"missing field {field!r}")
    value = obj[field]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _RowError(f"field {field!r} must be a string or an integer, got {_kind(value)}")
    if not value.strip():
        raise _RowError(f"field {field!r} is empty")
    return value


def _prompt(obj: dict[str, Any]) -> str:
    if "prompt" not in obj:
        raise _RowError("missing field 'prompt'")
    value = obj["prompt"]
    if not isinstance(value, str | list):
        raise _RowError(f"field 'prompt' must be a string or a list of chat messages, got {_kind(value)}")
    try:
        text = conversation_text(value)
    except ValueError as exc:
        raise _RowError(f"field 'prompt': {exc}") from None
    if not text.strip():
        raise _RowError("field 'prompt' is empty")
    return text


def _read(
    path: PathLike,
    parse: Callable[[dict[str, Any]], T],
    unique: tuple[str, Callable[[T], str]] | None = None,
) -> list[tuple[int, T]]:
    """Parse every object of ``path``; ``unique=(name, get)``: ``get(row)`` must not repeat. Raises all errors."""
    errors: list[tuple[int, str]] = []
    rows: list[tuple[int, T]] = []
    first_seen: dict[str, int] = {}
    for number, obj in _objects(path, errors):
        try:
            row = parse(obj)
        except _RowError as exc:
            errors.append((number, str(exc)))
            continue
        if unique is not None:
            name, get = unique
            ident = get(row)
            if ident in first_seen:
                errors.append((number, f"duplicate {name} {ident!r} (first on line {first_seen[ident]})"))
                continue
            first_seen[ident] = number
        rows.append((number, row))
    if errors:
        raise DataError(path, sorted(errors, key=lambda e: e[0]))
    return rows


def _preference(obj: dict[str, Any]) -> PreferenceRow:
    problems: list[str] = []
    values: dict[str, str] = {}
    for field, get in (("user_id", _ident), ("prompt", None), ("chosen", _text), ("rejected", _text)):
        try:
            values[field] = _prompt(obj) if get is None else get(obj, field)
        except _RowError as exc:
            problems.append(str(exc))
    if problems:
        raise _RowError("; ".join(problems))
    return PreferenceRow(**values)


def _test_row(obj: dict[str, Any]) -> TestRow:
    problems: list[str] = []
    values: dict[str, str] = {}
    for field, get in (("id", _ident), ("user_id", _ident), ("prompt", None), ("a", _text), ("b", _text)):
        try:
            values[field] = _prompt(obj) if get is None else get(obj, field)
        except _RowError as exc:
            problems.append(str(exc))
    if problems:
        raise _RowError("; ".join(problems))
    return TestRow(**values)


def _profile(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    user_id = _ident(obj, "user_id")
    return user_id, {k: v for k, v in obj.items() if k != "user_id"}


def read_train(path: PathLike) -> list[PreferenceRow]:
    """Rows ``{"user_id", "prompt", "chosen", "rejected"}`` (extra fields ignored); also for context files."""
    return [row for _, row in _read(path, _preference)]


def read_test(path: PathLike) -> list[TestRow]:
    """Rows ``{"id", "user_id", "prompt", "a", "b"}`` (extra fields ignored); ids must be unique."""
    return [row for _, row in _read(path, _test_row, unique=("id", lambda r: r.id))]


def read_profiles(path: PathLike) -> dict[str, dict[str, Any]]:
    """Rows ``{"user_id", <field>: <value>, …}`` → ``{user_id: {field: value, …}}``; user_id unique."""
    rows = _read(path, _profile, unique=("user_id", lambda r: r[0]))
    return dict(row for _, row in rows)


# -------------------------------------------------------------------------------------------- writing


def _as_dict(row: Any) -> dict[str, Any]:
    if isinstance(row, Mapping):
        return dict(row)
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    raise TypeError(f"write_jsonl rows must be mappings or dataclass instances, got {type(row).__name__}")


def write_jsonl(path: PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line (UTF-8, not ASCII-escaped); gzip when the name ends in ``.gz``.

    Parent folders are created; the file appears atomically (temp file + ``os.replace``).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            sink: Any = (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if p.suffix == ".gz" else raw
            )
            try:
                for row in rows:
                    line = json.dumps(_as_dict(row), ensure_ascii=False, separators=(",", ":"))
                    sink.write(line.encode("utf-8") + b"\n")
            finally:
                if sink is not raw:
                    sink.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
