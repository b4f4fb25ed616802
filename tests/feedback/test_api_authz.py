"""Who may call what: every API endpoint × every kind of caller, with the exact status expected.

Callers: anonymous; the annotator of the study (token); an annotator of another study (token); a researcher
of the study (session); a researcher of another study who is not a superuser (session).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback import services
from feedback.models import Annotator, Judgment, Pair, Study
from tests.factories import AnnotatorFactory, ResearcherFactory, make_study_with_pairs

API = "/api/v1"
ROLES = ("anonymous", "annotator", "other_annotator", "researcher", "other_researcher")


@dataclass
class World:
    study: Study
    annotator: Annotator
    other_annotator: Annotator
    clients: dict[str, APIClient]
    assigned_pair: Pair  # the annotator's open assignment
    endpoint_id: int = 0  # a model endpoint of the study (issue 12)


@pytest.fixture
def world(study, researcher, annotator, other_annotator) -> World:
    other_researcher = ResearcherFactory()
    make_study_with_pairs(1, created_by=other_researcher)
    assigned_pair = services.assignment_next(annotator=annotator).pair
    services.assignment_next(annotator=other_annotator)

    def by_token(user) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        return client

    def by_session(user) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    clients = {
        "anonymous": APIClient(),
        "annotator": by_token(annotator.user),
        "other_annotator": by_token(other_annotator.user),
        "researcher": by_session(researcher),
        "other_researcher": by_session(other_researcher),
    }
    from feedback.conversations import endpoint_create

    # A model endpoint nobody serves: testing its connection answers at once (connection refused).
    endpoint = endpoint_create(study=study, name="E", base_url="http://127.0.0.1:9/v1", model_id="m")
    return World(study, annotator, other_annotator, clients, assigned_pair, endpoint.pk)


def _with_external_id(annotator: Annotator) -> str:
    Annotator.objects.filter(pk=annotator.pk).update(external_id="AUTHZ-PID")
    return "AUTHZ-PID"


def _import_body() -> dict[str, Any]:
    row = json.dumps({"prompt": "Why?", "chosen": "Because.", "rejected": "No."}).encode()
    return {"file": SimpleUploadedFile("rows.jsonl", row + b"\n")}


# endpoint -> (method, path template, body factory, format, {role: status})
ENDPOINTS: dict[str, tuple[str, str, Any, str, dict[str, int]]] = {
    "list studies": (
        "get",
        "/studies/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 200,
            "researcher": 200,
            "other_researcher": 200,
        },
    ),
    "create study": (
        "post",
        "/studies/",
        lambda w: {"name": "New study"},
        "json",
        {
            "anonymous": 401,
            "annotator": 403,
            "other_annotator": 403,
            "researcher": 201,
            "other_researcher": 201,
        },
    ),
    "study detail": (
        "get",
        "/studies/{study}/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 403,
            "other_annotator": 403,
            "researcher": 200,
            "other_researcher": 403,
        },
    ),
    "import": (
        "post",
        "/studies/{study}/import/",
        lambda w: _import_body(),
        "multipart",
        {
            "anonymous": 401,
            "annotator": 403,
            "other_annotator": 403,
            "researcher": 201,
            "other_researcher": 403,
        },
    ),
    "study judgments": (
        "get",
        "/studies/{study}/judgments/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 403,
            "other_annotator": 403,
            "researcher": 200,
            "other_researcher": 403,
        },
    ),
    # Anyone may join an open study; the study's own annotator resumes (200), everyone else is a new one.
    "join": (
        "post",
        "/studies/{study}/join/",
        lambda w: {},
        "json",
        {
            "anonymous": 201,
            "annotator": 200,
            "other_annotator": 201,
            "researcher": 201,
            "other_researcher": 201,
        },
    ),
    # Only the study's researchers may mint a participant's resume link.
    "resume link": (
        "post",
        "/studies/{study}/resume-links/",
        lambda w: {"external_id": _with_external_id(w.annotator)},
        "json",
        {
            "anonymous": 401,
            "annotator": 403,
            "other_annotator": 403,
            "researcher": 200,
            "other_researcher": 403,
        },
    ),
    "next pair": (
        "get",
        "/studies/{study}/next-pair/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 404,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    "judge": (
        "post",
        "/judgments/",
        lambda w: {"pair_id": w.assigned_pair.pk, "choice": "a", "client_key": "authz"},
        "json",
        {
            "anonymous": 401,
            "annotator": 201,
            "other_annotator": 404,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    "me": (
        "get",
        "/me/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 200,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    "consent": (
        "post",
        "/me/consent/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 200,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    "get profile": (
        "get",
        "/me/profile/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 200,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    "put profile": (
        "put",
        "/me/profile/",
        lambda w: {"data": {"age": "25-34"}},
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 200,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    "finish": (
        "post",
        "/me/finish/",
        None,
        "json",
        {
            "anonymous": 401,
            "annotator": 200,
            "other_annotator": 200,
            "researcher": 403,
            "other_researcher": 403,
        },
    ),
    # Model endpoints of live-conversation studies (issue 12): the study's researchers only.
    "list endpoints": (
        "get",
        "/studies/{study}/endpoints/",
        None,
        "json",
        {"anonymous": 401, "annotator": 403, "other_annotator": 403, "researcher": 200, "other_researcher": 403},
    ),
    "add endpoint": (
        "post",
        "/studies/{study}/endpoints/",
        lambda w: {"name": "E2", "base_url": "http://127.0.0.1:9/v1", "model_id": "m"},
        "json",
        {"anonymous": 401, "annotator": 403, "other_annotator": 403, "researcher": 201, "other_researcher": 403},
    ),
    "test endpoint": (
        "post",
        "/studies/{study}/endpoints/{endpoint}/test/",
        None,
        "json",
        {"anonymous": 401, "annotator": 403, "other_annotator": 403, "researcher": 200, "other_researcher": 403},
    ),
    # Exports (feedback.api_exports) take the project's default authentication, session first: an anonymous
    # caller gets 403, not 401 (no WWW-Authenticate challenge to send).
    **{
        f"export {kind}": (
            "get",
            f"/studies/{{study}}/export/{suffix}",
            None,
            "json",
            {"anonymous": 403, "annotator": 403, "other_annotator": 403, "researcher": 200, "other_researcher": 403},
        )
        for kind, suffix in (("judgments", ""), ("profiles", "profiles/"), ("ratings", "ratings/"))
    },
}

CASES = [(name, role) for name in ENDPOINTS for role in ROLES]


@pytest.mark.django_db
@pytest.mark.parametrize(("endpoint", "role"), CASES, ids=[f"{e}-{r}" for e, r in CASES])
def test_it_answers_each_caller_with_the_exact_status(world, endpoint, role):
    method, template, body, fmt, expected = ENDPOINTS[endpoint]
    path = API + template.format(study=world.study.pk, endpoint=world.endpoint_id)
    client = world.clients[role]
    data = body(world) if body else None
    resp = (
        getattr(client, method)(path, data, format=fmt) if data is not None else getattr(client, method)(path)
    )
    assert resp.status_code == expected[role], (endpoint, role, resp.content[:300])
    if resp.status_code >= 400:
        assert resp["Content-Type"].startswith("application/json")
        assert resp.json().get("detail") or resp.json().get("errors")


def test_it_covers_every_api_route():
    from feedback import api_urls

    covered = {template for _, template, *_ in ENDPOINTS.values()}
    routes = {
        "/" + str(p.pattern).replace("<int:pk>", "{study}").replace("<int:endpoint_id>", "{endpoint}")
        for p in api_urls.urlpatterns
    }
    assert routes <= covered


@pytest.mark.django_db
def test_it_shows_researchers_only_their_own_studies(world):
    other = world.clients["other_researcher"].get(f"{API}/studies/").json()
    assert world.study.pk not in {s["id"] for s in other["results"]}
    assert world.clients["annotator"].get(f"{API}/studies/").json()["count"] == 0


@pytest.mark.django_db
def test_it_never_shows_an_annotator_another_annotators_data(world):
    study = world.study
    mine = world.annotator
    neighbour = AnnotatorFactory(study=study, external_id="NEIGHBOUR-PID")
    services.profile_update(annotator=neighbour, data={"age": "65+", "self_description": "neighbour secret"})
    neighbour_pair = services.assignment_next(annotator=neighbour).pair
    if neighbour_pair.pk == world.assigned_pair.pk:  # both may hold the same pair (overlap 2); pick another
        services.judgment_create(annotator=neighbour, pair=neighbour_pair, choice="a", client_key="n0")
        neighbour_pair = services.assignment_next(annotator=neighbour).pair
    # A precondition, not a guard: the refusal below is only meaningful for a pair that is not mine.
    assert neighbour_pair.pk != world.assigned_pair.pk
    services.judgment_create(annotator=neighbour, pair=neighbour_pair, choice="b", client_key="shared-key")

    client = world.clients["annotator"]
    me = client.get(f"{API}/me/").json()
    assert me["annotator_id"] == mine.pk and me["pseudonym"] == mine.pseudonym
    profile = client.get(f"{API}/me/profile/").json()
    assert profile["data"] == {}
    nxt = client.get(f"{API}/studies/{study.pk}/next-pair/").json()
    assert nxt["pair_id"] == world.assigned_pair.pk
    assert nxt["progress"]["done"] == 0
    # Judging the neighbour's pair is refused; reusing the neighbour's client_key does not return theirs.
    resp = client.post(
        f"{API}/judgments/", {"pair_id": neighbour_pair.pk, "choice": "a", "client_key": "x"}, format="json"
    )
    assert resp.status_code == 400
    resp = client.post(
        f"{API}/judgments/",
        {"pair_id": world.assigned_pair.pk, "choice": "a", "client_key": "shared-key"},
        format="json",
    )
    assert resp.status_code == 201
    assert Judgment.objects.get(pk=resp.json()["id"]).annotator == mine
    for body in (me, profile, nxt, resp.json()):
        text = json.dumps(body)
        assert (
            "NEIGHBOUR-PID" not in text and "neighbour secret" not in text and neighbour.pseudonym not in text
        )
    # And no annotator endpoint lists the study's judgments.
    assert client.get(f"{API}/studies/{study.pk}/judgments/").status_code == 403


@pytest.mark.django_db
def test_it_lets_a_co_researcher_and_a_superuser_in(world):
    co = ResearcherFactory()
    world.study.researchers.add(co)
    admin = ResearcherFactory(is_superuser=True)
    for user in (co, admin):
        client = APIClient()
        client.force_login(user)
        assert client.get(f"{API}/studies/{world.study.pk}/").status_code == 200
        assert client.get(f"{API}/studies/{world.study.pk}/judgments/").status_code == 200


@pytest.mark.django_db
def test_it_answers_404_before_403_for_a_missing_study(world):
    for role in ("researcher", "other_researcher", "annotator"):
        assert world.clients[role].get(f"{API}/studies/999999/").status_code == 404
    assert world.clients["annotator"].get(f"{API}/studies/999999/next-pair/").status_code == 404
