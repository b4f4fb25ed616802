from __future__ import annotations

import csv
import gzip
import io
import json

import pytest

from feedback import services
from feedback.importers import ImportFileError, detect_format, parse_import
from feedback.models import Candidate, Pair, Prompt
from tests.factories import StudyFactory


def jsonl(*rows) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def csv_bytes(header: list[str], *rows: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def errors_of(data: bytes, filename: str = "") -> list[tuple[int, str]]:
    with pytest.raises(ImportFileError) as info:
        parse_import(data, filename)
    return [(e.line, e.message) for e in info.value.errors]


# --- the three forms -------------------------------------------------------------------------------


def test_it_parses_trl_with_a_string_prompt():
    fmt, [p] = parse_import(
        jsonl(
            {
                "prompt": "Capital of France?",
                "chosen": "Paris",
                "rejected": "Lyon",
                "chosen_model": "m1",
                "metadata": {"source": "quiz"},
            }
        ),
        "x.jsonl",
    )
    assert fmt == "trl"
    assert (p.line, p.text, p.context) == (1, "Capital of France?", [])
    assert [(c.text, c.model_name) for c in p.candidates] == [("Paris", "m1"), ("Lyon", "")]
    assert p.pairs == [(0, 1, "a")]
    assert p.metadata == {"source": "quiz"}


def test_it_parses_trl_with_chat_message_prompts_and_responses():
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me a joke."},
        ],
        "chosen": [{"role": "assistant", "content": "Why did the chicken…"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    fmt, [p] = parse_import(jsonl(row))
    assert fmt == "trl"
    assert p.text == "Tell me a joke."
    assert p.context == row["prompt"][:3]
    assert [c.text for c in p.candidates] == ["Why did the chicken…", "No."]


def test_it_rejects_a_chat_prompt_that_does_not_end_with_the_user():
    row = {
        "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
        "chosen": "a",
        "rejected": "b",
    }
    assert errors_of(jsonl(row)) == [(1, '"prompt" conversation must end with a user message')]


def test_it_parses_responses_into_every_pair():
    row = {
        "prompt": "Write a haiku.",
        "category": "creative",
        "responses": [
            {"text": "one", "model": "A", "metadata": {"temp": 0.7}},
            {"text": "two", "model": "B"},
            "three",
        ],
    }
    fmt, [p] = parse_import(jsonl(row))
    assert fmt == "responses"
    assert [(c.text, c.model_name) for c in p.candidates] == [("one", "A"), ("two", "B"), ("three", "")]
    assert p.candidates[0].metadata == {"temp": 0.7}
    assert p.pairs == [(0, 1, ""), (0, 2, ""), (1, 2, "")]
    assert p.metadata == {"category": "creative"}


def test_it_parses_hh_dialogues():
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant: 4.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant: 5, probably.",
    }
    fmt, [p] = parse_import(jsonl(row))
    assert fmt == "hh"
    assert p.text == "What is 2+2?"
    assert p.context == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert [c.text for c in p.candidates] == ["4.", "5, probably."]
    assert p.pairs == [(0, 1, "a")]


@pytest.mark.parametrize(
    "row,expected",
    [
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "trl"),
        ({"prompt": "p", "responses": []}, "responses"),
        ({"chosen": "a", "rejected": "b"}, "hh"),
        ({"prompt": "p", "answer": "a"}, None),
    ],
)
def test_it_detects_the_format(row, expected):
    assert detect_format(row) == expected


def test_it_requires_every_row_in_the_first_rows_form():
    data = jsonl(
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "responses": ["x", "y"]},
    )
    assert errors_of(data) == [(2, 'row is in "responses" form but the file is "trl" (line 1)')]


# --- containers -----------------------------------------------------------------------------------


def test_it_reads_gzip_jsonl():
    data = gzip.compress(jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}))
    fmt, parsed = parse_import(data, "pairs.jsonl.gz")
    assert fmt == "trl" and len(parsed) == 1


def test_it_reads_gzip_without_a_telling_name():
    fmt, parsed = parse_import(
        gzip.compress(
            jsonl({"chosen": "\n\nHuman: h\n\nAssistant: a", "rejected": "\n\nHuman: h\n\nAssistant: b"})
        ),
        "upload",
    )
    assert fmt == "hh" and parsed[0].text == "h"


