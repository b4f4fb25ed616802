"""Exports: TRL preference rows and pseudonymized profiles, in JSONL, CSV and Parquet.

Round trips go through the real API and load the bytes back with pandas and `datasets`, as a user would.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import random
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from feedback import exports, services
from feedback.models import Judgment, Study
from feedback.profile_schema import PREFER_NOT, STATED_PREFS
from tests.factories import (
    AnnotatorFactory,
    AssignmentFactory,
    CandidateFactory,
    PairFactory,
    PromptFactory,
    ResearcherFactory,
    make_study_with_pairs,
)

pytestmark = pytest.mark.django_db

FORMATS = ["jsonl", "csv", "parquet"]
SECRET_PID = "PROLIFIC-SECRET-5f3a9e"
OTHER_PID = "PROLIFIC-SECRET-77c1d0"
LIST_COLUMNS = {"messages", "lm_usecases"}


class Alternating(random.Random):
    """Shows pairs A-left, then B-left, then A-left…: every export sees both orders."""

    def __init__(self):
        super().__init__(0)
        self.n = 0

    def choice(self, seq):
        self.n += 1
        return seq[(self.n - 1) % len(seq)]


def judge(annotator, choices: list[tuple[str, int | None, str]], rng: random.Random) -> list[Judgment]:
    made = []
    for i, (choice, strength, rationale) in enumerate(choices):
        assignment = services.assignment_next(annotator=annotator, rng=rng)
        assert assignment is not None
        judgment, created = services.judgment_create(
            annotator=annotator,
            pair=assignment.pair,
            choice=choice,
            client_key=f"{annotator.pseudonym}-{i}",
            strength=strength,
            rationale=rationale,
            time_ms=1500 + i,
        )
        assert created
        made.append(judgment)
    return made


def export_bytes(client, study: Study, fmt: str, kind: str = "") -> bytes:
    url = f"/api/v1/studies/{study.pk}/export/{kind + '/' if kind else ''}?format={fmt}"
    response = client.get(url)
    assert response.status_code == 200, response
    body = b"".join(response.streaming_content)
    return body


def load(path: Path, fmt: str, via: str, cache_dir: Path) -> list[dict]:
    if via == "pandas":
        df = {"jsonl": lambda: pd.read_json(path, lines=True), "csv": lambda: pd.read_csv(path),
              "parquet": lambda: pd.read_parquet(path)}[fmt]()
        rows = df.to_dict(orient="records")
    else:
        import datasets

        builder = {"jsonl": "json", "csv": "csv", "parquet": "parquet"}[fmt]
        rows = datasets.load_dataset(builder, data_files=str(path), cache_dir=str(cache_dir))["train"].to_list()
    return [{k: norm(v, k) for k, v in row.items()} for row in rows]


def norm(value, column: str = ""):
    """Undo the loaders' differences: NaN/"" → None, numpy → Python, JSON text of list columns → lists."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, str) and column in LIST_COLUMNS:
        value = json.loads(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [norm(v) for v in value]
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    return value


def expected_rows(study: Study) -> dict[int, dict]:
    out = {}
    for j in Judgment.objects.filter(pair__study=study).select_related(
        "annotator__profile", "pair__prompt", "pair__candidate_a", "pair__candidate_b"
    ):
        a, b = j.pair.candidate_a, j.pair.candidate_b
        chosen, rejected = (b, a) if j.choice == "b" else (a, b)
        data = j.annotator.profile.data
        prefs = data.get("stated_prefs") if isinstance(data.get("stated_prefs"), dict) else {}
        row = {
            "judgment_id": j.id,
            "pair_id": j.pair_id,
            "chosen": chosen.text,
            "rejected": rejected.text,
            "chosen_model": chosen.model_name or None,
            "rejected_model": rejected.model_name or None,
            "tie": j.choice == "tie",
            "strength": j.strength,
            "annotator": j.annotator.pseudonym,
            "shown_order": j.shown_order,
            "chosen_side": j.chosen_side_shown,
            "rationale": j.rationale or None,
            "time_ms": j.time_ms,
            "messages": [*j.pair.prompt.context, {"role": "user", "content": j.pair.prompt.text}],
            "age": data.get("age"),
            "gender": data.get("gender"),
            "lm_usecases": data.get("lm_usecases"),
            "self_description": data.get("self_description") or None,
        }
        for code, _ in STATED_PREFS:
            rating = prefs.get(code)
            row[f"stated_prefs_{code}"] = rating if isinstance(rating, int) else None
        out[j.id] = row
    return out


@pytest.fixture
def judged_study(study):
    """Two annotators who joined with crowd ids, filled in profiles and judged (a, b, tie, both orders)."""
    ann1, _ = services.annotator_join(study=study, external_id=SECRET_PID)
    ann2, _ = services.annotator_join(study=study, external_id=OTHER_PID)
    services.profile_update(annotator=ann1, data={
        "age": "25-34",
        "gender": "female",
        "lm_usecases": ["technical", "research"],
        "stated_prefs": {code: 10 + 10 * i for i, (code, _) in enumerate(STATED_PREFS)},
        "self_description": 'A teacher, "curious", likes commas, and\nnew lines.',
    })
    services.profile_update(annotator=ann2, data={
        "age": PREFER_NOT,
        "stated_prefs": {"values": 55, "safety": PREFER_NOT},
    })
    rng = Alternating()
    judge(ann1, [("a", 80, "Clearer, \"kinder\"\nand shorter."), ("b", 30, ""), ("tie", None, "Both fine")], rng)
    judge(ann2, [("b", 100, ""), ("a", None, "")], rng)
    return study


@pytest.mark.parametrize("fmt", FORMATS)
def test_it_round_trips_judgments_through_pandas_and_datasets(api_client, researcher, judged_study, fmt, tmp_path):
    api_client.force_login(researcher)
    body = export_bytes(api_client, judged_study, fmt)
    assert SECRET_PID.encode() not in body and OTHER_PID.encode() not in body
    for ann in judged_study.annotators.select_related("user"):
        assert ann.user.username.encode() not in body
    path = tmp_path / f"{judged_study.slug}-judgments.{fmt}"
    path.write_bytes(body)

    expected = expected_rows(judged_study)
    judgments = Judgment.objects.filter(pair__study=judged_study)
    assert {j.choice for j in judgments} == {"a", "b", "tie"}
    assert {j.shown_order for j in judgments} == {"ab", "ba"}
    columns = [name for name, _ in exports.judgments_export(judged_study).columns]
    for via in ("pandas", "datasets"):
        rows = load(path, fmt, via, tmp_path / "hf-cache")
        assert len(rows) == 5, via
        assert list(rows[0]) == columns, via
        assert [r["judgment_id"] for r in rows] == sorted(expected)
        for row in rows:
            want = expected[row["judgment_id"]]
            got = {k: row[k] for k in want}
            assert got == want, (via, row["judgment_id"])
            assert row["prompt"] == want["messages"][-1]["content"]  # single-turn: the text as is
            assert row["matches_reference"] is None  # factory pairs carry no reference label
            assert row["created_at"] is not None


def test_it_exports_ties_as_a_over_b_and_choices_in_pair_terms(api_client, researcher, judged_study):
    api_client.force_login(researcher)
    rows = [json.loads(line) for line in export_bytes(api_client, judged_study, "jsonl").splitlines()]
    by_id = {r["judgment_id"]: r for r in rows}
    for j in Judgment.objects.filter(pair__study=judged_study).select_related("pair__candidate_a", "pair__candidate_b"):
        row = by_id[j.id]
        a, b = j.pair.candidate_a.text, j.pair.candidate_b.text
        assert (row["chosen"], row["rejected"]) == ((b, a) if j.choice == "b" else (a, b))
        assert row["tie"] is (j.choice == "tie")
        if j.choice == "tie":
            assert row["strength"] is None and row["chosen_side"] == "tie"
        else:
            clicked_left = (j.choice == "a") == (j.shown_order == "ab")
            assert row["chosen_side"] == ("left" if clicked_left else "right")
        assert row["created_at"].endswith("Z")
    # A swapped showing chose B while B sat on the left: pair terms and screen terms both survive.
    assert any(r["shown_order"] == "ba" for r in rows)


@pytest.mark.parametrize("fmt", FORMATS)
def test_it_exports_profiles_pseudonymized(api_client, researcher, judged_study, fmt, tmp_path):
    api_client.force_login(researcher)
    AnnotatorFactory(study=judged_study)  # joined, never judged, no answers
    body = export_bytes(api_client, judged_study, fmt, kind="profiles")
    assert SECRET_PID.encode() not in body and OTHER_PID.encode() not in body
    path = tmp_path / f"profiles.{fmt}"
    path.write_bytes(body)
    annotators = {a.pseudonym: a for a in judged_study.annotators.all()}
    for via in ("pandas", "datasets"):
        rows = load(path, fmt, via, tmp_path / "hf-cache")
        assert {r["annotator"] for r in rows} == set(annotators)
        assert "external_id" not in rows[0] and "user" not in rows[0] and "user_id" not in rows[0]
        by = {r["annotator"]: r for r in rows}
        counts = {a.pseudonym: a.judgments.count() for a in annotators.values()}
        assert {p: r["n_judgments"] for p, r in by.items()} == counts
        ann1 = next(a for a in annotators.values() if a.external_id == SECRET_PID)
        row = by[ann1.pseudonym]
        assert row["age"] == "25-34" and row["lm_usecases"] == ["research", "technical"]
        assert row["stated_prefs_values"] == 10 and row["stated_prefs_helpfulness"] == 80
        assert row["consented_at"] is not None or ann1.consented_at is None
        ann2 = next(a for a in annotators.values() if a.external_id == OTHER_PID)
        assert by[ann2.pseudonym]["age"] == PREFER_NOT
        assert by[ann2.pseudonym]["stated_prefs_values"] == 55
        assert by[ann2.pseudonym]["stated_prefs_safety"] is None


def test_it_exports_real_hh_rlhf_conversations(api_client, researcher, hh_rlhf_path, tmp_path):
    lines = gzip.decompress(hh_rlhf_path.read_bytes()).decode("utf-8").splitlines()[:40]
    study = services.study_create(
        name="hh export", created_by=researcher, overlap_target=1, pairs_per_annotator=40
    )
    result = services.study_import(study=study, data="\n".join(lines).encode("utf-8"), filename="hh.jsonl")
    annotator, _ = services.annotator_join(study=study, external_id=SECRET_PID)
    choices = [("a", 70, ""), ("b", 40, ""), ("tie", None, "")] * 14
    judge(annotator, choices[: result.pairs], random.Random(3))

    api_client.force_login(researcher)
    body = export_bytes(api_client, study, "parquet")
    path = tmp_path / "hh.parquet"
    path.write_bytes(body)
    for via in ("pandas", "datasets"):
        rows = load(path, "parquet", via, tmp_path / "hf-cache")
        assert len(rows) == result.pairs
        multi = [r for r in rows if len(r["messages"]) > 1]
        assert multi, "the first rows of hh-rlhf harmless-base include multi-turn conversations"
        for row in rows:
            messages = row["messages"]
            assert messages[-1]["role"] == "user"
            if len(messages) > 1:
                assert row["prompt"].startswith("User: ")
                assert "\n\nAssistant: " in row["prompt"]
                assert row["prompt"].endswith("\n\nUser: " + messages[-1]["content"])
            else:
                assert row["prompt"] == messages[0]["content"]
            # hh-rlhf's own label is "chosen" = candidate A: agreement is exported, ties carry none.
            a_text = study.pairs.select_related("candidate_a").get(id=row["pair_id"]).candidate_a.text
            expected = None if row["tie"] else row["chosen"] == a_text
            assert row["matches_reference"] == expected
    # The same conversation in the two text formats.
    jsonl_rows = [json.loads(x) for x in export_bytes(api_client, study, "jsonl").splitlines()]
    csv_rows = pd.read_csv(io.BytesIO(export_bytes(api_client, study, "csv")), keep_default_na=False)
    assert [r["prompt"] for r in jsonl_rows] == list(csv_rows["prompt"])
    assert [r["messages"] for r in jsonl_rows] == [json.loads(m) for m in csv_rows["messages"]]


def test_it_neutralises_spreadsheet_formulas_in_csv_only(api_client, researcher, study):
    """Generations and rationales are untrusted: in CSV a cell starting with = + - @ would run as a formula
    in a spreadsheet, so it gets a leading apostrophe; JSONL keeps the text exactly."""
    prompt = PromptFactory(study=study, text="=HYPERLINK(\"http://evil.example\",\"x\")")
    pair = PairFactory(prompt=prompt, candidate_a=CandidateFactory(prompt=prompt, text="@SUM(1+1)"),
                       candidate_b=CandidateFactory(prompt=prompt, text="-2+3 is the answer"))
    annotator = AnnotatorFactory(study=study)
    AssignmentFactory(annotator=annotator, pair=pair)
    services.judgment_create(annotator=annotator, pair=pair, choice="a", client_key="k-formula",
                             rationale="+cmd|' /C calc'!A0")
    api_client.force_login(researcher)
    row = pd.read_csv(io.BytesIO(export_bytes(api_client, study, "csv")), keep_default_na=False).iloc[0]
    assert row["prompt"] == "'=HYPERLINK(\"http://evil.example\",\"x\")"
    assert row["chosen"] == "'@SUM(1+1)"
    assert row["rejected"] == "'-2+3 is the answer"
    assert row["rationale"] == "'+cmd|' /C calc'!A0"
    assert row["judgment_id"] > 0  # numbers are not text and stay numbers
    raw = json.loads(export_bytes(api_client, study, "jsonl").splitlines()[0])
    assert raw["chosen"] == "@SUM(1+1)" and raw["rationale"] == "+cmd|' /C calc'!A0"


@pytest.mark.parametrize("kind", ["", "profiles"])
def test_it_keeps_the_schema_for_an_empty_study(api_client, researcher, study, kind, tmp_path):
    api_client.force_login(researcher)
    export = exports.judgments_export(study) if not kind else exports.profiles_export(study)
    path = tmp_path / "empty.parquet"
    path.write_bytes(export_bytes(api_client, study, "parquet", kind=kind))
    table = pq.read_table(path)
    assert table.num_rows == 0 and table.schema.names == export.names
    assert list(pd.read_parquet(path).columns) == export.names
    header = export_bytes(api_client, study, "csv", kind=kind).decode()
    assert list(pd.read_csv(io.StringIO(header)).columns) == export.names
    assert export_bytes(api_client, study, "jsonl", kind=kind) == b""


def test_it_exports_only_the_study_profile_fields(researcher):
    study = services.study_create(name="few fields", created_by=researcher, profile_fields=["stated_prefs", "age"])
    names = [name for name, _ in exports.profile_columns(study)]
    assert names == ["stated_prefs_" + code for code, _ in STATED_PREFS] + ["age"]


def test_it_names_the_download_after_the_study(api_client, researcher, study):
    api_client.force_login(researcher)
    for fmt in FORMATS:
        for kind, label in (("", "judgments"), ("profiles/", "profiles")):
            response = api_client.get(f"/api/v1/studies/{study.pk}/export/{kind}?format={fmt}")
            assert response["Content-Disposition"].startswith("attachment")
            assert f'filename="{study.slug}-{label}.{fmt}"' in response["Content-Disposition"]
            assert response["Content-Type"] == exports.CONTENT_TYPES[fmt]
            b"".join(response.streaming_content)  # lets the response close its file


def test_it_refuses_an_unknown_format(api_client, researcher, study):
    api_client.force_login(researcher)
    response = api_client.get(f"/api/v1/studies/{study.pk}/export/?format=xlsx")
    assert response.status_code == 400
    # The documented error shape of every API endpoint (settings.REST_FRAMEWORK EXCEPTION_HANDLER).
    assert response.json() == {"detail": "invalid request",
                               "errors": {"format": "must be one of ['jsonl', 'csv', 'parquet']"}}


# --------------------------------------------------------------------------------------------------------
# Query count
# --------------------------------------------------------------------------------------------------------


def make_judgments(study: Study, n: int) -> None:
    annotators = [
        AnnotatorFactory(study=study, profile={"age": "18-24", "lm_usecases": ["research"],
                                               "stated_prefs": {"values": 40}})
        for _ in range(max(1, n // 10))
    ]
    for i in range(n):
        pair = PairFactory(prompt=PromptFactory(study=study, context=[
            {"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}
        ]))
        annotator = annotators[i % len(annotators)]
        assignment = AssignmentFactory(annotator=annotator, pair=pair, shown_order="ab" if i % 2 else "ba")
        Judgment.objects.create(
            annotator=annotator, pair=pair, assignment=assignment, choice=["a", "b", "tie"][i % 3],
            shown_order=assignment.shown_order, strength=None if i % 3 == 2 else 50, client_key=f"k{i}",
        )


def count_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
        assert response.status_code == 200
        b"".join(response.streaming_content)
    return len(ctx.captured_queries)


@pytest.mark.parametrize("kind", ["", "profiles/"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_it_uses_a_constant_number_of_queries(api_client, researcher, fmt, kind, django_assert_max_num_queries):
    small = make_study_with_pairs(0, created_by=researcher)
    large = make_study_with_pairs(0, created_by=researcher)
    make_judgments(small, 1)
    make_judgments(large, 50)
    api_client.force_login(researcher)
    urls = [f"/api/v1/studies/{s.pk}/export/{kind}?format={fmt}" for s in (small, large)]
    count_queries(api_client, urls[0])  # warm the session
    assert count_queries(api_client, urls[0]) == count_queries(api_client, urls[1])
    with django_assert_max_num_queries(8):
        response = api_client.get(urls[1])
        b"".join(response.streaming_content)


# --------------------------------------------------------------------------------------------------------
# Access
# --------------------------------------------------------------------------------------------------------

ENDPOINTS = {
    "api-judgments-jsonl": "/api/v1/studies/{pk}/export/?format=jsonl",
    "api-judgments-csv": "/api/v1/studies/{pk}/export/?format=csv",
    "api-judgments-parquet": "/api/v1/studies/{pk}/export/?format=parquet",
    "api-profiles-jsonl": "/api/v1/studies/{pk}/export/profiles/?format=jsonl",
    "api-profiles-csv": "/api/v1/studies/{pk}/export/profiles/?format=csv",
    "api-profiles-parquet": "/api/v1/studies/{pk}/export/profiles/?format=parquet",
    "page": "/studies/{pk}/export",
}
WHO = ["anonymous", "annotator", "other_annotator", "researcher", "other_researcher"]


def user_for(who: str, request):
    if who == "anonymous":
        return None
    if who == "other_researcher":
        other = ResearcherFactory()
        make_study_with_pairs(1, created_by=other)
        return other
    return request.getfixturevalue(who) if who == "researcher" else request.getfixturevalue(who).user


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
@pytest.mark.parametrize("who", WHO)
def test_it_lets_only_the_study_researchers_export(api_client, study, endpoint, who, request):
    user = user_for(who, request)
    if user is not None:
        api_client.force_login(user)
    response = api_client.get(ENDPOINTS[endpoint].format(pk=study.pk))
    is_page = endpoint == "page"
    if who == "researcher":
        assert response.status_code == 200
        body = response.content if is_page else b"".join(response.streaming_content)
        assert SECRET_PID.encode() not in body
    elif who == "anonymous":
        if is_page:
            assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        else:
            assert response.status_code in (401, 403)
    else:
        assert response.status_code == 403


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_it_answers_404_for_a_missing_study(api_client, researcher, endpoint):
    api_client.force_login(researcher)
    missing = (Study.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000
    assert api_client.get(ENDPOINTS[endpoint].format(pk=missing)).status_code == 404


def test_it_lets_an_added_researcher_export(api_client, study):
    colleague = ResearcherFactory()
    study.researchers.add(colleague)
    api_client.force_login(colleague)
    response = api_client.get(f"/api/v1/studies/{study.pk}/export/?format=csv")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"prompt,messages,chosen,rejected,tie,")


def test_it_shows_download_links_and_columns_on_the_page(client, researcher, judged_study):
    client.force_login(researcher)
    response = client.get(f"/studies/{judged_study.pk}/export")
    html = response.content.decode()
    for fmt in FORMATS:
        assert f"/api/v1/studies/{judged_study.pk}/export/?format={fmt}" in html
        assert f"/api/v1/studies/{judged_study.pk}/export/profiles/?format={fmt}" in html
    for column in ("prompt", "messages", "chosen", "rejected", "tie", "matches_reference", "stated_prefs_values"):
        assert f"<code>{column}</code>" in html
    assert SECRET_PID not in html


# --- streaming under ASGI (issue 16 / issue 13 item 1) ------------------------------------------------------


def _large_study(researcher, n_annotators: int = 80, n_pairs: int = 60, text_chars: int = 2500) -> Study:
    """n_annotators × n_pairs judgments with long texts, written in bulk (fast enough for a test)."""
    from django.contrib.auth import get_user_model

    from feedback.models import Annotator, Assignment, Candidate, Pair, Profile, Prompt, text_hash

    study = services.study_create(name="Large export study", created_by=researcher, overlap_target=n_annotators,
                                  pairs_per_annotator=n_pairs)
    prompts = Prompt.objects.bulk_create([Prompt(study=study, text=f"Prompt {i} " + "p" * 200) for i in range(n_pairs)])
    cands = Candidate.objects.bulk_create([
        Candidate(prompt=p, text=f"{side} {p.pk} " + "c" * text_chars, text_hash=text_hash(f"{side}{p.pk}"))
        for p in prompts for side in ("A", "B")
    ])
    pairs = Pair.objects.bulk_create([
        Pair(study=study, prompt=p, candidate_a=cands[2 * i], candidate_b=cands[2 * i + 1])
        for i, p in enumerate(prompts)
    ])
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"large-{study.pk}-{k}") for k in range(n_annotators)])
    annotators = Annotator.objects.bulk_create([Annotator(study=study, user=u) for u in users])
    Profile.objects.bulk_create([Profile(annotator=a, data={"age": "25-34"}) for a in annotators])
    assignments = Assignment.objects.bulk_create([
        Assignment(annotator=a, pair=p, shown_order="ab") for a in annotators for p in pairs
    ])
    Judgment.objects.bulk_create([
        Judgment(annotator_id=s.annotator_id, pair_id=s.pair_id, assignment=s, choice="a", shown_order="ab",
                 client_key=f"k{s.pk}")
        for s in assignments
    ])
    return study


def _asgi_get(path: str, cookie: bytes, on_body):
    """GET through config.asgi.application, as a server would: each body message is counted and dropped as it
    is sent (a real server writes it to the socket), and `on_body(index)` runs as it arrives."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from config.asgi import application

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path.split("?")[0], "raw_path": path.encode(), "query_string": path.split("?", 1)[1].encode(),
        "root_path": "", "headers": [(b"host", b"testserver"), (b"cookie", cookie)],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }
    state = {"status": 0, "messages": 0, "size": 0}

    async def go():
        sent_request = False

        async def receive():
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(3600)  # no disconnect while streaming

        async def send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body":
                on_body(state["messages"])
                state["messages"] += 1
                state["size"] += len(message.get("body", b""))

        await asyncio.wait_for(application(scope, receive, send), 60)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, go()).result()
    return state["status"], state["messages"], state["size"]


def _other_backends() -> set[int]:
    """PostgreSQL backends connected to the test database, except this test's own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_it_streams_a_large_export_under_asgi_in_flat_memory(researcher, monkeypatch, fmt):
    import tracemalloc

    from django.conf import settings as dj_settings
    from django.test import Client

    study = _large_study(researcher)
    total = Judgment.objects.filter(pair__study=study).count()
    assert total == 4800
    produced = []
    real_row = exports.judgment_row
    monkeypatch.setattr(exports, "judgment_row", lambda s, j, *rest: produced.append(1) or real_row(s, j, *rest))
    rows_at_first_body: list[int] = []

    def on_body(index: int) -> None:
        if index == 0:
            rows_at_first_body.append(len(produced))

    client = Client()
    client.force_login(researcher)
    cookie = f"{dj_settings.SESSION_COOKIE_NAME}={client.cookies[dj_settings.SESSION_COOKIE_NAME].value}".encode()
    # Warm up (first-request imports are not the export's memory): the small profiles export of the study.
    assert _asgi_get(f"/api/v1/studies/{study.pk}/export/profiles/?format={fmt}", cookie, lambda i: None)[0] == 200
    # Connections other tests left open (e.g. live servers of the browser tests) are not this request's.
    before = _other_backends()
    tracemalloc.start()
    try:
        status, n_messages, size = _asgi_get(f"/api/v1/studies/{study.pk}/export/?format={fmt}", cookie, on_body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 200
    assert size > 25_000_000  # 4,800 rows of ~5 kB
    assert len(produced) == total
    # The first bytes left before the export was read whole: one batch of rows, not all of them.
    assert rows_at_first_body[0] <= 2 * exports.STREAM_BATCH_ROWS < total
    assert n_messages >= total // exports.STREAM_BATCH_ROWS
    # Memory held a batch at a time (a buffered export holds all of it, several times over).
    assert peak < size / 2, (peak, size)
    # The request's own database connection (and its server-side cursor) was closed when the stream ended
    # (a closed connection's backend leaves pg_stat_activity a moment later: wait for it, briefly).
    import time

    deadline = time.monotonic() + 10
    while True:
        left = _other_backends() - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["export/", "export/profiles/", "dashboard/", "model/", "group-models/"])
def test_export_dashboard_and_download_errors_use_the_documented_shape(api_client, study, path):
    """Issue 13 item 6: {"detail": ...} (and "errors" for invalid input) on every API endpoint."""
    from tests.factories import ResearcherFactory

    anonymous = api_client.get(f"/api/v1/studies/{study.pk}/{path}")
    assert anonymous.status_code in (401, 403) and set(anonymous.json()) == {"detail"}
    api_client.force_login(ResearcherFactory())  # a researcher of another study
    forbidden = api_client.get(f"/api/v1/studies/{study.pk}/{path}")
    assert forbidden.status_code == 403 and set(forbidden.json()) == {"detail"}
    missing = api_client.get(f"/api/v1/studies/987654/{path}")
    assert missing.status_code == 404 and set(missing.json()) == {"detail"}
