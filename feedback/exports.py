"""Study exports: one row per judgment (TRL preference form) or per annotator (profiles).

Pure read and format logic: `judgment_rows` / `annotator_rows` are generators over the database in chunks
(one query per chunk, no N+1); `jsonl_chunks`, `csv_chunks` and `write_parquet` turn rows into bytes.
Annotators appear only under their stable pseudonym: the crowd-platform id and the user id are never read.

Ties are exported with chosen = candidate A, rejected = candidate B and tie = true; "both bad" the same way
with both_bad = true. Filter `tie == False and both_bad == False` before training a TRL reward model.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from asgiref.sync import sync_to_async
from django.db.models import Count

from feedback.models import Annotator, Judgment, Prompt, Study
from feedback.profile_schema import FIELDS_BY_NAME

CHUNK_SIZE = 500  # rows per database round trip: a batch of long generations stays a few MB
FORMATS = ("jsonl", "csv", "parquet")
CONTENT_TYPES = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

# (column, arrow type, description); the profile columns of the study go where PROFILE_COLUMNS stands.
PROFILE_COLUMNS = "__profile__"
DIMENSION_COLUMNS = "__dimensions__"
JUDGMENT_COLUMNS: list[tuple[str, pa.DataType | None, str]] = [
    ("prompt", pa.string(), 'The conversation as text. A single-turn prompt is the user\'s text as is; a '
     'multi-turn one is rendered "User: …\\n\\nAssistant: …\\n\\nUser: <final turn>".'),
    ("messages", pa.list_(_MESSAGE), "The same conversation as chat messages: a list of {role, content} "
     "(earlier turns, then the final user turn)."),
    ("chosen", pa.string(), "Text of the preferred response (candidate A for a tie)."),
    ("rejected", pa.string(), "Text of the other response (candidate B for a tie)."),
    ("tie", pa.bool_(), "true when the annotator judged both responses equally good."),
    ("strength", pa.int64(), "How strongly chosen was preferred, 1–100 (null for ties or when not asked)."),
    ("annotator", pa.string(), "The annotator's stable pseudonym (never the crowd-platform id)."),
    (PROFILE_COLUMNS, None, "The annotator's profile: one column per profile field of the study (PRISM "
     "names), stated_prefs flattened to stated_prefs_<attribute> integers 1–100."),
    ("chosen_model", pa.string(), "Model name of the chosen response (may be empty)."),
    ("rejected_model", pa.string(), "Model name of the rejected response (may be empty)."),
    ("pair_id", pa.int64(), "Id of the pair; several annotators judge the same pair."),
    ("judgment_id", pa.int64(), "Id of the judgment (rows are in this order)."),
    ("shown_order", pa.string(), '"ab" when candidate A was shown on the left, "ba" when on the right.'),
    ("chosen_side", pa.string(), 'The screen side the annotator picked: "left", "right" or "tie".'),
    ("rationale", pa.string(), "The annotator's optional free-text reason."),
    ("time_ms", pa.int64(), "Milliseconds from showing the pair to the judgment (null if unknown)."),
    ("created_at", pa.string(), "When the judgment was made, ISO 8601 in UTC."),
    ("matches_reference", pa.bool_(), "Whether chosen agrees with the label the imported data carried; "
     "null when the data had no label or for a tie."),
    # --- issue 12: judgment types, live conversations, quality controls ---
    ("both_bad", pa.bool_(), 'true when the annotator said both responses are bad (Arena\'s "both bad"); '
     "like a tie it has no direction (chosen = candidate A)."),
    ("source", pa.string(), '"choice" for an A/B judgment, "rating" for a pair derived from two 1-100 ratings '
     "of an N-way rating (strength = the rating difference)."),
    ("chosen_rating", pa.int64(), "The 1-100 rating of the chosen response (rating-derived rows; else null)."),
    ("rejected_rating", pa.int64(), "The 1-100 rating of the rejected response (rating-derived rows; else null)."),
    (DIMENSION_COLUMNS, None, "One column dim_<attribute> per attribute of the study (per-dimension choices): "
     '"chosen", "rejected", "tie", "bad" (both bad) or null when not answered.'),
    ("quality_check", pa.string(), '"repeat" for a deliberate second showing of a pair (sides swapped), "gold" '
     "for a gold/attention pair with a known answer, else empty."),
    ("gold_correct", pa.bool_(), "For gold pairs: whether the annotator gave the known answer; else null."),
    ("chosen_generation", pa.string(), "For live conversations: JSON of how the chosen response was generated "
     "(endpoint name, model id, latency_ms, sampling params, names_model); null for imported responses."),
    ("rejected_generation", pa.string(), "The same for the rejected response."),
]

ANNOTATOR_COLUMNS: list[tuple[str, pa.DataType | None, str]] = [
    ("annotator", pa.string(), "The annotator's stable pseudonym (never the crowd-platform id)."),
    (PROFILE_COLUMNS, None, "One column per profile field of the study, as in the judgments export."),
    ("consented_at", pa.string(), "When they gave consent, ISO 8601 in UTC (null if not yet)."),
    ("profile_completed_at", pa.string(), "When they completed the profile, ISO 8601 in UTC (or null)."),
    ("completed_at", pa.string(), "When they finished the study, ISO 8601 in UTC (null if not yet)."),
    ("n_judgments", pa.int64(), "How many judgments they made."),
]


# --------------------------------------------------------------------------------------------------------
# Profile columns
# --------------------------------------------------------------------------------------------------------


def profile_columns(study: Study) -> list[tuple[str, pa.DataType]]:
    """The study's profile fields as export columns, in PRISM order."""
    columns: list[tuple[str, pa.DataType]] = []
    for name in study.profile_fields:
        spec = FIELDS_BY_NAME.get(name)
        if spec is None:
            continue
        if spec.kind == "sliders":
            columns += [(f"{name}_{code}", pa.int64()) for code, _ in spec.choices]
        elif spec.kind == "multi":
            columns.append((name, pa.list_(pa.string())))
        else:
            columns.append((name, pa.string()))
    return columns