def test_it_reads_trl_csv_with_a_multiline_cell():
    data = csv_bytes(["prompt", "chosen", "rejected"], ["Line one\nline two", "yes", "no"], ["q", "a", "b"])
    fmt, parsed = parse_import(data, "pairs.csv")
    assert fmt == "trl"
    assert [p.text for p in parsed] == ["Line one\nline two", "q"]
    assert [p.line for p in parsed] == [2, 4]


def test_it_reads_csv_with_numbered_response_columns():
    data = csv_bytes(
        ["prompt", "response_1", "model_1", "response_2", "model_2", "response_3", "model_3"],
        ["Q1", "r1", "A", "r2", "B", "r3", "C"],
    )
    fmt, [p] = parse_import(data, "pairs.csv")
    assert fmt == "responses"
    assert [(c.text, c.model_name) for c in p.candidates] == [("r1", "A"), ("r2", "B"), ("r3", "C")]
    assert len(p.pairs) == 3


def test_it_reads_csv_with_json_cells_and_sniffs_csv_without_an_extension():
    data = csv_bytes(
        ["prompt", "responses", "metadata"],
        [json.dumps([{"role": "user", "content": "Hi?"}]), json.dumps(["a", "b"]), json.dumps({"k": 1})],
    )
    fmt, [p] = parse_import(data, "upload")
    assert fmt == "responses"
    assert p.text == "Hi?"
    assert p.metadata == {"k": 1}


def test_it_reads_gzip_csv():
    data = gzip.compress(csv_bytes(["prompt", "chosen", "rejected"], ["q", "a", "b"]))
    fmt, parsed = parse_import(data, "pairs.csv.gz")
    assert fmt == "trl" and len(parsed) == 1


# --- errors ---------------------------------------------------------------------------------------


def test_it_reports_every_bad_line_with_its_number():
    data = jsonl(
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        "",  # blank lines are skipped but still counted
        "{broken",
        {"prompt": "", "chosen": "a", "rejected": "b"},
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        '["a list"]',
        {"question": "?"},
    )
    errors = errors_of(data, "bad.jsonl")
    assert [line for line, _ in errors] == [3, 4, 6, 7, 8]
    messages = dict(errors)
    assert messages[3].startswith("invalid JSON")
    assert messages[4] == '"prompt" is empty'
    assert messages[6] == '"chosen" and "rejected" are identical'
    assert messages[7] == "each row must be a JSON object"
    assert messages[8].startswith("unrecognised row")


def test_it_reports_bad_csv_lines_with_their_physical_line_numbers():
    data = csv_bytes(
        ["prompt", "chosen", "rejected"],
        ["multi\nline\nprompt", "a", "b"],
        ["q", "", "b"],
        ["q", "x", "x"],
    )
    errors = errors_of(data, "bad.csv")
    assert [line for line, _ in errors] == [5, 6]
    assert errors[0][1].startswith("unrecognised row")  # an empty cell is a missing key
    assert errors[1][1] == '"chosen" and "rejected" are identical'


def test_it_stores_nothing_from_a_file_with_bad_lines(db):
    study = StudyFactory()
    data = jsonl({"prompt": "ok", "chosen": "a", "rejected": "b"}, "{broken", {"prompt": "p", "chosen": "c"})
    with pytest.raises(ImportFileError) as info:
        services.study_import(study=study, data=data, filename="bad.jsonl")
    assert [e.line for e in info.value.errors] == [2, 3]
    assert (Prompt.objects.count(), Candidate.objects.count(), Pair.objects.count()) == (0, 0, 0)


def test_it_rejects_an_empty_file_and_bad_encodings():
    assert errors_of(b"\n\n") == [(0, "the file has no rows")]
    assert errors_of(b'{"prompt": "ok"}\n{"prompt": "\xff"}')[0] == (2, "not valid UTF-8 text")
    assert errors_of(b"\x1f\x8b not really gzip")[0][1].startswith("not a valid gzip file")


