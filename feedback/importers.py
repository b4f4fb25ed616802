"""Parse and validate an import file whole, before anything touches the database.

Three row forms, detected once per file from its first object and required of every row:
  - "trl":       {"prompt", "chosen", "rejected"}  — the pair is a task; the label is kept as a reference
  - "responses": {"prompt", "responses": [{"text", "model"}, ...]} — pairs drawn from all responses
  - "hh":        {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …} — split into the shared
                 conversation and the two final assistant turns
JSONL or CSV (gzip accepted). Every bad line is reported with its number; no partial imports.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from typing import IO, Any

from django.conf import settings

from feedback.validation import BadInput, check_value, strict_loads, text_problem

FORMATS = ("trl", "responses", "hh")


@dataclass
class ParsedCandidate:
    text: str
    model_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedPrompt:
    line: int
    text: str
    context: list[dict[str, str]]
    candidates: list[ParsedCandidate]
    # Index pairs into candidates; reference is "a" when the data marked the first one as chosen.
    pairs: list[tuple[int, int, str]]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportErrorLine:
    line: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


class ImportFileError(Exception):
    def __init__(self, errors: list[ImportErrorLine]):
        super().__init__(f"{len(errors)} bad line(s); first: line {errors[0].line}: {errors[0].message}")
        self.errors = errors


class RowError(ValueError):
    pass


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
ROLE_OF = {"Human": "user", "Assistant": "assistant"}
MAX_REPORTED_ERRORS = 1000
MAX_METADATA_DEPTH = 8


class _TooLarge(Exception):
    pass


class _Counted(io.RawIOBase):
    """Reads through to `raw` (a file or a GzipFile) and stops once more than `limit` bytes came out of it,
    so a small gzip that expands to gigabytes is refused after `limit` bytes, never inflated whole."""

    def __init__(self, raw: IO[bytes] | gzip.GzipFile, limit: int):
        self._raw, self._limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        if self.count > self._limit:
            raise _TooLarge
        return n


def _open(fileobj: IO[bytes]) -> IO[bytes]:
    """The file's bytes, uncompressed if it is gzip, counted against CHORUS_IMPORT_MAX_BYTES."""
    fileobj.seek(0)
    magic = fileobj.read(2)
    fileobj.seek(0)
    raw: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=fileobj, mode="rb") if magic == b"\x1f\x8b" else fileobj
    return io.BufferedReader(_Counted(raw, settings.CHORUS_IMPORT_MAX_BYTES))


def _text_lines(stream: IO[bytes]) -> Iterator[str]:
    """UTF-8 lines, one at a time (line endings kept, for the CSV reader); a bad byte is reported by line."""
    max_line = settings.CHORUS_IMPORT_MAX_LINE_BYTES
    number = 0
    while raw := stream.readline(max_line + 1):
        number += 1
        if len(raw) > max_line:
            raise ImportFileError([ImportErrorLine(number, f"line is longer than {max_line} bytes")])
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError([ImportErrorLine(number, "not valid UTF-8 text")]) from exc
        yield line.removeprefix("\ufeff") if number == 1 else line


def _text(value: Any, name: str) -> str:
    max_chars = settings.CHORUS_IMPORT_MAX_TEXT_CHARS
    if not isinstance(value, str):
        raise RowError(f'"{name}" must be a string')
    if not value.strip():
        raise RowError(f'"{name}" is empty')
    if len(value) > max_chars:
        raise RowError(f'"{name}" is longer than {max_chars} characters')
    if problem := text_problem(value):
        raise RowError(f'"{name}" {problem}')
    return value


def _messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(f'"{name}" must be a non-empty list of {{"role", "content"}} messages')
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant", "system"):
            raise RowError(f'"{name}"[{i}] must be an object with role user/assistant/system')
        out.append({"role": msg["role"], "content": _text(msg.get("content"), f"{name}[{i}].content")})
    return out


