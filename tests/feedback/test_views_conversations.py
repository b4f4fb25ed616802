"""Conversation pages (write, stream, judge), the models & design pages, and both-bad on compare / API."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback import conversations as conv
from feedback import selectors, services
from feedback.models import Candidate, ConversationTurn, Judgment, ModelEndpoint, Prompt
from tests.factories import AnnotatorFactory, ResearcherFactory, StudyFactory, make_study_with_pairs
from tests.feedback.llm_fakes import fake_server

pytestmark = pytest.mark.django_db
SECRET = "sk-very-secret-key-123"


@pytest.fixture
def talk_study(llm_server, researcher):
    study = StudyFactory(kind="conversation", conversation_turns=2, first_turn_answers=2, created_by=researcher,
                         profile_fields=[], seed_prompts=["Tell me a story about a river."], attributes=["safety"])
    for model in ("tiny-a", "tiny-b"):
        conv.endpoint_create(study=study, name=f"Secret name {model}", base_url=llm_server.base_url, model_id=model,
                             params={"max_tokens": 6}, api_key=SECRET)
    return study


@pytest.fixture
def talker(talk_study):
    annotator = AnnotatorFactory(study=talk_study)
    annotator.profile_completed_at = timezone.now()
    annotator.save(update_fields=["profile_completed_at"])
    return annotator


def _events(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


def _judge_form(html: str) -> tuple[str, str]:
    return (re.search(r'name="turn" value="(\d+)"', html).group(1),
            re.search(r'name="client_key" value="(\w+)"', html).group(1))


def test_the_talk_page_offers_the_seed_prompts_and_compare_redirects_there(client, talker, talk_study):
    client.force_login(talker.user)
    assert client.get(f"/s/{talk_study.slug}/compare").url == f"/s/{talk_study.slug}/talk"
    html = client.get(f"/s/{talk_study.slug}/talk").content.decode()
    assert "Tell me a story about a river." in html and 'name="message"' in html
    assert "js/talk.js" in html


def test_it_streams_a_turn_as_server_sent_events_and_stores_it_whole(client, talker, talk_study):
    client.force_login(talker.user)
    response = client.post(f"/s/{talk_study.slug}/talk/stream", {"message": "Hi there", "client_key": "s1"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    events = _events(response)
    assert events[0] == {"type": "start", "answers": 2}
    assert events[-1] == {"type": "done"}
    deltas = [e for e in events if e["type"] == "delta"]
    assert {e["slot"] for e in deltas} == {0, 1} and len(deltas) > 2
    turn = ConversationTurn.objects.get()
    texts = [c.text for c in conv.turn_candidates(turn)]
    assert texts == ["".join(e["text"] for e in deltas if e["slot"] == s) for s in (0, 1)]

    # The page now shows the two answers for judging, without the models' names.
    html = client.get(f"/s/{talk_study.slug}/talk").content.decode()
    assert "Both are bad" in html and "Secret name" not in html and "tiny-" not in html
    turn_id, key = _judge_form(html)
    response = client.post(f"/s/{talk_study.slug}/talk/judge",
                           {"turn": turn_id, "client_key": key, "choice": "left", "strength": "80",
                            "dim_safety": "right"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Turn 2 of 2" in response.content.decode()
    # A retried submission (same client key) stores nothing more and shows the current step.
    again = client.post(f"/s/{talk_study.slug}/talk/judge", {"turn": turn_id, "client_key": key, "choice": "right"},
                        HTTP_HX_REQUEST="true")
    assert again.status_code == 200 and "Turn 2 of 2" in again.content.decode()
    judgment = Judgment.objects.get()
    assert judgment.strength == 80 and judgment.dimensions == {"safety": "b" if judgment.choice == "a" else "a"}


def test_without_javascript_a_message_is_answered_in_full(client, talker, talk_study):
    client.force_login(talker.user)
    response = client.post(f"/s/{talk_study.slug}/talk", {"message": "Hello", "client_key": "nojs"})
    assert response.status_code == 302 and response.url == f"/s/{talk_study.slug}/talk"
    assert Candidate.objects.filter(prompt__study=talk_study).count() == 2
    turn_id, key = _judge_form(client.get(f"/s/{talk_study.slug}/talk").content.decode())
    client.post(f"/s/{talk_study.slug}/talk/judge", {"turn": turn_id, "client_key": key, "choice": "bad"})
    client.post(f"/s/{talk_study.slug}/talk", {"message": "Second", "client_key": "nojs2"})
    turn_id, key = _judge_form(client.get(f"/s/{talk_study.slug}/talk").content.decode())
    response = client.post(f"/s/{talk_study.slug}/talk/judge", {"turn": turn_id, "client_key": key, "choice": "tie"})
    assert response.url == f"/s/{talk_study.slug}/done"
    assert list(Judgment.objects.values_list("choice", flat=True)) == ["bad", "tie"]


def test_a_failing_model_gives_a_clear_message_and_stores_nothing(client, talker, talk_study):
    client.force_login(talker.user)
    with fake_server("truncated") as url:
        ModelEndpoint.objects.filter(study=talk_study, model_id="tiny-b").update(base_url=url)
        events = _events(client.post(f"/s/{talk_study.slug}/talk/stream", {"message": "Hi", "client_key": "f1"}))
        assert events[-1]["type"] == "error"
        assert "could not answer" in events[-1]["message"] and "Nothing was saved" in events[-1]["message"]
        response = client.post(f"/s/{talk_study.slug}/talk", {"message": "Keep me", "client_key": "f2"})
        assert response.status_code == 400
        html = response.content.decode()
        assert "could not answer" in html and "Keep me" in html  # the message is kept for the retry
    assert not Prompt.objects.filter(study=talk_study).exists() and not Candidate.objects.exists()
    assert SECRET not in html


def test_an_empty_message_is_refused(client, talker, talk_study):
    client.force_login(talker.user)
    response = client.post(f"/s/{talk_study.slug}/talk/stream", {"message": "  "})
    assert response.status_code == 400 and "Write a message" in response.content.decode()


def test_a_four_way_first_turn_is_rated(client, talker, talk_study, llm_server):
    conv.study_set_design(study=talk_study, first_turn_answers=4)
    client.force_login(talker.user)
    client.post(f"/s/{talk_study.slug}/talk", {"message": "Rate these", "client_key": "r"})
    html = client.get(f"/s/{talk_study.slug}/talk").content.decode()
    assert html.count('type="range"') == 4 and "Submit ratings" in html
    turn_id, key = _judge_form(html)
    missing = client.post(f"/s/{talk_study.slug}/talk/judge", {"turn": turn_id, "client_key": key, "rating_0": "5"})
    assert missing.status_code == 400 and "Rate every response" in missing.content.decode()
    scores = {f"rating_{i}": str(s) for i, s in enumerate([90, 10, 40, 40])}
    client.post(f"/s/{talk_study.slug}/talk/judge", {"turn": turn_id, "client_key": key, **scores})
    assert Judgment.objects.filter(source="rating").count() == 5


def test_the_asgi_stream_sends_events_as_they_come(transactional_db, llm_server):
    """Under ASGI (daphne) the stream is an async generator in the event loop: events arrive one by one."""
    from django.test import Client

    researcher = ResearcherFactory()
    study = StudyFactory(kind="conversation", created_by=researcher, profile_fields=[])
    for model in ("tiny-a", "tiny-b"):
        conv.endpoint_create(study=study, name=model, base_url=llm_server.base_url, model_id=model,
                             params={"max_tokens": 5})
    annotator = AnnotatorFactory(study=study)
    session = Client()
    session.force_login(annotator.user)
    token = "t" * 32  # a CSRF secret of the right length
    cookie = f"sessionid={session.cookies['sessionid'].value}; csrftoken={token}".encode()
    body = f"message=Hello&client_key=asgi1&csrfmiddlewaretoken={token}".encode()
    from asgiref.testing import ApplicationCommunicator

    from config.asgi import application

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": f"/s/{study.slug}/talk/stream", "raw_path": f"/s/{study.slug}/talk/stream".encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"cookie", cookie), (b"x-csrftoken", token.encode()),
                    (b"content-type", b"application/x-www-form-urlencoded"),
                    (b"content-length", str(len(body)).encode())],
    }

    async def go():
        comm = ApplicationCommunicator(application, scope)
        await comm.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await comm.receive_output(30)
        chunks = []
        while True:
            message = await comm.receive_output(30)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await comm.wait(30)  # the app finishes the request (request_finished closes its DB connection)
        return start, chunks

    with ThreadPoolExecutor(max_workers=1) as pool:
        start, chunks = pool.submit(asyncio.run, go()).result()
    assert start["status"] == 200
    events = [json.loads(c.decode()[5:]) for c in chunks if c.startswith(b"data:")]
    assert len(events) > 4  # one body message per event, not one buffered blob
    assert events[0]["type"] == "start" and events[-1] == {"type": "done"}
    assert ConversationTurn.objects.filter(conversation__annotator=annotator).count() == 1


# --- authz ---------------------------------------------------------------------------------------------------


def test_talk_pages_need_the_study_annotator(client, talk_study, other_annotator, researcher):
    for path in ("talk", "talk/stream", "talk/judge"):
        url = f"/s/{talk_study.slug}/{path}"
        response = client.post(url) if path != "talk" else client.get(url)
        assert response.status_code == 302 and "/join" in response.url  # anonymous
    client.force_login(other_annotator.user)
    assert client.get(f"/s/{talk_study.slug}/talk").status_code == 404
    assert client.post(f"/s/{talk_study.slug}/talk/stream", {"message": "x"}).status_code == 404
    client.force_login(researcher)
    assert "/join" in client.get(f"/s/{talk_study.slug}/talk").url


def test_models_pages_are_for_the_study_researchers_only(client, talk_study, talker, researcher):
    endpoint = ModelEndpoint.objects.filter(study=talk_study).first()
    urls = [f"/studies/{talk_study.pk}/models", f"/studies/{talk_study.pk}/models/{endpoint.pk}/test",
            f"/studies/{talk_study.pk}/design", f"/studies/{talk_study.pk}/attention-checks",
            f"/studies/{talk_study.pk}/models/{endpoint.pk}/active"]
    for url in urls:
        assert client.post(url).status_code == 302  # anonymous -> login
    client.force_login(talker.user)
    for url in urls:
        assert client.post(url).status_code == 403
    client.force_login(ResearcherFactory())
    for url in urls:
        assert client.post(url).status_code == 403
    client.force_login(researcher)
    response = client.get(urls[0])
    assert response.status_code == 200
    html = response.content.decode()
    assert "Secret name tiny-a" in html and SECRET not in html and "Test connection" in html


def test_a_researcher_adds_an_endpoint_and_tests_it(client, researcher, llm_server):
    study = StudyFactory(created_by=researcher)
    client.force_login(researcher)
    response = client.post(f"/studies/{study.pk}/models", {
        "name": "Local tiny", "base_url": llm_server.base_url, "model_id": "tiny-c",
        "params": '{"temperature": 0.5, "max_tokens": 4}', "api_key": SECRET,
    })
    assert response.status_code == 302
    endpoint = ModelEndpoint.objects.get(study=study)
    assert endpoint.api_key == SECRET and endpoint.params == {"temperature": 0.5, "max_tokens": 4}
    html = client.get(f"/studies/{study.pk}/models").content.decode()
    assert SECRET not in html and ">set<" in html
    ok = client.post(f"/studies/{study.pk}/models/{endpoint.pk}/test", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-test-result="ok"' in ok and "answered in" in ok
    ModelEndpoint.objects.filter(pk=endpoint.pk).update(base_url="http://127.0.0.1:9/v1")
    bad = client.post(f"/studies/{study.pk}/models/{endpoint.pk}/test", HTTP_HX_REQUEST="true").content.decode()
    assert 'data-test-result="fail"' in bad and "Could not connect" in bad
    invalid = client.post(f"/studies/{study.pk}/models", {"name": "X", "base_url": llm_server.base_url,
                                                         "model_id": "m", "params": '{"temp": 1}'})
    assert invalid.status_code == 400 and "unknown sampling parameter" in invalid.content.decode()
    design = client.post(f"/studies/{study.pk}/design", {
        "kind": "conversation", "attributes": "factuality, safety", "conversation_turns": 3,
        "conversations_per_annotator": 1, "first_turn_answers": 4, "seed_prompts": "Hi\nHello",
        "repeat_rate": 0.1, "gold_rate": 0.05})
    assert design.status_code == 302
    study.refresh_from_db()
    assert (study.kind, study.attributes, study.first_turn_answers) == ("conversation", ["factuality", "safety"], 4)


# --- both bad on the compare page and the API -----------------------------------------------------------------


def test_the_compare_page_has_a_both_bad_button_and_records_it(client):
    study = make_study_with_pairs(2, profile_fields=[], attributes=["factuality"])
    annotator = AnnotatorFactory(study=study)
    client.force_login(annotator.user)
    html = client.get(f"/s/{study.slug}/compare").content.decode()
    assert 'value="bad"' in html and 'data-key="b"' in html and 'name="dim_factuality"' in html
    pair_id = re.search(r'name="pair" value="(\d+)"', html).group(1)
    key = re.search(r'name="client_key" value="(\w+)"', html).group(1)
    client.post(f"/s/{study.slug}/compare", {"pair": pair_id, "client_key": key, "choice": "bad",
                                             "dim_factuality": "tie"})
    judgment = Judgment.objects.get()
    assert judgment.choice == "bad" and judgment.dimensions == {"factuality": "tie"}


def test_the_api_accepts_both_bad_and_dimensions(study):
    services.study_set_status(study=study, status="active")
    study.attributes = ["safety"]
    study.save()
    annotator = AnnotatorFactory(study=study)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=annotator.user)[0].key}")
    nxt = client.get(f"/api/v1/studies/{study.pk}/next-pair/").json()
    resp = client.post("/api/v1/judgments/", {"pair_id": nxt["pair_id"], "choice": "bad", "client_key": "k",
                                              "dimensions": {"safety": "a"}}, format="json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["choice"] == "bad" and resp.json()["dimensions"] == {"safety": "a"}
    bad = client.post("/api/v1/judgments/", {"pair_id": nxt["pair_id"], "choice": "a", "client_key": "k2",
                                             "dimensions": {"humour": "a"}}, format="json")
    assert bad.status_code == 400


# --- endpoints API ---------------------------------------------------------------------------------------------


def _token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_the_endpoints_api_never_returns_the_key(talk_study, researcher, llm_server):
    client = _token_client(researcher)
    url = f"/api/v1/studies/{talk_study.pk}/endpoints/"
    listed = client.get(url)
    assert listed.status_code == 200 and len(listed.json()) == 2
    assert SECRET not in listed.content.decode() and listed.json()[0]["has_api_key"] is True
    created = client.post(url, {"name": "API model", "base_url": llm_server.base_url, "model_id": "tiny-c",
                                "params": {"max_tokens": 4}, "api_key": "sk-api-secret"}, format="json")
    assert created.status_code == 201 and "sk-api-secret" not in created.content.decode()
    assert ModelEndpoint.objects.get(name="API model").api_key == "sk-api-secret"
    dup = client.post(url, {"name": "API model", "base_url": llm_server.base_url, "model_id": "x"}, format="json")
    assert dup.status_code == 409
    bad = client.post(url, {"name": "B", "base_url": llm_server.base_url, "model_id": "x", "params": {"t": 1}},
                      format="json")
    assert bad.status_code == 400 and "unknown sampling parameter" in bad.json()["detail"]
    check = client.post(f"{url}{created.json()['id']}/test/")
    assert check.status_code == 200 and check.json()["ok"] is True


def test_the_endpoints_api_is_for_the_study_researchers(talk_study, talker, other_annotator):
    url = f"/api/v1/studies/{talk_study.pk}/endpoints/"
    endpoint = ModelEndpoint.objects.filter(study=talk_study).first()
    assert APIClient().get(url).status_code == 401
    for user in (talker.user, other_annotator.user, ResearcherFactory()):
        client = _token_client(user)
        assert client.get(url).status_code == 403
        assert client.post(f"{url}{endpoint.pk}/test/").status_code == 403
    assert _token_client(ResearcherFactory()).get("/api/v1/studies/999999/endpoints/").status_code == 404


def test_the_ratings_export_is_for_researchers(talk_study, researcher, talker):
    url = f"/api/v1/studies/{talk_study.pk}/export/ratings/?format=csv"
    assert _token_client(talker.user).get(url).status_code == 403
    response = _token_client(researcher).get(url)
    assert response.status_code == 200
    header = b"".join(response.streaming_content).decode().splitlines()[0]
    assert header.startswith("prompt,messages,response,rating,position")


def test_a_paused_study_says_so_and_a_closed_one_finishes(client, talker, talk_study):
    client.force_login(talker.user)
    services.study_set_status(study=talk_study, status="paused")
    response = client.get(f"/s/{talk_study.slug}/talk")
    assert response.status_code == 200 and "paused" in response.content.decode().lower()
    services.study_set_status(study=talk_study, status="closed")
    response = client.get(f"/s/{talk_study.slug}/talk", follow=True)
    assert response.redirect_chain[-1][0] == f"/s/{talk_study.slug}/done"
    talker.refresh_from_db()
    assert talker.completed_at is not None


def test_a_conversation_started_before_a_pause_can_be_finished(client, talker, talk_study):
    client.force_login(talker.user)
    client.get(f"/s/{talk_study.slug}/talk")  # opens the conversation
    services.study_set_status(study=talk_study, status="paused")
    assert 'name="message"' in client.get(f"/s/{talk_study.slug}/talk").content.decode()


# --- "ratings" studies ------------------------------------------------------------------------------------------


@pytest.fixture
def ratings_study(researcher):
    from feedback.models import Prompt, text_hash

    study = StudyFactory(kind="ratings", pairs_per_annotator=1, overlap_target=1, created_by=researcher,
                         profile_fields=[])
    prompt = Prompt.objects.create(study=study, text="Which is best?")
    for i in range(3):
        Candidate.objects.create(prompt=prompt, text=f"Option {i}", model_name="Hidden-model", text_hash=text_hash(f"o{i}"))
    return study


def test_a_ratings_study_is_rated_on_its_own_page(client, ratings_study):
    annotator = AnnotatorFactory(study=ratings_study)
    client.force_login(annotator.user)
    assert client.get(f"/s/{ratings_study.slug}/compare").url == f"/s/{ratings_study.slug}/rate"
    html = client.get(f"/s/{ratings_study.slug}/rate").content.decode()
    assert html.count('type="range"') == 3 and "Prompt 1 of 1" in html and "Hidden-model" not in html
    task = re.search(r'name="task" value="(\d+)"', html).group(1)
    key = re.search(r'name="client_key" value="(\w+)"', html).group(1)
    missing = client.post(f"/s/{ratings_study.slug}/rate", {"task": task, "client_key": key, "rating_0": "3"})
    assert missing.status_code == 400 and "Rate every response" in missing.content.decode()
    done = client.post(f"/s/{ratings_study.slug}/rate",
                       {"task": task, "client_key": key, "rating_0": "70", "rating_1": "20", "rating_2": "45"})
    assert done.status_code == 302
    assert client.get(done.url, follow=True).redirect_chain[-1][0] == f"/s/{ratings_study.slug}/done"
    assert Judgment.objects.filter(source="rating").count() == 3


def test_the_rate_page_needs_the_study_annotator(client, ratings_study, other_annotator, talker, talk_study):
    response = client.get(f"/s/{ratings_study.slug}/rate")
    assert response.status_code == 302 and "/join" in response.url
    client.force_login(other_annotator.user)
    assert client.get(f"/s/{ratings_study.slug}/rate").status_code == 404
    client.force_login(talker.user)  # an annotator of a conversation study goes to their own step
    assert client.get(f"/s/{talk_study.slug}/rate").url == f"/s/{talk_study.slug}/talk"


def test_a_conversation_study_without_pairs_is_never_full_and_lets_workers_join(client, talk_study):
    # Capacity is a pool of imported pairs; a conversation study makes its pairs live, so it has none.
    assert not selectors.study_is_full(talk_study)
    page = client.get(f"/s/{talk_study.slug}/join")
    assert page.status_code == 200 and "This study is full" not in page.content.decode()


def test_a_ratings_study_is_full_once_every_prompt_has_its_raters(client, ratings_study):
    assert not selectors.study_is_full(ratings_study)
    first = AnnotatorFactory(study=ratings_study)
    assert conv.rating_task_next(annotator=first) is not None  # the only prompt's only slot (overlap 1)
    assert selectors.study_is_full(ratings_study)
    assert "This study is full" in client.get(f"/s/{ratings_study.slug}/join").content.decode()