def test_it_enforces_the_size_limit(settings):
    settings.CHORUS_IMPORT_MAX_BYTES = 100
    small = jsonl({"prompt": "p", "chosen": "a", "rejected": "b"})
    assert parse_import(small)[0] == "trl"
    big = jsonl(*[{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(10)])
    assert errors_of(big) == [(0, "file is larger than 100 bytes uncompressed")]
    # The limit applies to the uncompressed size, however small the gzip is.
    assert len(gzip.compress(big)) < 100
    assert errors_of(gzip.compress(big), "x.jsonl.gz") == [(0, "file is larger than 100 bytes uncompressed")]


def test_it_enforces_the_row_limit(settings):
    settings.CHORUS_IMPORT_MAX_ROWS = 3
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(4)]
    assert len(parse_import(jsonl(*rows[:3]))[1]) == 3
    assert errors_of(jsonl(*rows)) == [(4, "too many rows: the limit is 3")]


def test_it_enforces_the_text_and_response_limits(settings):
    settings.CHORUS_IMPORT_MAX_TEXT_CHARS = 5
    settings.CHORUS_IMPORT_MAX_RESPONSES = 2
    data = jsonl(
        {"prompt": "p", "responses": ["a", "b", "c"]},
        {"prompt": "p", "responses": ["a", "too long"]},
    )
    assert errors_of(data) == [
        (1, '"responses" must be a list of 2 to 2 responses'),
        (2, '"responses[1].text" is longer than 5 characters'),
    ]


# --- the real hh-rlhf file ------------------------------------------------------------------------


def test_it_imports_the_real_hh_rlhf_test_file(db, hh_rlhf_path):
    study = StudyFactory()
    result = services.study_import(study=study, data=hh_rlhf_path.read_bytes(), filename=hh_rlhf_path.name)
    assert (result.format, result.prompts, result.pairs) == ("hh", 2312, 2312)
    assert Pair.objects.filter(study=study, reference_choice="a").count() == 2312

    # Line 87: the chosen final turn is empty (a silent refusal) — kept as an empty candidate.
    empty = Prompt.objects.get(study=study, text="Sorry, can you tell me address again?")
    pair = empty.pairs.get()
    assert pair.candidate_a.text == ""
    assert pair.candidate_b.text == "Sure, the address is ..."
    assert [m["role"] for m in empty.context] == ["user", "assistant"]
    assert empty.context[0]["content"].startswith("Can you provide me the home address")

    # Line 1255: the chosen reply itself contains "Human:" text, so the dialogues diverge before the
    # final turn; the whole remainder is the candidate and the shared turns stay the context.
    diverging = Prompt.objects.get(study=study, text="Isn't that drag kings?")
    pair = diverging.pairs.get()
    assert pair.candidate_a.text.startswith(
        "No. Men who impersonate stereotypical women are called drag kings."
    )
    assert "\n\nAssistant:  I think they call them that because" in pair.candidate_a.text
    assert pair.candidate_b.text.startswith("A drag king is the opposite of a drag queen")
    assert diverging.context == [
        {"role": "user", "content": "Are drag queens men?"},
        {"role": "assistant", "content": "No. Drag queens are women who act like stereotypical men."},
    ]


def test_it_parses_the_real_hh_rlhf_edge_rows(hh_rlhf_path):
    _, parsed = parse_import(hh_rlhf_path.read_bytes(), hh_rlhf_path.name)
    assert len(parsed) == 2312
    empty_final = [p.line for p in parsed if any(c.text == "" for c in p.candidates)]
    assert empty_final == [87, 517, 926, 1104]
    diverging = [p.line for p in parsed if any("\n\nAssistant:" in c.text for c in p.candidates)]
    assert {1255, 1953, 2037} <= set(diverging)


# --- input the database cannot store / Python cannot parse (issue 16) -----------------------------------

OK_ROW = '{"prompt": "p", "chosen": "a", "rejected": "b"}'


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"k": "x\\u0000y"}}', "NUL"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "chosen_model": "m\\u0000"}', "NUL"),
        ('{"prompt": "p\\u0000", "chosen": "a", "rejected": "b"}', "NUL"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"\\u0000": 1}}', "NUL"),
        ('{"prompt": "p", "chosen": "\\ud800", "rejected": "b"}', "surrogate"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"score": NaN}}', "NaN"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"score": Infinity}}', "Infinity"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"n": ' + "9" * 5000 + "}}", "digits"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": {"n": 1e999}}', "out of range"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": ' + "[" * 100 + "]" * 100 + "}", "nested"),
        ('{"prompt": "p", "chosen": "a", "rejected": "b", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
         "nested"),
    ],
)
def test_it_reports_unstorable_values_by_line_and_stores_nothing(bad_line, message):
    study = StudyFactory()
    with pytest.raises(ImportFileError) as info:
        services.study_import(study=study, data=jsonl(OK_ROW, bad_line), filename="x.jsonl")
    [(line, text)] = [(e.line, e.message) for e in info.value.errors]
    assert line == 2 and message in text
    assert not Prompt.objects.filter(study=study).exists()