def profile_values(study: Study, data: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten stored answers to the export columns; unanswered is null.

    A declined slider ("prefer not to say") is null too; a declined multi-choice is ["prefer-not-to-say"],
    any other declined field "prefer-not-to-say".
    """
    data = data if isinstance(data, dict) else {}
    out: dict[str, Any] = {}
    for name in study.profile_fields:
        spec = FIELDS_BY_NAME.get(name)
        if spec is None:
            continue
        value = data.get(name)
        if spec.kind == "sliders":
            ratings = value if isinstance(value, dict) else {}
            for code, _ in spec.choices:
                rating = ratings.get(code)
                ok = isinstance(rating, int) and not isinstance(rating, bool)
                out[f"{name}_{code}"] = rating if ok else None
        elif spec.kind == "multi":
            if value is None or value == "":
                out[name] = None
            elif isinstance(value, list):
                out[name] = [str(v) for v in value]
            else:
                out[name] = [str(value)]
        else:
            out[name] = None if value is None else str(value)
    return out


def _columns(spec: list[tuple[str, pa.DataType | None, str]], study: Study) -> list[tuple[str, pa.DataType]]:
    columns: list[tuple[str, pa.DataType]] = []
    for name, dtype, _ in spec:
        if name == PROFILE_COLUMNS:
            columns += profile_columns(study)
        elif name == DIMENSION_COLUMNS:
            columns += [(f"dim_{attr}", pa.string()) for attr in study.attributes or []]
        else:
            assert dtype is not None
            columns.append((name, dtype))
    return columns


def column_docs(kind: str) -> list[tuple[str, str]]:
    """(column, description) pairs for the export page."""
    spec = {"judgments": JUDGMENT_COLUMNS, "ratings": RATING_COLUMNS}.get(kind, ANNOTATOR_COLUMNS)
    labels = {PROFILE_COLUMNS: "<profile fields>", DIMENSION_COLUMNS: "dim_<attribute>"}
    return [(labels.get(name, name), doc) for name, _, doc in spec]


# --------------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    messages = [
        {"role": str(turn.get("role", "")), "content": str(turn.get("content", ""))}
        for turn in (prompt.context or [])
        if isinstance(turn, dict)
    ]
    return [*messages, {"role": "user", "content": prompt.text}]


def prompt_text(messages: list[dict[str, str]]) -> str:
    if len(messages) == 1:
        return messages[0]["content"]
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'].title())}: {m['content']}" for m in messages)


def _profile_data(annotator: Annotator) -> dict[str, Any] | None:
    profile = getattr(annotator, "profile", None)  # select_related: a missing profile costs no query
    return profile.data if profile is not None else None


def _generation(candidate: Any) -> str | None:
    meta = candidate.metadata or {}
    if meta.get("source") != "live":
        return None
    keys = ("model_id", "served_model", "latency_ms", "first_token_ms", "params", "finish_reason", "names_model")
    return json.dumps({"endpoint": candidate.model_name, **{k: meta.get(k) for k in keys}}, ensure_ascii=False)


def _issue12_values(study: Study, judgment: Judgment, chosen: Any, rejected: Any,
                    ratings: dict[tuple[int, int], int]) -> dict[str, Any]:
    """The issue-12 columns of a row (kept apart so the base row stays as it was)."""
    pair = judgment.pair
    flip = {Judgment.Choice.A: "chosen", Judgment.Choice.B: "rejected"}
    if judgment.choice == Judgment.Choice.B:
        flip = {Judgment.Choice.A: "rejected", Judgment.Choice.B: "chosen"}
    dims = judgment.dimensions or {}
    gold = pair.gold_choice in (Judgment.Choice.A, Judgment.Choice.B)
    assignment = judgment.assignment
    rated = judgment.source == Judgment.Source.RATING
    row: dict[str, Any] = {
        "both_bad": judgment.choice == Judgment.Choice.BOTH_BAD,
        "source": judgment.source,
        "chosen_rating": ratings.get((judgment.annotator_id, chosen.pk)) if rated else None,
        "rejected_rating": ratings.get((judgment.annotator_id, rejected.pk)) if rated else None,
    }
    for attr in study.attributes or []:
        value = dims.get(attr)
        row[f"dim_{attr}"] = flip.get(value, value) if value else None
    row |= {
        "quality_check": "gold" if gold else "repeat" if assignment.is_repeat else "",
        "gold_correct": (judgment.choice == pair.gold_choice) if gold else None,
        "chosen_generation": _generation(chosen),
        "rejected_generation": _generation(rejected),
    }
    return row


def _study_ratings(study: Study) -> dict[tuple[int, int], int]:
    from feedback.models import Rating

    return {(a, c): s for a, c, s in Rating.objects.filter(prompt__study=study).values_list(
        "annotator_id", "candidate_id", "score")}


def judgment_row(study: Study, judgment: Judgment, ratings: dict[tuple[int, int], int] | None = None) -> dict[str, Any]:
    pair = judgment.pair
    a, b = pair.candidate_a, pair.candidate_b
    tie = judgment.choice == Judgment.Choice.TIE
    chosen, rejected = (b, a) if judgment.choice == Judgment.Choice.B else (a, b)
    messages = prompt_messages(pair.prompt)
    if judgment.choice in Judgment.UNDIRECTED or pair.reference_choice not in (Judgment.Choice.A, Judgment.Choice.B):
        matches = None
    else:
        matches = judgment.choice == pair.reference_choice
    row: dict[str, Any] = {
        "prompt": prompt_text(messages),
        "messages": messages,
        "chosen": chosen.text,
        "rejected": rejected.text,
        "tie": tie,
        "strength": None if judgment.choice in Judgment.UNDIRECTED else judgment.strength,
        "annotator": judgment.annotator.pseudonym,
    }
    row |= profile_values(study, _profile_data(judgment.annotator))
    row |= {
        "chosen_model": chosen.model_name,
        "rejected_model": rejected.model_name,
        "pair_id": pair.pk,
        "judgment_id": judgment.pk,
        "shown_order": judgment.shown_order,
        "chosen_side": judgment.chosen_side_shown,
        "rationale": judgment.rationale,
        "time_ms": judgment.time_ms,
        "created_at": _iso(judgment.created_at),
        "matches_reference": matches,
    }
    row |= _issue12_values(study, judgment, chosen, rejected, ratings or {})
    return row


def judgment_rows(study: Study, *, chunk_size: int = CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    judgments = (
        # Annotators a researcher excluded (quality flags) are left out; their rows stay stored.
        Judgment.objects.filter(pair__study=study, annotator__excluded_at__isnull=True)
        .select_related(
            "annotator__profile", "pair__prompt", "pair__candidate_a", "pair__candidate_b", "assignment"
        )
        .order_by("id")
    )
    ratings = _study_ratings(study)
    for judgment in judgments.iterator(chunk_size=chunk_size):
        yield judgment_row(study, judgment, ratings)


def annotator_rows(study: Study, *, chunk_size: int = CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    annotators = (
        Annotator.objects.filter(study=study, excluded_at__isnull=True)
        .select_related("profile")
        .annotate(n_judgments=Count("judgments"))
        .order_by("id")
    )
    for annotator in annotators.iterator(chunk_size=chunk_size):
        row: dict[str, Any] = {"annotator": annotator.pseudonym}
        row |= profile_values(study, _profile_data(annotator))
        row |= {
            "consented_at": _iso(annotator.consented_at),
            "profile_completed_at": _iso(annotator.profile_completed_at),
            "completed_at": _iso(annotator.completed_at),
            "n_judgments": getattr(annotator, "n_judgments", 0),
        }
        yield row


@dataclass
class Export:
    kind: str  # "judgments" | "profiles"
    columns: list[tuple[str, pa.DataType]]
    rows: Iterable[dict[str, Any]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema(self.columns)


def judgments_export(study: Study) -> Export:
    return Export("judgments", _columns(JUDGMENT_COLUMNS, study), judgment_rows(study))


def profiles_export(study: Study) -> Export:
    return Export("profiles", _columns(ANNOTATOR_COLUMNS, study), annotator_rows(study))


def filename(study: Study, kind: str, fmt: str) -> str:
    return f"{study.slug}-{kind}.{fmt}"


# --------------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------------


def jsonl_chunks(export: Export) -> Iterator[bytes]:
    """One JSON object per line, UTF-8; lists stay lists, nulls are null."""
    names = export.names
    for row in export.rows:
        yield (json.dumps({k: row[k] for k in names}, ensure_ascii=False) + "\n").encode("utf-8")


class _Line:
    def write(self, value: str) -> str:
        return value


# A spreadsheet treats a cell that starts with one of these as a formula (CSV injection, OWASP): an
# annotator's rationale or a generation could otherwise run `=HYPERLINK(...)` on a researcher's machine.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A CSV cell; text that a spreadsheet would read as a formula gets a leading apostrophe (the usual
    neutraliser, shown by spreadsheets as plain text). JSONL and Parquet keep the raw text."""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def csv_chunks(export: Export) -> Iterator[bytes]:
    """A header row, then one row per record; list columns (messages, multi-choice) are JSON text, and text
    cells that would start a spreadsheet formula are prefixed with an apostrophe (see ``_csv_cell``)."""
    writer = csv.writer(_Line())
    names = export.names
    yield writer.writerow(names).encode("utf-8")
    for row in export.rows:
        yield writer.writerow([_csv_cell(row[k]) for k in names]).encode("utf-8")


STREAM_BATCH_ROWS = 100  # rows per worker-thread hop when streaming under ASGI


def _next_batch(chunks: Iterator[bytes], size: int) -> bytes:
    return b"".join(itertools.islice(chunks, size))


async def async_batches(chunks: Iterable[bytes], *, size: int = STREAM_BATCH_ROWS) -> AsyncIterator[bytes]:
    """Serve a sync chunk iterator to an ASGI response `size` rows per worker-thread hop.

    thread_sensitive: every batch runs in the request's own sync thread, where its database connection (and
    the open server-side cursor of `.iterator()`) lives. Memory holds one batch, never the whole export.
    """
    iterator = iter(chunks)
    next_batch = sync_to_async(_next_batch, thread_sensitive=True)
    while batch := await next_batch(iterator, size):
        yield batch


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_parquet(export: Export, sink: IO[bytes], *, batch_size: int = CHUNK_SIZE) -> None:
    """Write the rows as Parquet, one record batch per chunk; the schema is there even with zero rows."""
    schema = export.schema
    with pq.ParquetWriter(sink, schema) as writer:
        for batch in _batches(export.rows, batch_size):
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))



