"""Input the database or Python cannot store or parse safely, refused with a clear message instead of a 500.

PostgreSQL text cannot hold NUL (U+0000) and UTF-8 cannot encode a lone surrogate (JSON's "\\ud800"):
either reaches the database as an exception. Python refuses to convert integers of more than 4,300 digits
(a ValueError json.loads does not turn into a JSONDecodeError), a deeply nested document exhausts the
recursion limit, and NaN / Infinity are not JSON at all (json.loads accepts them by default).
One set of rules for API bodies, import files and form fields.
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 40  # far beyond any id, count or rating; a 5,000-digit number is an attack


class BadInput(ValueError):
    """The message says what was wrong (without echoing the value)."""


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (not valid Unicode text)"
    return None


def _bad_constant(name: str) -> Any:
    raise BadInput(f"{name} is not a valid JSON number")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        raise BadInput(f"a number has more than {MAX_NUMBER_CHARS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadInput(f"a number has more than {MAX_NUMBER_CHARS} characters")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadInput("a number is out of range")
    return value


def check_value(obj: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise BadInput for nesting deeper than max_depth or a string (or key) that cannot be stored."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if problem := text_problem(value):
                raise BadInput(f"a text value {problem}")
        elif isinstance(value, dict | list):
            if depth > max_depth:
                raise BadInput(f"nested more than {max_depth} levels deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    if problem := text_problem(key):
                        raise BadInput(f"a key {problem}")
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and value != value:  # NaN from a caller that built the value itself
            raise BadInput("NaN is not a valid JSON number")


def strict_loads(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads that refuses NaN/Infinity, huge numbers, deep nesting, NUL and lone surrogates.

    Raises BadInput (a ValueError) with a message fit for the caller; json.JSONDecodeError stays as is.
    """
    try:
        obj = json.loads(text, parse_constant=_bad_constant, parse_int=_parse_int, parse_float=_parse_float)
    except RecursionError as exc:
        raise BadInput(f"nested more than {max_depth} levels deep") from exc
    check_value(obj, max_depth=max_depth)
    return obj
