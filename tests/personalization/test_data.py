"""Tests of personalization.data: JSONL readers with line-numbered errors, and the writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from personalization.data import (
    DataError,
    PreferenceRow,
    TestRow,
    read_profiles,
    read_test,
    read_train,
    write_jsonl,
)


def write_lines(path: Path, lines: list[str], compress: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Joke?"},
]

TRAIN_LINES = [
    json.dumps({"user_id": "alice", "prompt": "Tell me a joke.", "chosen": "A pun.", "rejected": "No."}),
    "",
    "   ",
    json.dumps({"user_id": 7, "prompt": CHAT, "chosen": "Sure: …", "rejected": "Later.", "extra": 1}),
]


def test_it_reads_a_good_train_file(tmp_path: Path) -> None:
    rows = read_train(write_lines(tmp_path / "train.jsonl", TRAIN_LINES))
    assert rows == [
        PreferenceRow(user_id="alice", prompt="Tell me a joke.", chosen="A pun.", rejected="No."),
        PreferenceRow(
            user_id="7",
            prompt="User: Hi\nAssistant: Hello!\nUser: Joke?",
            chosen="Sure: …",
            rejected="Later.",
        ),
    ]


def test_it_reads_gzip_by_magic_bytes_whatever_the_name(tmp_path: Path) -> None:
    plain = read_train(write_lines(tmp_path / "train.jsonl", TRAIN_LINES))
    assert read_train(write_lines(tmp_path / "train.jsonl.gz", TRAIN_LINES, compress=True)) == plain
    assert read_train(write_lines(tmp_path / "misnamed.jsonl", TRAIN_LINES, compress=True)) == plain


def test_it_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + TRAIN_LINES[0].encode() + b"\n")
    assert read_train(path)[0].user_id == "alice"


def test_it_reads_a_good_test_file(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "test.jsonl",
        [
            json.dumps({"id": 1, "user_id": "bob", "prompt": "Q?", "a": "yes", "b": "no"}),
            json.dumps({"id": "p-2", "user_id": 3, "prompt": CHAT[:1], "a": "x", "b": "y"}),
        ],
    )
    assert read_test(path) == [
        TestRow(id="1", user_id="bob", prompt="Q?", a="yes", b="no"),
        TestRow(id="p-2", user_id="3", prompt="User: Hi", a="x", b="y"),
    ]


def test_it_reads_good_profiles(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "profiles.jsonl",
        [
            json.dumps({"user_id": "alice", "age": 31, "tags": ["cats"], "note": None}),
            json.dumps({"user_id": 2}),
        ],
    )
    assert read_profiles(path) == {"alice": {"age": 31, "tags": ["cats"], "note": None}, "2": {}}


def test_it_reports_every_bad_train_line_with_its_number(tmp_path: Path) -> None:
    good = {"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r"}
    lines = [
        json.dumps(good),  # 1 ok
        "{not json",  # 2
        json.dumps(["a", "list"]),  # 3
        json.dumps({k: v for k, v in good.items() if k != "chosen"}),  # 4 missing
        json.dumps({**good, "rejected": "  "}),  # 5 empty
        json.dumps({**good, "chosen": 3}),  # 6 not a string
        json.dumps({**good, "user_id": True}),  # 7 bool id
        json.dumps({**good, "user_id": 1.5}),  # 8 float id
        json.dumps({**good, "prompt": [{"role": "user"}]}),  # 9 bad chat message
        json.dumps({**good, "prompt": []}),  # 10 empty chat
        "",  # 11 blank: skipped
        json.dumps({**good, "prompt": None, "chosen": ""}),  # 12 two problems on one line
        json.dumps(good),  # 13 ok
    ]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_train(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert [line for line, _ in err.errors] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    reasons = dict(err.errors)
    assert "invalid JSON" in reasons[2]
    assert "expected a JSON object, got array" in reasons[3]
    assert "missing field 'chosen'" in reasons[4]
    assert "'rejected' is empty" in reasons[5]
    assert "'chosen' must be a string" in reasons[6]
    assert "'user_id' must be a string or an integer, got boolean" in reasons[7]
    assert "'user_id'" in reasons[8]
    assert "no content" in reasons[9]
    assert "'prompt' is empty" in reasons[10]
    assert "'prompt'" in reasons[12] and "'chosen' is empty" in reasons[12]
    message = str(err).splitlines()
    assert message[0] == f"{path}:2: {reasons[2]}"
    assert len(message) == 10 and message[-1] == f"{path}:12: {reasons[12]}"
    assert (err.path, err.line, err.reason) == (str(path), 2, reasons[2])


def test_it_formats_a_single_error_exactly(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "one.jsonl", [json.dumps({"user_id": "u", "prompt": "p", "chosen": "c"})])
    with pytest.raises(DataError) as info:
        read_train(path)
    assert str(info.value) == f"{path}:1: missing field 'rejected'"
    assert info.value.errors == [(1, "missing field 'rejected'")]


def test_it_reports_duplicate_test_ids_and_bad_fields(tmp_path: Path) -> None:
    row = {"id": "q1", "user_id": "u", "prompt": "p", "a": "x", "b": "y"}
    lines = [
        json.dumps(row),
        json.dumps({**row, "b": None}),
        json.dumps({**row, "id": "q2"}),
        json.dumps(row),  # duplicate of line 1
        json.dumps({**row, "id": 2}),
        json.dumps({**row, "id": "2"}),  # int 2 and "2" are the same id
    ]
    with pytest.raises(DataError) as info:
        read_test(write_lines(tmp_path / "test.jsonl.gz", lines, compress=True))
    assert info.value.errors == [
        (2, "field 'b' must be a string, got null"),
        (4, "duplicate id 'q1' (first on line 1)"),
        (6, "duplicate id '2' (first on line 5)"),
    ]


def test_it_reports_duplicate_and_missing_profile_users(tmp_path: Path) -> None:
    lines = [json.dumps({"user_id": "a", "x": 1}), json.dumps({"x": 2}), json.dumps({"user_id": "a"}), "[]"]
    with pytest.raises(DataError) as info:
        read_profiles(write_lines(tmp_path / "profiles.jsonl", lines))
    assert [line for line, _ in info.value.errors] == [2, 3, 4]
    assert "duplicate user_id 'a'" in info.value.errors[1][1]


def test_it_reports_invalid_utf8_and_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(TRAIN_LINES[0].encode() + b"\n" + b'{"user_id": "\xe9"}\n')
    with pytest.raises(DataError) as info:
        read_train(path)
    assert info.value.errors[0][0] == 2 and "UTF-8" in info.value.errors[0][1]

    blob = gzip.compress(("\n".join([TRAIN_LINES[0]] * 200) + "\n").encode())
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as info:
        read_train(truncated)
    assert "gzip" in info.value.errors[-1][1]


def test_it_reads_an_empty_file_as_no_rows(tmp_path: Path) -> None:
    assert read_train(write_lines(tmp_path / "empty.jsonl", [""])) == []


def test_it_writes_jsonl_that_reads_back(tmp_path: Path) -> None:
    rows: list[Any] = [
        {"user_id": "ü", "prompt": "p\nq", "chosen": "c", "rejected": "r"},
        PreferenceRow(user_id="2", prompt="p", chosen="c", rejected="r"),
    ]
    for name in ("out/train.jsonl", "out/train.jsonl.gz"):
        path = tmp_path / name
        write_jsonl(path, rows)
        assert read_train(path) == [
            PreferenceRow(user_id="ü", prompt="p\nq", chosen="c", rejected="r"),
            PreferenceRow(user_id="2", prompt="p", chosen="c", rejected="r"),
        ]
    assert (tmp_path / "out/train.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert "ü" in (tmp_path / "out/train.jsonl").read_text("utf-8")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.jsonl", "train.jsonl.gz"]


def test_it_leaves_no_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    with pytest.raises(TypeError):
        write_jsonl(path, [{"ok": 1}, {"bad": object()}])
    assert list(tmp_path.iterdir()) == []


def test_it_reads_the_external_hh_rlhf_file_as_plain_json(hh_rlhf_path: Path) -> None:
    # hh-rlhf rows have no user_id/prompt: every line must be reported, none silently dropped.
    with pytest.raises(DataError) as info:
        read_train(hh_rlhf_path)
    assert len(info.value.errors) == 2312
    assert info.value.errors[0] == (1, "missing field 'user_id'; missing field 'prompt'")