# --------------------------------------------------------------------------------------------------------
# 1-100 ratings of N-way turns (issue 12): one row per rated response
# --------------------------------------------------------------------------------------------------------

RATING_COLUMNS: list[tuple[str, pa.DataType | None, str]] = [
    ("prompt", pa.string(), "The conversation as text, as in the judgments export."),
    ("messages", pa.list_(_MESSAGE), "The same conversation as chat messages."),
    ("response", pa.string(), "The rated response."),
    ("rating", pa.int64(), "The annotator's rating, 1 (worst) to 100 (best)."),
    ("position", pa.int64(), "Where the response was shown among the answers, 1 = first."),
    ("n_responses", pa.int64(), "How many responses were rated together."),
    ("model", pa.string(), "Model name of the response."),
    ("annotator", pa.string(), "The annotator's stable pseudonym."),
    (PROFILE_COLUMNS, None, "The annotator's profile, as in the judgments export."),
    ("prompt_id", pa.int64(), "Id of the prompt (the ratings of one turn share it)."),
    ("candidate_id", pa.int64(), "Id of the response."),
    ("generation", pa.string(), "For live answers: JSON of how the response was generated (as chosen_generation)."),
    ("created_at", pa.string(), "When the rating was given, ISO 8601 in UTC."),
]


