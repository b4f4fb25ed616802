"""The training API: retrain, model versions, predict, candidates, settings (training.api_views)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback import services as feedback_services
from feedback.models import Candidate, Study
from tests.factories import (
    AnnotatorFactory,
    CandidateFactory,
    PairFactory,
    PromptFactory,
    ResearcherFactory,
    make_study_with_pairs,
)
from tests.training.conftest import label_all
from training.models import ModelVersion


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def no_training(monkeypatch):
    """Retrain requests are queued but never run (API contract tests need no model)."""
    calls: list[int] = []
    from training import tasks

    monkeypatch.setattr(tasks.retrain_study_model, "delay", lambda version_id: calls.append(version_id))
    return calls


@pytest.fixture
def fast_fit(settings):
    settings.CHORUS_FIT_EPOCHS = 2


def _two_candidates(study: Study) -> tuple[Candidate, Candidate]:
    pair = study.pairs.select_related("candidate_a", "candidate_b").order_by("id").first()
    return pair.candidate_a, pair.candidate_b


# ------------------------------------------------------------------------------------------- authz table

ROLES = ["anonymous", "annotator_of_study", "annotator_of_other_study", "researcher_of_study",
         "researcher_of_other_study"]


@pytest.fixture
def people(study, researcher):
    other_study = make_study_with_pairs(2)
    return {
        "anonymous": None,
        "annotator_of_study": AnnotatorFactory(study=study).user,
        "annotator_of_other_study": AnnotatorFactory(study=other_study).user,
        "researcher_of_study": researcher,
        "researcher_of_other_study": other_study.created_by,
    }


def _call(client: APIClient, endpoint: str, study: Study, target_annotator_id: int):
    a, b = _two_candidates(study)
    base = f"/api/v1/studies/{study.pk}"
    if endpoint == "retrain":
        return client.post(f"{base}/retrain/", {"kind": "bt"}, format="json")
    if endpoint == "models":
        return client.get(f"{base}/models/")
    if endpoint == "predict":
        return client.get(f"{base}/annotators/{target_annotator_id}/predict/", {"a": a.pk, "b": b.pk})
    if endpoint == "candidates":
        return client.get(f"{base}/candidates/")
    if endpoint == "settings":
        return client.patch(f"{base}/settings/", {"selector": "uncertainty"}, format="json")
    raise AssertionError(endpoint)


# Expected status per role; predict asks about the study's annotator "annotator_of_study" itself, and no
# model is trained yet, so callers who may ask get 409.
EXPECTED = {
    "retrain": [401, 403, 403, 202, 403],
    "models": [401, 403, 403, 200, 403],
    "predict": [401, 409, 404, 409, 403],
    "candidates": [401, 403, 403, 200, 403],
    "settings": [401, 403, 403, 200, 403],
}


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", list(EXPECTED))
@pytest.mark.parametrize("role_index", range(len(ROLES)), ids=ROLES)
def test_authz_table(endpoint, role_index, study, people, no_training):
    role = ROLES[role_index]
    target = people["annotator_of_study"].annotator.pk
    if endpoint == "retrain":  # a retrain needs judgments to learn from (see the 400 test below)
        label_all(study, n_annotators=2, per_annotator=6)
    response = _call(client_for(people[role]), endpoint, study, target)
    assert response.status_code == EXPECTED[endpoint][role_index], (endpoint, role, response.content)
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"].startswith("Token")
    if response.status_code in (401, 403, 404, 409):
        assert "detail" in response.json()


@pytest.mark.django_db
def test_it_refuses_a_retrain_with_nothing_to_learn_from(study, researcher, no_training):
    client = client_for(researcher)
    response = client.post(f"/api/v1/studies/{study.pk}/retrain/", {"kind": "vpl"}, format="json")
    assert response.status_code == 400
    assert "at least 2" in str(response.json()["errors"])
    assert not ModelVersion.objects.filter(study=study).exists() and no_training == []
    # Ties carry no direction, so a study of ties only is refused too.
    annotator = AnnotatorFactory(study=study)
    for i in range(4):
        asg = feedback_services.assignment_next(annotator=annotator)
        feedback_services.judgment_create(annotator=annotator, pair=asg.pair, choice="tie", client_key=f"t{i}")
    assert client.post(f"/api/v1/studies/{study.pk}/retrain/", {}, format="json").status_code == 400
    label_all(study, n_annotators=2, per_annotator=6)
    response = client.post(f"/api/v1/studies/{study.pk}/retrain/", {}, format="json")
    assert response.status_code == 202, response.content
    assert ModelVersion.objects.filter(study=study).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", list(EXPECTED))
def test_a_missing_study_is_404_for_a_researcher(endpoint, researcher, no_training):
    study = make_study_with_pairs(1, created_by=researcher)
    annotator = AnnotatorFactory(study=study)
    a, b = _two_candidates(study)
    client = client_for(researcher)
    missing = study.pk + 10_000
    base = f"/api/v1/studies/{missing}"
    response = {
        "retrain": lambda: client.post(f"{base}/retrain/", {}, format="json"),
        "models": lambda: client.get(f"{base}/models/"),
        "predict": lambda: client.get(f"{base}/annotators/{annotator.pk}/predict/", {"a": a.pk, "b": b.pk}),
        "candidates": lambda: client.get(f"{base}/candidates/"),
        "settings": lambda: client.patch(f"{base}/settings/", {}, format="json"),
    }[endpoint]()
    assert response.status_code == 404


@pytest.mark.django_db
def test_an_annotator_never_learns_about_another_annotator(study, researcher):
    me = AnnotatorFactory(study=study)
    other = AnnotatorFactory(study=study)
    a, b = _two_candidates(study)
    client = client_for(me.user)
    url = f"/api/v1/studies/{study.pk}/annotators/{{}}/predict/"
    other_response = client.get(url.format(other.pk), {"a": a.pk, "b": b.pk})
    missing_response = client.get(url.format(other.pk + 10_000), {"a": a.pk, "b": b.pk})
    # the same answer whether or not the id exists
    assert other_response.status_code == missing_response.status_code == 404
    assert other_response.json() == missing_response.json()
    # and its own id in the study is fine (409: nothing trained yet)
    assert client.get(url.format(me.pk), {"a": a.pk, "b": b.pk}).status_code == 409


@pytest.mark.django_db
def test_predict_answers_each_kind_of_refusal_as_before(study, researcher, other_annotator):
    me = AnnotatorFactory(study=study)
    a, b = _two_candidates(study)

    def get(user, pk: int, aid: int):
        response = client_for(user).get(f"/api/v1/studies/{pk}/annotators/{aid}/predict/", {"a": a.pk, "b": b.pk})
        return response.status_code, response.json()["detail"]

    # An annotator of another study, even about a study that does not exist: "no such annotator".
    assert get(other_annotator.user, study.pk, me.pk) == (404, "no such annotator")
    assert get(me.user, study.pk + 10_000, me.pk) == (404, "no such annotator")
    assert get(ResearcherFactory(), study.pk, me.pk) == (403, "you are not a researcher of this study")
    assert get(researcher, study.pk + 10_000, me.pk) == (404, "no such study")
    assert get(researcher, study.pk, me.pk + 10_000) == (404, "no such annotator in this study")


@pytest.mark.django_db
def test_a_researcher_gets_404_for_another_studys_annotator(study, researcher, other_annotator):
    a, b = _two_candidates(study)
    url = f"/api/v1/studies/{study.pk}/annotators/{other_annotator.pk}/predict/"
    assert client_for(researcher).get(url, {"a": a.pk, "b": b.pk}).status_code == 404


# ---------------------------------------------------------------------------------------------- retrain


@pytest.mark.django_db
def test_retrain_queues_a_version_once(study, researcher, no_training):
    client = client_for(researcher)
    label_all(study, n_annotators=2, per_annotator=6)
    url = f"/api/v1/studies/{study.pk}/retrain/"
    first = client.post(url, {"kind": "pal"}, format="json")
    assert first.status_code == 202
    body = first.json()
    assert set(body) == {"model_version_id", "status", "broker_down"} and body["broker_down"] is False
    assert body["status"] == "queued"
    version = ModelVersion.objects.get(pk=body["model_version_id"])
    assert (version.study_id, version.kind) == (study.pk, "pal")
    assert no_training == [version.pk]  # handed to the worker
    # idempotent while pending
    again = client.post(url, {"kind": "pal"}, format="json")
    assert again.json()["model_version_id"] == version.pk
    assert no_training == [version.pk]
    # no body: the study's model kind
    default = client.post(url, {}, format="json").json()
    assert ModelVersion.objects.get(pk=default["model_version_id"]).kind == study.model_kind


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"kind": "gpt"}, {"kind": ""}, {"kind": 3}])
def test_retrain_rejects_a_bad_kind(study, researcher, no_training, body):
    response = client_for(researcher).post(f"/api/v1/studies/{study.pk}/retrain/", body, format="json")
    assert response.status_code == 400
    assert "kind" in response.json()["errors"]
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_models_lists_versions_newest_first_without_server_paths(study, researcher):
    old = ModelVersion.objects.create(study=study, kind="bt", status="retired", artifact_path="/srv/secret/v1")
    new = ModelVersion.objects.create(
        study=study, kind="vpl", status="failed", error="RuntimeError: boom", metrics={"accuracy": 0.7},
        data_cutoff=42, n_train=30, n_heldout=8,
    )
    ModelVersion.objects.create(study=make_study_with_pairs(1), kind="bt")  # another study's
    body = client_for(researcher).get(f"/api/v1/studies/{study.pk}/models/").json()
    assert body["count"] == 2
    rows = body["results"]
    assert [r["id"] for r in rows] == [new.pk, old.pk]
    assert rows[0]["kind"] == "vpl" and rows[0]["status"] == "failed" and rows[0]["error"] == "RuntimeError: boom"
    assert rows[0]["metrics"] == {"accuracy": 0.7}
    assert (rows[0]["data_cutoff"], rows[0]["n_train"], rows[0]["n_heldout"]) == (42, 30, 8)
    for key in ("created_at", "started_at", "finished_at"):
        assert key in rows[0]
    assert "artifact_path" not in rows[1]


# ----------------------------------------------------------------------------------- predict (trained)


@pytest.fixture
def trained(style_study, researcher, fast_fit):
    """style_study labelled by 4 annotators and a model trained through the retrain endpoint (eager)."""
    annotators = label_all(style_study, n_annotators=4, per_annotator=10)
    response = client_for(researcher).post(f"/api/v1/studies/{style_study.pk}/retrain/", {"kind": "vpl"},
                                           format="json")
    assert response.status_code == 202
    version = ModelVersion.objects.get(pk=response.json()["model_version_id"])
    assert version.status == ModelVersion.Status.ACTIVE, version.error
    assert response.json()["status"] == "active"  # eager mode trained it within the request
    return style_study, annotators, version


@pytest.mark.django_db
def test_predict_for_researchers_and_the_annotator_themself(trained, researcher):
    study, annotators, version = trained
    a, b = _two_candidates(study)
    me = annotators[0]
    url = f"/api/v1/studies/{study.pk}/annotators/{me.pk}/predict/"
    for client in (client_for(researcher), client_for(me.user)):
        response = client.get(url, {"a": a.pk, "b": b.pk})
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"p_a", "std", "model_version", "n_labels"}
        assert 0.0 <= body["p_a"] <= 1.0 and body["std"] >= 0.0
        assert body["model_version"] == version.pk
        assert body["n_labels"] > 0
    flipped = client_for(researcher).get(url, {"a": b.pk, "b": a.pk}).json()
    assert flipped["p_a"] == pytest.approx(1 - body["p_a"], abs=1e-4)
    # the models list shows it active with its held-out metrics
    rows = client_for(researcher).get(f"/api/v1/studies/{study.pk}/models/").json()["results"]
    assert rows[0]["status"] == "active" and "accuracy" in rows[0]["metrics"] and rows[0]["n_train"] > 0


@pytest.mark.django_db
def test_predict_validates_the_candidates(trained, researcher):
    study, annotators, _ = trained
    client = client_for(researcher)
    url = f"/api/v1/studies/{study.pk}/annotators/{annotators[0].pk}/predict/"
    pairs = list(study.pairs.select_related("candidate_a", "candidate_b").order_by("id"))
    a = pairs[0].candidate_a
    other_prompt = next(p.candidate_a for p in pairs if p.prompt_id != a.prompt_id)
    foreign = CandidateFactory(prompt=PromptFactory(study=make_study_with_pairs(1)))
    cases = {
        "different prompts": {"a": a.pk, "b": other_prompt.pk},
        "missing b": {"a": a.pk},
        "unknown id": {"a": a.pk, "b": 10**9},
        "another study's candidate": {"a": a.pk, "b": foreign.pk},
        "not a number": {"a": a.pk, "b": "x"},
        "the same candidate twice": {"a": a.pk, "b": a.pk},
    }
    for name, params in cases.items():
        response = client.get(url, params)
        assert response.status_code == 400, (name, response.content)
        assert "errors" in response.json(), name


@pytest.mark.django_db
def test_predict_is_409_until_a_model_is_trained(study, researcher, no_training):
    annotator = AnnotatorFactory(study=study)
    a, b = _two_candidates(study)
    # a queued (or failed) version is not a model
    ModelVersion.objects.create(study=study, kind="bt", status="failed")
    response = client_for(researcher).get(
        f"/api/v1/studies/{study.pk}/annotators/{annotator.pk}/predict/", {"a": a.pk, "b": b.pk}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "no_model"


# ------------------------------------------------------------------------------------------- candidates


@pytest.mark.django_db
def test_candidates_are_paginated_with_their_prompt(researcher):
    study = make_study_with_pairs(3, created_by=researcher)
    client = client_for(researcher)
    body = client.get(f"/api/v1/studies/{study.pk}/candidates/", {"page_size": 4}).json()
    assert body["count"] == 6 and len(body["results"]) == 4 and body["next"]
    row = body["results"][0]
    candidate = Candidate.objects.select_related("prompt").get(pk=row["id"])
    assert row == {
        "id": candidate.pk, "prompt_id": candidate.prompt_id, "prompt_text": candidate.prompt.text,
        "model_name": candidate.model_name, "text": candidate.text,
    }
    assert client.get(body["next"]).json()["results"][-1]["id"] not in [r["id"] for r in body["results"]]


@pytest.mark.django_db
def test_candidates_take_a_constant_number_of_queries(researcher):
    small = make_study_with_pairs(2, created_by=researcher)
    large = make_study_with_pairs(2, created_by=researcher)
    for _ in range(20):
        PairFactory(prompt=PromptFactory(study=large))
    client = client_for(researcher)

    def count(study):
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(f"/api/v1/studies/{study.pk}/candidates/")
        assert response.status_code == 200
        return len(ctx.captured_queries), response.json()["count"]

    (n_small, c_small), (n_large, c_large) = count(small), count(large)
    assert (c_small, c_large) == (4, 44)
    assert n_small == n_large


# --------------------------------------------------------------------------------------------- settings


@pytest.mark.django_db
def test_settings_set_selector_and_model_kind(study, researcher):
    client = client_for(researcher)
    url = f"/api/v1/studies/{study.pk}/settings/"
    response = client.patch(url, {"selector": "info_gain", "model_kind": "pal"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["selector"] == "info_gain" and response.json()["model_kind"] == "pal"
    study.refresh_from_db()
    assert (study.selector, study.model_kind) == ("info_gain", "pal")
    # one field at a time leaves the other alone
    assert client.patch(url, {"selector": "mixed"}, format="json").json()["model_kind"] == "pal"
    # the study detail endpoint (feedback API) shows the same
    detail = client.get(f"/api/v1/studies/{study.pk}/").json()
    assert (detail["selector"], detail["model_kind"]) == ("mixed", "pal")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [({"selector": "clever"}, "selector"), ({"model_kind": "gpt"}, "model_kind"), ({"selector": ""}, "selector")],
)
def test_settings_reject_unknown_values(study, researcher, body, field):
    response = client_for(researcher).patch(f"/api/v1/studies/{study.pk}/settings/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    study.refresh_from_db()
    assert (study.selector, study.model_kind) == ("random", "vpl")


@pytest.mark.django_db
def test_settings_accept_every_registered_selector(study, researcher):
    from feedback.selection import SELECTORS

    assert {"random", "uncertainty", "info_gain", "mixed"} <= set(SELECTORS)
    client = client_for(researcher)
    for name in SELECTORS:
        assert client.patch(f"/api/v1/studies/{study.pk}/settings/", {"selector": name}, format="json").status_code == 200


@pytest.mark.django_db
def test_the_selector_set_over_the_api_picks_the_next_pair(study, researcher):
    client_for(researcher).patch(f"/api/v1/studies/{study.pk}/settings/", {"selector": "uncertainty"}, format="json")
    annotator = AnnotatorFactory(study=Study.objects.get(pk=study.pk))
    assignment = feedback_services.assignment_next(annotator=annotator)
    assert assignment is not None and assignment.selector.startswith("uncertainty")


@pytest.mark.django_db
def test_a_superuser_may_use_every_endpoint(study, no_training):
    admin = ResearcherFactory(is_superuser=True)
    client = client_for(admin)
    label_all(study, n_annotators=2, per_annotator=6)
    assert client.get(f"/api/v1/studies/{study.pk}/models/").status_code == 200
    assert client.post(f"/api/v1/studies/{study.pk}/retrain/", {}, format="json").status_code == 202
