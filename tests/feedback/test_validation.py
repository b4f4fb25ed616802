"""Input nothing can store (NUL, lone surrogates) or parse safely (NaN, huge numbers, deep nesting): a clear
4xx on every path — API bodies, profile free text, HTML forms — and nothing stored (feedback.validation)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback import services
from feedback.models import Annotator, Judgment, Profile
from feedback.validation import BadInput, strict_loads

API = "/api/v1"

BAD_BODIES = {
    "nul": '{"external_id": "W\\u0000X"}',
    "surrogate": '{"external_id": "\\udc80"}',
    "nan": '{"external_id": "W", "resume_token": NaN}',
    "huge number": '{"external_id": "W", "extra": ' + "7" * 5000 + "}",
    "nested": '{"external_id": "W", "extra": ' + "[" * 50 + "]" * 50 + "}",
    "very nested": '{"external_id": "W", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
}


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": -Infinity}', '{"a": "\\u0000"}', '{"\\ud800": 1}',
                                  "1" * 41, "[" * 40 + "]" * 40])
def test_it_refuses_what_json_loads_would_accept(text):
    with pytest.raises(BadInput):
        strict_loads(text)
    assert strict_loads('{"a": [1, 2.5, "ok", {"b": null}]}') == {"a": [1, 2.5, "ok", {"b": None}]}


@pytest.mark.django_db
@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_it_answers_400_to_unstorable_api_bodies(study, name):
    resp = APIClient().post(f"{API}/studies/{study.pk}/join/", BAD_BODIES[name], content_type="application/json")
    assert resp.status_code == 400, resp.content[:300]
    body = resp.json()
    assert body["detail"].startswith("JSON parse error") and "body" in body["errors"]
    assert not Annotator.objects.filter(study=study).exists()


@pytest.mark.django_db
def test_it_refuses_a_nul_in_profile_free_text_over_the_api(study, annotator):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=annotator.user)[0].key}")
    resp = client.put(f"{API}/me/profile/", '{"data": {"self_description": "hi\\u0000there"}}',
                      content_type="application/json")
    assert resp.status_code == 400 and "body" in resp.json()["errors"]
    assert Profile.objects.get(annotator=annotator).data == {}
    # Even a caller that gets past the parser (a service call) cannot store it.
    from feedback.profile_schema import ProfileError

    with pytest.raises(ProfileError):
        services.profile_update(annotator=annotator, data={"self_description": "hi\x00there"})


@pytest.mark.django_db
def test_it_answers_400_to_a_nul_in_html_form_fields(study):
    browser = Client()
    join = reverse("feedback:join", args=[study.slug])
    response = browser.post(join, {"pid": "P\x00Q"})
    assert response.status_code == 400 and "NUL" in response.content.decode()
    assert browser.get(join + "?pid=P%00Q").status_code == 400
    assert not Annotator.objects.filter(study=study).exists()


@pytest.mark.django_db
def test_it_answers_400_to_a_nul_in_a_judgment_form(study):
    browser = Client()
    browser.post(reverse("feedback:join", args=[study.slug]))
    annotator = Annotator.objects.get(study=study)
    services.annotator_consent(annotator=annotator)
    services.profile_update(annotator=annotator, data={})
    assignment = services.assignment_next(annotator=annotator)
    response = browser.post(reverse("feedback:compare", args=[study.slug]), {
        "pair": assignment.pair_id, "choice": "left", "client_key": "k\x00", "rationale": "why\x00",
    })
    assert response.status_code == 400
    assert not Judgment.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_over_long_rationale_from_a_form_as_the_api_does(study):
    browser = Client()
    browser.post(reverse("feedback:join", args=[study.slug]))
    annotator = Annotator.objects.get(study=study)
    services.annotator_consent(annotator=annotator)
    services.profile_update(annotator=annotator, data={})
    assignment = services.assignment_next(annotator=annotator)
    compare = reverse("feedback:compare", args=[study.slug])
    response = browser.post(compare, {"pair": assignment.pair_id, "choice": "left", "client_key": "k1",
                                      "rationale": "r" * 5001})
    assert response.status_code == 400 and "at most 5000 characters" in response.content.decode()
    assert not Judgment.objects.exists()  # refused, not silently cut
    # A textarea's 5000 characters with newlines arrive as CRLF: they still fit.
    text = ("line\r\n" * 1000)[:-2]
    response = browser.post(compare, {"pair": assignment.pair_id, "choice": "left", "client_key": "k2",
                                      "rationale": text})
    assert response.status_code == 302
    assert Judgment.objects.get().rationale == text.replace("\r\n", "\n")


@pytest.mark.django_db
def test_it_refuses_an_over_long_participant_id_in_the_browser_and_the_api_alike(study):
    long_pid = "P" * 201
    response = Client().post(reverse("feedback:join", args=[study.slug]), {"pid": long_pid})
    assert response.status_code == 400 and "at most 200 characters" in response.content.decode()
    api = APIClient().post(f"{API}/studies/{study.pk}/join/", {"external_id": long_pid}, format="json")
    assert api.status_code == 400 and "external_id" in api.json()["errors"]
    assert not Annotator.objects.filter(study=study).exists()  # never cut to 200 and stored