def test_it_reports_a_nul_in_a_responses_category_and_in_csv_cells():
    assert errors_of(jsonl({"prompt": "p", "responses": ["a", "b"], "category": "c\x00"}))[0][0] == 1
    data = csv_bytes(["prompt", "chosen", "rejected"], ["q", "a\x00", "b"])
    assert errors_of(data, "x.csv") == [(2, '"chosen" contains a NUL character (\\u0000)')]


def test_it_validates_a_gzip_bomb_as_a_stream(settings):
    """A tiny gzip expanding far past the limit is refused after the limit, never inflated whole."""
    import tracemalloc

    settings.CHORUS_IMPORT_MAX_BYTES = 1_000_000
    bomb = gzip.compress((OK_ROW + "\n").encode() * 1_000_000)  # ~48 MB of rows in ~100 KB
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        assert errors_of(bomb, "x.jsonl.gz") == [(0, "file is larger than 1000000 bytes uncompressed")]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak


def _validation_peak(n_rows: int, text_chars: int) -> tuple[int, int]:
    import tracemalloc

    from feedback.importers import validate_import

    rows = "".join(
        json.dumps({"prompt": f"prompt {i} " + "x" * text_chars, "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n"
        for i in range(n_rows)
    ).encode()
    fileobj = io.BytesIO(rows)
    tracemalloc.start()
    try:
        plan = validate_import(fileobj, "big.jsonl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan.rows) == n_rows
    return len(rows), peak


def test_it_validates_a_large_file_in_memory_that_does_not_grow_with_its_text():
    """Rows are read and checked one at a time; only a digest per row (~150 bytes) is kept, whatever its size."""
    small_size, small_peak = _validation_peak(4000, 100)
    big_size, big_peak = _validation_peak(4000, 5000)
    assert big_size > 20_000_000 and big_size > 30 * small_size / 2
    assert big_peak < small_peak + 1_000_000, (small_peak, big_peak)
    assert big_peak < big_size / 10


def test_it_refuses_a_line_longer_than_the_limit(settings):
    settings.CHORUS_IMPORT_MAX_LINE_BYTES = 100
    long_row = json.dumps({"prompt": "p" * 200, "chosen": "a", "rejected": "b"})
    assert errors_of(jsonl(OK_ROW, long_row)) == [(2, "line is longer than 100 bytes")]


# --- duplicates (issue 16 / 15) ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_refuses_a_reimported_file_unless_confirmed():
    study = StudyFactory()
    data = jsonl(OK_ROW, '{"prompt": "q", "chosen": "c", "rejected": "d"}')
    services.study_import(study=study, data=data, filename="x.jsonl")
    with pytest.raises(services.DuplicateImport) as info:
        services.study_import(study=study, data=data, filename="x.jsonl")
    assert info.value.lines == [1, 2] and info.value.code == "conflict"
    assert "whole file" in str(info.value)
    assert Prompt.objects.filter(study=study).count() == 2
    result = services.study_import(study=study, data=data, filename="x.jsonl", allow_duplicates=True)
    assert result.duplicates == 2 and Prompt.objects.filter(study=study).count() == 4
    # The same rows in another study are not duplicates there.
    assert services.study_import(study=StudyFactory(), data=data, filename="x.jsonl").duplicates == 0


@pytest.mark.django_db
def test_it_refuses_rows_repeated_within_one_file():
    study = StudyFactory()
    data = jsonl(OK_ROW, '{"prompt": "q", "chosen": "c", "rejected": "d"}', OK_ROW)
    with pytest.raises(services.DuplicateImport) as info:
        services.study_import(study=study, data=data, filename="x.jsonl")
    assert info.value.lines == [3]
    assert not Prompt.objects.filter(study=study).exists()
