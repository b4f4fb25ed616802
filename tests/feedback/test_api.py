"""The JSON API (/api/v1/): each endpoint's behaviour, schema and docs, the annotation loop under races."""

from __future__ import annotations

import gzip
import io
import json
import threading
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback import services
from feedback.models import Annotator, Assignment, Candidate, Judgment, Pair, Prompt, Study
from tests.factories import AnnotatorFactory, ResearcherFactory, UserFactory, make_study_with_pairs

API = "/api/v1"


def token_client(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def session_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def jsonl(rows: list) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode() + b"\n"


def upload(content: bytes, name: str = "data.jsonl") -> dict:
    return {"file": SimpleUploadedFile(name, content, content_type="application/octet-stream")}


# ------------------------------------------------------------------------------------------------ studies


@pytest.mark.django_db
def test_it_creates_a_study_for_a_researcher(researcher):
    resp = session_client(researcher).post(
        f"{API}/studies/",
        {
            "name": "Helpfulness 2026",
            "overlap_target": 4,
            "pairs_per_annotator": 12,
            "profile_fields": ["age"],
        },
        format="json",
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()
    for key in (
        "id",
        "slug",
        "name",
        "join_url",
        "status",
        "overlap_target",
        "pairs_per_annotator",
        "profile_fields",
        "selector",
        "model_kind",
    ):
        assert key in body
    assert body["slug"] == "helpfulness-2026"
    assert body["join_url"].endswith("/s/helpfulness-2026/join")
    assert (body["status"], body["overlap_target"], body["pairs_per_annotator"]) == ("active", 4, 12)
    assert body["profile_fields"] == ["age"]
    study = Study.objects.get(pk=body["id"])
    assert study.has_researcher(researcher) and study.created_by == researcher


@pytest.mark.django_db
def test_it_creates_a_study_with_a_token(researcher):
    resp = token_client(researcher).post(f"{API}/studies/", {"name": "By token"}, format="json")
    assert resp.status_code == 201
    assert resp.json()["profile_fields"]  # every profile field by default


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "overlap_target": 0}, "overlap_target"),
        ({"name": "x", "pairs_per_annotator": -1}, "pairs_per_annotator"),
        ({"name": "x", "profile_fields": ["shoe_size"]}, "profile_fields.0"),
        ({"name": "x", "status": "exploded"}, "status"),
        ({"name": ""}, "name"),
        ({}, "name"),
    ],
)
def test_it_rejects_invalid_study_input_with_field_errors(researcher, payload, field):
    resp = session_client(researcher).post(f"{API}/studies/", payload, format="json")
    assert resp.status_code == 400
    assert field in resp.json()["errors"]
    assert isinstance(resp.json()["errors"][field], str)
    assert not Study.objects.filter(name="x").exists()


@pytest.mark.django_db
def test_it_refuses_a_duplicate_study_name(researcher, study):
    resp = session_client(researcher).post(f"{API}/studies/", {"name": study.name}, format="json")
    assert resp.status_code == 409
    assert "already exists" in resp.json()["detail"]


@pytest.mark.django_db
def test_it_lists_only_the_callers_studies(researcher, study):
    mine_too = make_study_with_pairs(1)
    mine_too.researchers.add(researcher)  # a co-researcher, not the creator
    make_study_with_pairs(1)  # someone else's
    resp = session_client(researcher).get(f"{API}/studies/")
    assert resp.status_code == 200
    assert {s["id"] for s in resp.json()["results"]} == {study.pk, mine_too.pk}
    assert resp.json()["count"] == 2


@pytest.mark.django_db
def test_it_lists_every_study_for_a_superuser(study):
    make_study_with_pairs(1)
    admin = UserFactory(is_superuser=True, is_staff=True)
    resp = session_client(admin).get(f"{API}/studies/")
    assert resp.json()["count"] == Study.objects.count() == 2
    assert session_client(admin).get(f"{API}/studies/{study.pk}/").status_code == 200


@pytest.mark.django_db
def test_it_shows_a_study_with_its_counts(researcher, study, annotator):
    assignment = services.assignment_next(annotator=annotator)
    services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a", client_key="k1")
    resp = session_client(researcher).get(f"{API}/studies/{study.pk}/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == study.pk and body["name"] == study.name
    assert body["counts"] == {
        "prompts": 6,
        "pairs": 6,
        "judgments": 1,
        "annotators": 1,
        "annotators_completed": 0,
        "pairs_complete": 0,
        "target_judgments": 12,
        "progress_percent": 8,
    }


@pytest.mark.django_db
def test_it_answers_404_json_for_a_missing_study(researcher):
    resp = session_client(researcher).get(f"{API}/studies/999999/")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "no such study"}