def _prompt(row: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """The final user turn and the turns before it (from "prompt" and an optional "context")."""
    context = _messages(row["context"], "context") if row.get("context") not in (None, "", []) else []
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        msgs = _messages(prompt, "prompt")
        if msgs[-1]["role"] != "user":
            raise RowError('"prompt" conversation must end with a user message')
        return msgs[-1]["content"], context + msgs[:-1]
    return _text(prompt, "prompt"), context


def _response(value: Any, name: str) -> str:
    # TRL's conversational form gives chosen/rejected as a list of messages; the reply is the last one.
    if isinstance(value, list):
        msgs = _messages(value, name)
        if msgs[-1]["role"] != "assistant":
            raise RowError(f'"{name}" conversation must end with an assistant message')
        return msgs[-1]["content"]
    return _text(value, name)


def _metadata(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RowError(f'"{name}" must be an object')
    try:
        check_value(value, max_depth=MAX_METADATA_DEPTH)
    except BadInput as exc:
        raise RowError(f'"{name}": {exc}') from exc
    return value


def _parse_trl(row: dict[str, Any], line: int) -> ParsedPrompt:
    text, context = _prompt(row)
    chosen, rejected = _response(row.get("chosen"), "chosen"), _response(row.get("rejected"), "rejected")
    if chosen == rejected:
        raise RowError('"chosen" and "rejected" are identical')
    cands = [
        ParsedCandidate(chosen, _model(row.get("chosen_model"), "chosen_model")),
        ParsedCandidate(rejected, _model(row.get("rejected_model"), "rejected_model")),
    ]
    return ParsedPrompt(line, text, context, cands, [(0, 1, "a")], _metadata(row.get("metadata"), "metadata"))


def _model(value: Any, name: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 200:
        raise RowError(f'"{name}" must be a string of at most 200 characters')
    if problem := text_problem(value):
        raise RowError(f'"{name}" {problem}')
    return value


def _parse_responses(row: dict[str, Any], line: int) -> ParsedPrompt:
    text, context = _prompt(row)
    responses = row.get("responses")
    max_n = settings.CHORUS_IMPORT_MAX_RESPONSES
    if not isinstance(responses, list) or not 2 <= len(responses) <= max_n:
        raise RowError(f'"responses" must be a list of 2 to {max_n} responses')
    cands = []
    for i, resp in enumerate(responses):
        if isinstance(resp, str):
            resp = {"text": resp}
        if not isinstance(resp, dict):
            raise RowError(f'"responses"[{i}] must be an object with "text" and "model"')
        cands.append(
            ParsedCandidate(
                _text(resp.get("text"), f"responses[{i}].text"),
                _model(resp.get("model"), f"responses[{i}].model"),
                _metadata(resp.get("metadata"), f"responses[{i}].metadata"),
            )
        )
    if len({c.text for c in cands}) != len(cands):
        raise RowError('"responses" contains identical texts')
    meta = _metadata(row.get("metadata"), "metadata")
    if row.get("category") is not None:
        try:
            check_value(row["category"], max_depth=MAX_METADATA_DEPTH)
        except BadInput as exc:
            raise RowError(f'"category": {exc}') from exc
        meta = {**meta, "category": row["category"]}
    pairs = [(i, j, "") for i, j in combinations(range(len(cands)), 2)]
    return ParsedPrompt(line, text, context, cands, pairs, meta)


def _hh_turns(dialogue: str) -> list[tuple[str, str]]:
    parts = _HH_TURN.split(dialogue)
    if parts[0].strip():
        raise RowError('dialogue must start with "\\n\\nHuman: "')
    return [(ROLE_OF[parts[i]], parts[i + 1]) for i in range(1, len(parts), 2)]


def _parse_hh(row: dict[str, Any], line: int) -> ParsedPrompt:
    chosen = _hh_turns(_text(row.get("chosen"), "chosen"))
    rejected = _hh_turns(_text(row.get("rejected"), "rejected"))
    # Shared conversation = the longest common run of turns; the candidates are what follows it.
    # Usually only the final assistant turn differs, but a few real rows diverge earlier because the
    # response itself contains "Human:" text — then the whole remainder is the candidate.
    k = 0
    while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
        k += 1
    if k == 0 or chosen[k - 1][0] != "user" or chosen[k][0] != "assistant" or rejected[k][0] != "assistant":
        raise RowError("chosen and rejected must share a conversation that ends with a Human turn")

    def rest(turns: list[tuple[str, str]]) -> str:
        head = turns[k][1]
        tail = "".join(f"\n\n{'Human' if r == 'user' else 'Assistant'}: {t}" for r, t in turns[k + 1 :])
        return (head + tail).strip()

    # An empty final turn is real data in hh-rlhf (a silent refusal that was sometimes preferred):
    # keep it; pages show it as "(empty response)".
    c_text, r_text = rest(chosen), rest(rejected)
    if c_text == r_text:
        raise RowError("chosen and rejected final turns are identical")
    context = [{"role": r, "content": t.strip()} for r, t in chosen[: k - 1]]
    prompt_text = chosen[k - 1][1].strip()
    if not prompt_text:
        raise RowError("the last Human turn is empty")
    return ParsedPrompt(line, prompt_text, context, [ParsedCandidate(c_text), ParsedCandidate(r_text)], [(0, 1, "a")])


PARSERS = {"trl": _parse_trl, "responses": _parse_responses, "hh": _parse_hh}


def detect_format(row: dict[str, Any]) -> str | None:
    if "responses" in row:
        return "responses"
    if "chosen" in row and "rejected" in row:
        return "trl" if "prompt" in row else "hh"
    return None


def _jsonl_rows(lines: Iterable[str]):
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            yield number, strict_loads(raw), None
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
        except BadInput as exc:
            yield number, None, f"invalid JSON ({exc})"


def _csv_rows(lines: Iterable[str]):
    reader = csv.DictReader(lines)
    if not reader.fieldnames:
        return
    # JSON-looking cells (conversation lists, responses, metadata) are decoded; plain text stays text.
    json_cols = {"responses", "context", "metadata"}
    line = reader.line_num + 1
    for rec in reader:
        row: dict[str, Any] = {}
        error = None
        if None in rec:
            error = "more cells than header columns"
        for key, value in rec.items():
            if key is None or value is None or value == "":
                continue
            if key in json_cols or (key == "prompt" and value.lstrip().startswith("[")):
                try:
                    value = strict_loads(value)
                except json.JSONDecodeError:
                    error = error or f'column "{key}" is not valid JSON'
                except BadInput as exc:
                    error = error or f'column "{key}": {exc}'
            row[key] = value
        # CSV responses may also come as response_1/model_1, response_2/model_2, ... columns.
        numbered = sorted(
            (int(k.split("_", 1)[1]), k) for k in row if re.fullmatch(r"response_\d+", k)
        )
        if numbered and "responses" not in row:
            row["responses"] = [
                {"text": row.pop(k), "model": row.pop(f"model_{n}", "")} for n, k in numbered
            ]
        yield line, row, error
        line = reader.line_num + 1


def content_digest(p: ParsedPrompt) -> bytes:
    """What makes a row the same row again: its conversation and its candidate texts (not metadata)."""
    key = json.dumps([p.context, p.text, [c.text for c in p.candidates]], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass
class ImportPlan:
    """A validated file: its format and each row's line and content digest (the rows themselves are not kept)."""

    fmt: str
    is_csv: bool
    rows: list[tuple[int, bytes]]


def _fatal(message: str, line: int = 0) -> ImportFileError:
    return ImportFileError([ImportErrorLine(line, message)])


@contextlib.contextmanager
def _reading():
    """Errors of the byte stream itself (size, gzip) end the whole validation with one message."""
    try:
        yield
    except _TooLarge:
        raise _fatal(f"file is larger than {settings.CHORUS_IMPORT_MAX_BYTES} bytes uncompressed") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _fatal(f"not a valid gzip file ({exc})") from exc


def _is_csv(fileobj: IO[bytes], filename: str) -> bool:
    name = filename.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return True
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return False
    with _reading():
        head = _open(fileobj).read(64 * 1024)
    first = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")[:1]
    return first not in ("{", "[", "")


def _parsed_rows(fileobj: IO[bytes], is_csv: bool) -> Iterator[tuple[int, str | None, ParsedPrompt | None, str]]:
    """(line, format, parsed row or None, error message or "") for every row, reading the file once."""
    lines = _text_lines(_open(fileobj))
    rows = _csv_rows(lines) if is_csv else _jsonl_rows(lines)
    fmt: str | None = None
    fmt_line = 0
    for line, row, error in rows:
        if error:
            yield line, fmt, None, error
            continue
        if not isinstance(row, dict):
            yield line, fmt, None, "each row must be a JSON object"
            continue
        row_fmt = detect_format(row)
        if row_fmt is None:
            yield line, fmt, None, ('unrecognised row: expected {"prompt","chosen","rejected"}, '
                                    '{"prompt","responses"} or hh-rlhf {"chosen","rejected"}')
            continue
        if fmt is None:
            fmt, fmt_line = row_fmt, line
        elif row_fmt != fmt:
            yield line, fmt, None, f'row is in "{row_fmt}" form but the file is "{fmt}" (line {fmt_line})'
            continue
        try:
            yield line, fmt, PARSERS[fmt](row, line), ""
        except RowError as exc:
            yield line, fmt, None, str(exc)


def validate_import(fileobj: IO[bytes], filename: str = "") -> ImportPlan:
    """Read and check the whole file as a stream, keeping only each row's digest; raise ImportFileError
    listing every bad line (or the one problem that stopped reading: size, gzip, encoding)."""
    is_csv = _is_csv(fileobj, filename)
    errors: list[ImportErrorLine] = []
    digests: list[tuple[int, bytes]] = []
    fmt: str | None = None
    max_rows = settings.CHORUS_IMPORT_MAX_ROWS
    count = 0
    try:
        with _reading():
            for line, row_fmt, parsed, error in _parsed_rows(fileobj, is_csv):
                fmt = row_fmt
                count += 1
                if count > max_rows:
                    errors.append(ImportErrorLine(line, f"too many rows: the limit is {max_rows}"))
                    break
                if parsed is None:
                    errors.append(ImportErrorLine(line, error))
                else:
                    digests.append((line, content_digest(parsed)))
                if len(errors) >= MAX_REPORTED_ERRORS:
                    errors.append(ImportErrorLine(line, "too many errors; stopped reading"))
                    break
    except csv.Error as exc:
        errors.append(ImportErrorLine(0, f"CSV error: {exc}"))
    if not errors and not digests:
        errors.append(ImportErrorLine(0, "the file has no rows"))
    if errors:
        raise ImportFileError(errors)
    assert fmt is not None
    return ImportPlan(fmt, is_csv, digests)


def iter_import(fileobj: IO[bytes], plan: ImportPlan) -> Iterator[ParsedPrompt]:
    """The rows of a file validate_import accepted, parsed again one at a time (memory stays flat)."""
    with _reading():
        for _line, _fmt, parsed, _error in _parsed_rows(fileobj, plan.is_csv):
            assert parsed is not None, "the file changed after validation"
            yield parsed


def as_file(data: bytes | IO[bytes]) -> IO[bytes]:
    return io.BytesIO(data) if isinstance(data, bytes | bytearray) else data


def parse_import(data: bytes | IO[bytes], filename: str = "") -> tuple[str, list[ParsedPrompt]]:
    """Return (format, prompts) or raise ImportFileError listing every bad line (small files and tests;
    the import service streams with validate_import / iter_import instead)."""
    fileobj = as_file(data)
    plan = validate_import(fileobj, filename)
    return plan.fmt, list(iter_import(fileobj, plan))