def rating_rows(study: Study, *, chunk_size: int = CHUNK_SIZE) -> Iterator[dict[str, Any]]:
    from feedback.models import Rating

    sizes = dict(
        Rating.objects.filter(prompt__study=study).values("annotator_id", "prompt_id")
        .annotate(n=Count("id")).values_list("prompt_id", "n")
    )
    ratings = (
        # Excluded annotators are left out here as in the judgments export.
        Rating.objects.filter(prompt__study=study, annotator__excluded_at__isnull=True)
        .select_related("annotator__profile", "prompt", "candidate")
        .order_by("id")
    )
    for rating in ratings.iterator(chunk_size=chunk_size):
        messages = prompt_messages(rating.prompt)
        row: dict[str, Any] = {
            "prompt": prompt_text(messages),
            "messages": messages,
            "response": rating.candidate.text,
            "rating": rating.score,
            "position": rating.position,
            "n_responses": sizes.get(rating.prompt_id),
            "model": rating.candidate.model_name,
            "annotator": rating.annotator.pseudonym,
        }
        row |= profile_values(study, _profile_data(rating.annotator))
        row |= {
            "prompt_id": rating.prompt_id,
            "candidate_id": rating.candidate_id,
            "generation": _generation(rating.candidate),
            "created_at": _iso(rating.created_at),
        }
        yield row


def ratings_export(study: Study) -> Export:
    return Export("ratings", _columns(RATING_COLUMNS, study), rating_rows(study))