# ------------------------------------------------------------------------------------------------- import


@pytest.mark.django_db
def test_it_imports_the_hh_rlhf_test_split(researcher, study, hh_rlhf_path):
    before = Pair.objects.filter(study=study).count()
    resp = session_client(researcher).post(
        f"{API}/studies/{study.pk}/import/",
        upload(hh_rlhf_path.read_bytes(), hh_rlhf_path.name),
        format="multipart",
    )
    assert resp.status_code == 201, resp.content[:500]
    assert resp.json() == {"format": "hh", "prompts": 2312, "candidates": 4624, "pairs": 2312, "duplicates": 0}
    assert Pair.objects.filter(study=study).count() == before + 2312


@pytest.mark.django_db
def test_it_imports_trl_jsonl_and_csv(researcher, study):
    client = session_client(researcher)
    rows = [{"prompt": f"Q{i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(3)]
    resp = client.post(f"{API}/studies/{study.pk}/import/", upload(jsonl(rows)), format="multipart")
    assert resp.status_code == 201
    assert resp.json() == {"format": "trl", "prompts": 3, "candidates": 6, "pairs": 3, "duplicates": 0}
    csv_text = "prompt,response_1,model_1,response_2,model_2,response_3,model_3\nHi?,a,m1,b,m2,c,m3\n"
    resp = client.post(
        f"{API}/studies/{study.pk}/import/", upload(csv_text.encode(), "r.csv"), format="multipart"
    )
    assert resp.status_code == 201
    assert resp.json() == {"format": "responses", "prompts": 1, "candidates": 3, "pairs": 3, "duplicates": 0}


@pytest.mark.django_db
def test_it_answers_409_for_a_reimported_file_unless_confirmed(researcher, study):
    client = session_client(researcher)
    rows = [{"prompt": f"Q{i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(3)]
    url = f"{API}/studies/{study.pk}/import/"
    assert client.post(url, upload(jsonl(rows)), format="multipart").status_code == 201
    before = Pair.objects.filter(study=study).count()
    again = client.post(url, upload(jsonl(rows[1:] + [{"prompt": "new?", "chosen": "a", "rejected": "b"}])),
                        format="multipart")
    assert again.status_code == 409
    body = again.json()
    assert "2 of 3 rows" in body["detail"] and [e["line"] for e in body["errors"]] == [1, 2]
    assert Pair.objects.filter(study=study).count() == before  # nothing stored, not even the new row
    confirmed = client.post(url + "?allow_duplicates=1", upload(jsonl(rows)), format="multipart")
    assert confirmed.status_code == 201 and confirmed.json()["duplicates"] == 3


@pytest.mark.django_db
def test_it_checks_the_upload_size_before_reading_it(researcher, study, settings):
    settings.CHORUS_IMPORT_MAX_UPLOAD_BYTES = 1000
    # Larger than FILE_UPLOAD_MAX_MEMORY_SIZE would go to a temporary file; the size is checked first.
    rows = [{"prompt": f"Q{i}? " + "x" * 100, "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(20)]
    resp = session_client(researcher).post(f"{API}/studies/{study.pk}/import/", upload(jsonl(rows)),
                                           format="multipart")
    assert resp.status_code == 400
    assert resp.json()["errors"] == [{"line": 0, "message": "file is larger than 1000 bytes"}]
    assert not Prompt.objects.filter(study=study, text__startswith="Q").exists()


@pytest.mark.django_db
def test_it_reports_every_bad_line_and_stores_nothing(researcher, study):
    counts = (Prompt.objects.count(), Candidate.objects.count(), Pair.objects.count())
    rows = [
        {"prompt": "fine?", "chosen": "yes", "rejected": "no"},
        "{not json",
        {"prompt": "same?", "chosen": "same", "rejected": "same"},
        {"prompt": "fine again?", "chosen": "yes", "rejected": "no"},
        {"hello": "world"},
        {"prompt": "", "chosen": "a", "rejected": "b"},
    ]
    data = gzip.compress(jsonl(rows))
    resp = session_client(researcher).post(
        f"{API}/studies/{study.pk}/import/", upload(data, "bad.jsonl.gz"), format="multipart"
    )
    assert resp.status_code == 400
    errors = resp.json()["errors"]
    assert [e["line"] for e in errors] == [2, 3, 5, 6]
    assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert "invalid JSON" in errors[0]["message"]
    assert (Prompt.objects.count(), Candidate.objects.count(), Pair.objects.count()) == counts


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, 'multipart field "file": No file was submitted'),
        (b"", "empty"),
        (b"\n\n", "no rows"),
        (b"\x1f\x8b\x08garbage", "gzip"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_it_rejects_unusable_import_files(researcher, study, payload, message):
    body = {} if payload is None else upload(payload)
    resp = session_client(researcher).post(f"{API}/studies/{study.pk}/import/", body, format="multipart")
    assert resp.status_code == 400
    assert message in resp.json()["errors"][0]["message"]
    assert Pair.objects.filter(study=study).count() == 6


# --------------------------------------------------------------------------------------------------- join


@pytest.mark.django_db
def test_it_lets_an_anonymous_worker_join_and_use_the_token(study):
    resp = APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": "PROLIFIC-1"}, format="json")
    assert resp.status_code == 201
    body = resp.json()
    annotator = Annotator.objects.get(pk=body["annotator_id"])
    assert annotator.study == study and annotator.external_id == "PROLIFIC-1"
    assert body["token"] == Token.objects.get(user=annotator.user).key
    assert body["study_id"] == study.pk and body["consent_required"] is False

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    me = client.get(f"{API}/me/").json()
    assert me["annotator_id"] == annotator.pk and me["pseudonym"] == annotator.pseudonym
    assert "PROLIFIC-1" not in json.dumps(me)


@pytest.mark.django_db
def test_it_resumes_the_same_annotator_on_rejoin_only_with_proof(study):
    first = APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": "W-7"}, format="json").json()
    assert first["resume_token"]
    again = APIClient().post(
        f"{API}/studies/{study.pk}/join/", {"external_id": "W-7", "resume_token": first["resume_token"]}, format="json"
    )
    assert again.status_code == 200
    assert again.json()["annotator_id"] == first["annotator_id"] and again.json()["token"] == first["token"]
    assert "resume_token" not in again.json()  # handed out once, at the first join
    # The annotator's own token also resumes rather than creating a second annotator.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first['token']}")
    assert (
        client.post(f"{API}/studies/{study.pk}/join/", {}, format="json").json()["annotator_id"]
        == first["annotator_id"]
    )
    # Without an external id every join is a new annotator.
    a = APIClient().post(f"{API}/studies/{study.pk}/join/", {}, format="json").json()
    b = APIClient().post(f"{API}/studies/{study.pk}/join/", {}, format="json").json()
    assert a["annotator_id"] != b["annotator_id"]
    assert Annotator.objects.filter(study=study).count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("resume_token", [None, "", "guessed-secret"])
def test_it_never_hands_a_known_crowd_ids_token_to_a_stranger(study, resume_token):
    first = APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": "VICTIM-1"}, format="json").json()
    body = {"external_id": "VICTIM-1"} | ({} if resume_token is None else {"resume_token": resume_token})
    resp = APIClient().post(f"{API}/studies/{study.pk}/join/", body, format="json")
    assert resp.status_code == 403
    data = resp.json()
    assert "already joined" in data["detail"] and "resume_token" in data["errors"]
    assert first["token"] not in resp.content.decode()
    assert "token" not in data and "annotator_id" not in data
    assert Annotator.objects.filter(study=study).count() == 1  # nothing was started


@pytest.mark.django_db
def test_it_gives_researchers_a_single_use_resume_link(study, researcher):
    from django.test import Client

    APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": "LOST-1"}, format="json")
    annotator = Annotator.objects.get(study=study, external_id="LOST-1")
    researcher_client = APIClient()
    researcher_client.force_authenticate(researcher)
    resp = researcher_client.post(f"{API}/studies/{study.pk}/resume-links/", {"external_id": "LOST-1"}, format="json")
    assert resp.status_code == 200
    link = resp.json()["url"]
    assert f"/s/{study.slug}/resume/" in link
    path = link.split("://", 1)[1].split("/", 1)[1]
    browser = Client()
    response = browser.get("/" + path)
    assert response.status_code == 302
    assert int(browser.session["_auth_user_id"]) == annotator.user_id
    # Used once: a second browser with the same link is refused.
    again = Client().get("/" + path)
    assert again.status_code == 403 and "_auth_user_id" not in again.wsgi_request.session
    # Strangers cannot mint links; unknown ids are 404.
    assert APIClient().post(f"{API}/studies/{study.pk}/resume-links/", {"external_id": "LOST-1"},
                            format="json").status_code == 401
    assert researcher_client.post(f"{API}/studies/{study.pk}/resume-links/", {"external_id": "nobody"},
                                  format="json").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("study_status", ["closed", "paused", "draft"])
def test_it_refuses_joining_a_study_that_is_not_open(study, study_status):
    Study.objects.filter(pk=study.pk).update(status=study_status)
    resp = APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": "W-1"}, format="json")
    assert resp.status_code == 403
    assert "not accepting" in resp.json()["detail"]
    assert not Annotator.objects.filter(study=study).exists()


@pytest.mark.django_db
def test_it_answers_404_when_joining_a_missing_study():
    assert APIClient().post(f"{API}/studies/424242/join/", {}, format="json").status_code == 404


# ---------------------------------------------------------------------------------------- consent, profile


@pytest.mark.django_db
def test_it_records_consent_once(study):
    annotator = AnnotatorFactory(study=study, consented_at=None)
    client = token_client(annotator.user)
    resp = client.post(f"{API}/me/consent/")
    assert resp.status_code == 200
    annotator.refresh_from_db()
    assert annotator.consented_at is not None
    first = annotator.consented_at
    client.post(f"{API}/me/consent/")
    annotator.refresh_from_db()
    assert annotator.consented_at == first


@pytest.mark.django_db
def test_it_requires_consent_before_pairs_when_the_study_asks(study):
    Study.objects.filter(pk=study.pk).update(consent_text="I agree to take part.")
    joined = APIClient().post(f"{API}/studies/{study.pk}/join/", {}, format="json").json()
    assert joined["consent_required"] is True
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {joined['token']}")
    resp = client.get(f"{API}/studies/{study.pk}/next-pair/")
    assert resp.status_code == 403 and "consent" in resp.json()["detail"]
    assert client.post(f"{API}/me/consent/").status_code == 200
    assert client.get(f"{API}/studies/{study.pk}/next-pair/").status_code == 200


@pytest.mark.django_db
def test_it_returns_the_profile_with_the_studys_questions(study, annotator):
    Study.objects.filter(pk=study.pk).update(profile_fields=["age", "lm_usecases", "stated_prefs"])
    body = token_client(annotator.user).get(f"{API}/me/profile/").json()
    assert body["data"] == {} and body["completed_at"] is None
    assert body["prefer_not_to_say"] == "prefer-not-to-say"
    assert [f["name"] for f in body["fields"]] == ["age", "lm_usecases", "stated_prefs"]
    age = body["fields"][0]
    assert age["kind"] == "choice" and {"code": "18-24", "label": "18–24"} in age["choices"]
    assert body["fields"][1]["kind"] == "multi" and body["fields"][2]["kind"] == "sliders"


@pytest.mark.django_db
def test_it_updates_the_profile(study, annotator):
    Study.objects.filter(pk=study.pk).update(profile_fields=["age", "lm_usecases", "stated_prefs"])
    client = token_client(annotator.user)
    data = {"age": "25-34", "lm_usecases": ["technical", "research"], "stated_prefs": {"safety": 80}}
    resp = client.put(f"{API}/me/profile/", {"data": data}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["data"] == {
        "age": "25-34",
        "lm_usecases": ["research", "technical"],
        "stated_prefs": {"safety": 80},
    }
    assert resp.json()["completed_at"] is not None
    annotator.refresh_from_db()
    assert annotator.profile.data["age"] == "25-34" and annotator.profile_completed_at is not None
    assert client.get(f"{API}/me/profile/").json()["data"]["age"] == "25-34"


@pytest.mark.django_db
def test_it_rejects_an_invalid_profile_with_errors_per_field(study, annotator):
    Study.objects.filter(pk=study.pk).update(profile_fields=["age", "stated_prefs"])
    client = token_client(annotator.user)
    resp = client.put(
        f"{API}/me/profile/",
        {"data": {"age": "twelve", "stated_prefs": {"safety": 500}, "religion": "none"}},
        format="json",
    )
    assert resp.status_code == 400
    errors = resp.json()["errors"]
    assert set(errors) == {"age", "stated_prefs", "religion"}
    assert "must be one of" in errors["age"] and "this study does not ask" in errors["religion"]
    annotator.refresh_from_db()
    assert annotator.profile.data == {} and annotator.profile_completed_at is None
    resp = client.put(f"{API}/me/profile/", {"data": ["age"]}, format="json")
    assert resp.status_code == 400 and "data" in resp.json()["errors"]


# ------------------------------------------------------------------------------------ next pair, judgments


@pytest.mark.django_db
def test_it_serves_the_next_pair_in_canonical_terms(study, annotator):
    client = token_client(annotator.user)
    resp = client.get(f"{API}/studies/{study.pk}/next-pair/")
    assert resp.status_code == 200
    body = resp.json()
    assignment = Assignment.objects.get(pk=body["assignment_id"])
    pair = assignment.pair
    assert assignment.annotator == annotator and body["pair_id"] == pair.pk
    assert body["a"] == {"id": pair.candidate_a_id, "text": pair.candidate_a.text}
    assert body["b"] == {"id": pair.candidate_b_id, "text": pair.candidate_b.text}
    assert body["prompt"] == pair.prompt.text and body["context"] == pair.prompt.context
    assert body["shown_order"] == assignment.shown_order
    assert body["progress"] == {"done": 0, "total": 5}
    # Asking again returns the same open assignment, not a new claim.
    assert client.get(f"{API}/studies/{study.pk}/next-pair/").json()["assignment_id"] == assignment.pk
    assert Assignment.objects.filter(annotator=annotator).count() == 1


@pytest.mark.django_db
def test_it_records_a_judgment_and_is_idempotent_on_client_key(study, annotator):
    client = token_client(annotator.user)
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    payload = {
        "pair_id": nxt["pair_id"],
        "choice": "b",
        "strength": 70,
        "rationale": " clearer ",
        "time_ms": 4200,
        "client_key": "tab1-0001",
    }
    resp = client.post(f"{API}/judgments/", payload, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()
    judgment = Judgment.objects.get(pk=body["id"])
    assert (judgment.choice, judgment.strength, judgment.rationale, judgment.time_ms) == (
        "b",
        70,
        "clearer",
        4200,
    )
    assert judgment.shown_order == Assignment.objects.get(pk=nxt["assignment_id"]).shown_order
    assert body["pair_id"] == nxt["pair_id"] and body["client_key"] == "tab1-0001"

    again = client.post(f"{API}/judgments/", payload, format="json")
    assert again.status_code == 200 and again.json() == body
    assert Judgment.objects.filter(annotator=annotator).count() == 1
    assert client.get(f"{API}/studies/{study.pk}/next-pair/").json()["progress"] == {"done": 1, "total": 5}


@pytest.mark.django_db
def test_it_answers_409_with_the_stored_judgment_when_a_client_key_is_reused(study, annotator):
    client = token_client(annotator.user)
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    stored = client.post(f"{API}/judgments/", {"pair_id": nxt["pair_id"], "choice": "a", "client_key": "dup"},
                         format="json").json()
    second = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    for body in ({"pair_id": nxt["pair_id"], "choice": "b", "client_key": "dup"},
                 {"pair_id": second["pair_id"], "choice": "a", "client_key": "dup"}):
        resp = client.post(f"{API}/judgments/", body, format="json")
        assert resp.status_code == 409
        data = resp.json()
        assert data["judgment"] == stored and "client_key" in data["errors"] and data["detail"]
    assert Judgment.objects.filter(annotator=annotator).count() == 1


@pytest.mark.django_db
def test_it_stops_an_annotator_who_finished_from_judging(study, annotator):
    client = token_client(annotator.user)
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    assert client.post(f"{API}/me/finish/", format="json").status_code == 200
    assert client.get(f"{API}/studies/{study.pk}/next-pair/").status_code == 204
    resp = client.post(f"{API}/judgments/", {"pair_id": nxt["pair_id"], "choice": "a", "client_key": "late"},
                       format="json")
    assert resp.status_code == 403 and "finished" in resp.json()["detail"]
    assert not Judgment.objects.filter(annotator=annotator).exists()


@pytest.mark.django_db
def test_it_drops_strength_for_a_tie(study, annotator):
    client = token_client(annotator.user)
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    resp = client.post(
        f"{API}/judgments/",
        {"pair_id": nxt["pair_id"], "choice": "tie", "strength": 60, "client_key": "t"},
        format="json",
    )
    assert resp.status_code == 201 and resp.json()["strength"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"choice": "left"}, "choice"),
        ({"choice": None}, "choice"),
        ({"strength": 0}, "strength"),
        ({"strength": 101}, "strength"),
        ({"strength": "strong"}, "strength"),
        ({"time_ms": -5}, "time_ms"),
        ({"client_key": ""}, "client_key"),
        ({"client_key": "k" * 65}, "client_key"),
        ({"rationale": "r" * 5001}, "rationale"),
        ({"pair_id": "one"}, "pair_id"),
    ],
)
def test_it_rejects_invalid_judgments_and_stores_nothing(study, annotator, change, field):
    client = token_client(annotator.user)
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    payload = {"pair_id": nxt["pair_id"], "choice": "a", "client_key": "k1", **change}
    resp = client.post(f"{API}/judgments/", payload, format="json")
    assert resp.status_code == 400
    assert field in resp.json()["errors"]
    assert not Judgment.objects.exists()
    assert Assignment.objects.get(pk=nxt["assignment_id"]).completed_at is None


@pytest.mark.django_db
def test_it_refuses_judging_a_pair_not_assigned_to_the_caller(study, annotator):
    client = token_client(annotator.user)
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    other_pair = Pair.objects.filter(study=study).exclude(pk=nxt["pair_id"]).first()
    resp = client.post(
        f"{API}/judgments/", {"pair_id": other_pair.pk, "choice": "a", "client_key": "x"}, format="json"
    )
    assert resp.status_code == 400 and "not assigned to you" in resp.json()["detail"]
    # Judging the same pair twice (a new key after it was judged) is refused too.
    assert (
        client.post(
            f"{API}/judgments/", {"pair_id": nxt["pair_id"], "choice": "a", "client_key": "y"}, format="json"
        ).status_code
        == 201
    )
    resp = client.post(
        f"{API}/judgments/", {"pair_id": nxt["pair_id"], "choice": "b", "client_key": "z"}, format="json"
    )
    assert resp.status_code == 400
    assert Judgment.objects.count() == 1


@pytest.mark.django_db
def test_it_hides_pairs_and_studies_of_other_studies(study, annotator, other_annotator):
    client = token_client(other_annotator.user)
    assert client.get(f"{API}/studies/{study.pk}/next-pair/").status_code == 404
    foreign_pair = Pair.objects.filter(study=study).first()
    resp = client.post(
        f"{API}/judgments/", {"pair_id": foreign_pair.pk, "choice": "a", "client_key": "x"}, format="json"
    )
    assert resp.status_code == 404 and resp.json() == {"detail": "no such pair in your study"}
    assert (
        client.post(
            f"{API}/judgments/", {"pair_id": 987654321, "choice": "a", "client_key": "x"}, format="json"
        ).status_code
        == 404
    )
    assert not Judgment.objects.exists() and not Assignment.objects.filter(pair__study=study).exists()


@pytest.mark.django_db
def test_it_runs_the_whole_annotation_loop_until_204(study):
    joined = (
        APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": "loop"}, format="json").json()
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {joined['token']}")
    assert client.post(f"{API}/me/consent/").status_code == 200
    seen = []
    for i in range(20):
        resp = client.get(f"{API}/studies/{study.pk}/next-pair/")
        if resp.status_code == 204:
            break
        assert resp.status_code == 200
        seen.append(resp.json()["pair_id"])
        assert (
            client.post(
                f"{API}/judgments/",
                {"pair_id": seen[-1], "choice": "a", "client_key": f"k{i}"},
                format="json",
            ).status_code
            == 201
        )
    assert len(seen) == len(set(seen)) == study.pairs_per_annotator == 5
    assert resp.status_code == 204 and resp.content == b""
    me = client.get(f"{API}/me/").json()
    annotator = Annotator.objects.get(pk=joined["annotator_id"])
    assert me["completed_at"] is not None and me["completion_code"] == annotator.completion_code


@pytest.mark.django_db
def test_it_finishes_early_and_hands_out_the_completion_code(study, annotator):
    client = token_client(annotator.user)
    assert client.get(f"{API}/me/").json()["completion_code"] is None
    body = client.post(f"{API}/me/finish/").json()
    assert body["completed_at"] is not None and body["completion_code"] == annotator.completion_code


@pytest.mark.django_db
def test_it_answers_204_when_the_study_has_nothing_left(annotator, study):
    Pair.objects.filter(study=study).update(n_assigned=study.overlap_target)
    assert token_client(annotator.user).get(f"{API}/studies/{study.pk}/next-pair/").status_code == 204


# ------------------------------------------------------------------------------------- researcher export


def _judge_all(study: Study, n: int) -> None:
    """n judgments in `study`, from annotators that each judge up to 2 pairs."""
    made = 0
    while made < n:
        annotator = AnnotatorFactory(study=study, external_id=f"SECRET-PID-{made}")
        for _ in range(min(2, n - made)):
            assignment = services.assignment_next(annotator=annotator)
            services.judgment_create(
                annotator=annotator,
                pair=assignment.pair,
                choice="a",
                client_key=f"k{made}",
                strength=50,
                time_ms=1000,
            )
            made += 1


@pytest.mark.django_db
def test_it_lists_a_studys_judgments_with_pseudonyms_only(researcher):
    study = make_study_with_pairs(4, created_by=researcher, overlap_target=3)
    _judge_all(study, 7)
    client = session_client(researcher)
    resp = client.get(f"{API}/studies/{study.pk}/judgments/?page_size=5")
    assert resp.status_code == 200
    body = resp.json()
    assert body["count"] == 7 and len(body["results"]) == 5 and body["next"]
    row = body["results"][0]
    judgment = Judgment.objects.select_related("annotator", "pair__candidate_a", "pair__candidate_b").get(
        pk=row["id"]
    )
    assert row["annotator"] == judgment.annotator.pseudonym
    assert row["pair_id"] == judgment.pair_id and row["choice"] == "a" and row["strength"] == 50
    assert row["time_ms"] == 1000 and row["shown_order"] in ("ab", "ba") and row["created_at"]
    assert row["model_a"] == judgment.pair.candidate_a.model_name
    assert row["model_b"] == judgment.pair.candidate_b.model_name
    assert "SECRET-PID" not in resp.content.decode()
    page2 = client.get(body["next"]).json()
    assert len(page2["results"]) == 2
    assert {r["id"] for r in body["results"] + page2["results"]} == set(
        Judgment.objects.filter(pair__study=study).values_list("id", flat=True)
    )


@pytest.mark.django_db
def test_it_lists_judgments_with_a_constant_number_of_queries(researcher, django_assert_max_num_queries):
    small = make_study_with_pairs(2, created_by=researcher)
    big = make_study_with_pairs(30, created_by=researcher, overlap_target=2)
    _judge_all(small, 1)
    _judge_all(big, 30)
    client = session_client(researcher)
    counts = []
    for study, n in ((small, 1), (big, 30)):
        with django_assert_max_num_queries(6), CaptureQueriesContext(connection) as ctx:
            resp = client.get(f"{API}/studies/{study.pk}/judgments/")
        assert resp.status_code == 200 and len(resp.json()["results"]) == n
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


@pytest.mark.django_db
def test_it_serves_the_annotation_hot_path_in_few_queries(
    study, annotator, django_assert_num_queries, django_assert_max_num_queries
):
    """Token, user, annotator and study come in one query; the rest is the services' own work."""
    client = token_client(annotator.user)
    from feedback.selection import _id_bounds

    _id_bounds(study.pk)  # cached per process for a minute: not part of a request's steady-state cost
    # auth, open+done, rank (two bounded index scans from a random id), the claim (one statement; in the
    # test's transaction with a savepoint around it: 3), the pair
    with django_assert_max_num_queries(8):
        nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    with django_assert_num_queries(3):  # auth, open+done (one aggregate), the open assignment
        assert client.get(f"{API}/studies/{study.pk}/next-pair/").json()["pair_id"] == nxt["pair_id"]
    # auth, then the judgment's one statement (lock + quota count, insert, updates); in the test's
    # transaction with a savepoint around it: 3. The pair is not fetched (only on a refusal).
    with django_assert_num_queries(4):
        resp = client.post(
            f"{API}/judgments/", {"pair_id": nxt["pair_id"], "choice": "a", "client_key": "q"}, format="json"
        )
    assert resp.status_code == 201


# ------------------------------------------------------------------------------------------ schema & docs


@pytest.mark.django_db
def test_it_publishes_an_openapi_schema_with_every_endpoint():
    resp = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    schema = json.loads(resp.content)
    paths = schema["paths"]
    expected = {
        "/api/v1/studies/": {"get", "post"},
        "/api/v1/studies/{id}/": {"get"},
        "/api/v1/studies/{id}/import/": {"post"},
        "/api/v1/studies/{id}/join/": {"post"},
        "/api/v1/studies/{id}/next-pair/": {"get"},
        "/api/v1/studies/{id}/judgments/": {"get"},
        "/api/v1/judgments/": {"post"},
        "/api/v1/me/": {"get"},
        "/api/v1/me/consent/": {"post"},
        "/api/v1/me/profile/": {"get", "put"},
        "/api/v1/me/finish/": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    next_pair = paths["/api/v1/studies/{id}/next-pair/"]["get"]["responses"]
    assert {"200", "204", "401", "403", "404"} <= set(next_pair)
    assert "multipart/form-data" in paths["/api/v1/studies/{id}/import/"]["post"]["requestBody"]["content"]
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    assert set(schema["components"]["schemas"]["NextPair"]["properties"]) >= {
        "pair_id",
        "assignment_id",
        "context",
        "prompt",
        "a",
        "b",
        "progress",
    }


@pytest.mark.django_db
def test_it_serves_the_api_docs_without_a_cdn():
    resp = APIClient().get("/api/docs/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "swagger" in html.lower() and "drf_spectacular_sidecar" in html
    for cdn in ("cdn.", "unpkg", "jsdelivr", "cdnjs", "googleapis", "://"):
        assert cdn not in html, cdn


# ------------------------------------------------------------------------------ concurrency (PostgreSQL)


def _in_thread(fn, results: list, errors: list):
    def run():
        try:
            results.append(fn())
        except Exception as exc:  # pragma: no cover - surfaced by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    return threading.Thread(target=run)


def _assert_no_overbooking(study: Study) -> None:
    study.refresh_from_db()
    for pair in Pair.objects.filter(study=study):
        live = Assignment.objects.filter(pair=pair, released_at__isnull=True).count()
        assert pair.n_assigned <= study.overlap_target
        assert live == pair.n_assigned
    per_annotator = Counter(
        Assignment.objects.filter(pair__study=study).values_list("annotator_id", "pair_id")
    )
    assert max(per_annotator.values()) == 1


@pytest.mark.django_db(transaction=True)
def test_it_never_overbooks_pairs_when_annotators_race_in_the_service():
    study = make_study_with_pairs(8, overlap_target=2, pairs_per_annotator=8)
    annotators = [AnnotatorFactory(study=study) for _ in range(24)]
    barrier = threading.Barrier(len(annotators))

    def work(annotator: Annotator) -> int:
        annotator = Annotator.objects.select_related("study").get(pk=annotator.pk)
        barrier.wait()
        judged = 0
        while (assignment := services.assignment_next(annotator=annotator)) is not None:
            services.judgment_create(
                annotator=annotator, pair=assignment.pair, choice="a", client_key=f"k{judged}"
            )
            judged += 1
        return judged

    results: list[int] = []
    errors: list[Exception] = []
    threads = [_in_thread(lambda a=a: work(a), results, errors) for a in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sum(results) == 16 == Judgment.objects.filter(pair__study=study).count()
    _assert_no_overbooking(study)
    assert all(p.n_judgments == 2 for p in Pair.objects.filter(study=study))


@pytest.mark.django_db(transaction=True)
def test_it_never_overbooks_pairs_when_annotators_race_through_the_api():
    study = make_study_with_pairs(6, overlap_target=3, pairs_per_annotator=6)
    tokens = [
        APIClient().post(f"{API}/studies/{study.pk}/join/", {}, format="json").json()["token"]
        for _ in range(16)
    ]
    barrier = threading.Barrier(len(tokens))

    def work(token: str) -> list[int]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        barrier.wait()
        got: list[int] = []
        for i in range(20):
            resp = client.get(f"{API}/studies/{study.pk}/next-pair/")
            if resp.status_code == 204:
                break
            assert resp.status_code == 200, resp.content
            pair_id = resp.json()["pair_id"]
            got.append(pair_id)
            resp = client.post(
                f"{API}/judgments/",
                {"pair_id": pair_id, "choice": "tie", "client_key": f"c{i}"},
                format="json",
            )
            assert resp.status_code == 201, resp.content
        return got

    results: list[list[int]] = []
    errors: list[Exception] = []
    threads = [_in_thread(lambda t=t: work(t), results, errors) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert all(len(got) == len(set(got)) for got in results)  # nobody got a pair twice
    assert sum(len(got) for got in results) == 18 == Judgment.objects.filter(pair__study=study).count()
    _assert_no_overbooking(study)


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.django_db
def test_it_answers_json_errors_for_bad_credentials_and_bad_json(annotator):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    resp = client.get(f"{API}/me/")
    assert resp.status_code == 401 and resp.json() == {"detail": "Invalid token."}
    assert APIClient().get(f"{API}/me/").json()["detail"] == "Authentication credentials were not provided."
    resp = token_client(annotator.user).generic(
        "POST", f"{API}/judgments/", io.BytesIO(b"{oops").read(), content_type="application/json"
    )
    assert resp.status_code == 400 and "JSON parse error" in resp.json()["detail"]


@pytest.mark.django_db
def test_it_keeps_researchers_out_of_annotator_endpoints(study):
    resp = session_client(ResearcherFactory()).get(f"{API}/me/")
    assert resp.status_code == 403 and "annotators" in resp.json()["detail"]
