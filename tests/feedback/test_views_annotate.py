"""The annotator flow (join → consent → profile → compare → done) through the Django test client."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback import services
from feedback.models import Annotator, Assignment, Judgment, Study
from feedback.profile_schema import FIELDS, PREFER_NOT, STATED_PREFS, ProfileError
from tests.factories import (
    AnnotatorFactory,
    CandidateFactory,
    PairFactory,
    PromptFactory,
)

pytestmark = pytest.mark.django_db

PAGES = ["consent", "profile", "compare", "done"]


def url(name: str, study: Study) -> str:
    return reverse(f"feedback:{name}", args=[study.slug])


def profile_post(study: Study, **overrides) -> dict:
    """A complete, valid profile submission for every field the study asks."""
    data: dict = {}
    for spec in FIELDS:
        if spec.name not in study.profile_fields:
            continue
        if spec.kind == "choice":
            data[spec.name] = spec.choices[0][0]
        elif spec.kind == "multi":
            data[spec.name] = [spec.choices[0][0], spec.choices[1][0]]
        elif spec.kind == "sliders":
            for i, (code, _) in enumerate(spec.choices):
                data[f"{spec.name}__{code}"] = str(10 + i * 10)
        elif spec.kind == "text":
            data[spec.name] = "I like tea."
    data.update(overrides)
    return data


@pytest.fixture
def ready(annotator):
    """An annotator who consented and completed the profile: ready to compare."""
    annotator.profile_completed_at = timezone.now()
    annotator.save(update_fields=["profile_completed_at"])
    return annotator


@pytest.fixture
def ready_client(client, ready):
    client.force_login(ready.user)
    return client


def current_form(client: Client, study: Study, **headers) -> tuple[int, str, str]:
    """GET the compare page; return (pair id, client_key, html)."""
    response = client.get(url("compare", study), **headers)
    assert response.status_code == 200, response
    html = response.content.decode()
    pair_id = int(re.search(r'name="pair" value="(\d+)"', html).group(1))
    client_key = re.search(r'name="client_key" value="([0-9a-f]{32})"', html).group(1)
    return pair_id, client_key, html


def judge(client: Client, study: Study, pair_id: int, key: str, **fields):
    data = {"pair": pair_id, "client_key": key, "choice": "left", "strength": "70", "time_ms": "1234"}
    data.update(fields)
    return client.post(url("compare", study), data)


class _TagCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def assert_inert(html: str) -> None:
    """No markup from untrusted text survives: the only scripts are ours, no handlers, no js: URLs.

    Checked on the parsed tags: the escaped *text* of a response may still read "onerror=" or
    "javascript:" (that is the response shown as the model wrote it, and it is inert).
    """
    lowered = html.lower()
    assert lowered.count("<script") == lowered.count('<script src="/static/')
    assert not re.search(r"<[^>]*\bon[a-z]+\s*=", lowered)
    assert not re.search(r"<[^>]*javascript:", lowered)
    parser = _TagCollector()
    parser.feed(html)
    for tag, attrs in parser.tags:
        assert tag not in {"iframe", "object", "embed", "img", "svg", "style"}, tag
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            assert "javascript:" not in (value or "").lower().replace(" ", ""), (tag, name, value)
        if tag == "script":
            assert dict(attrs)["src"].startswith("/static/")


# --- the whole flow -----------------------------------------------------------------------------


def test_it_runs_the_whole_flow(client, study):
    study.completion_url = "https://app.prolific.com/submissions/complete?cc={code}"
    study.save()

    response = client.get(url("join", study) + "?pid=P-123&STUDY_ID=s&SESSION_ID=x")
    assert response.status_code == 200
    assert study.name in response.content.decode()
    assert 'name="pid" value="P-123"' in response.content.decode()

    response = client.post(url("join", study), {"pid": "P-123"})
    assert response.status_code == 302 and response.url == url("consent", study)
    annotator = Annotator.objects.get(study=study)
    assert annotator.external_id == "P-123"

    assert client.get(url("consent", study)).status_code == 200
    response = client.post(url("consent", study), {"decision": "agree"})
    assert response.url == url("profile", study)

    assert client.get(url("profile", study)).status_code == 200
    response = client.post(url("profile", study), profile_post(study))
    assert response.status_code == 302 and response.url == url("compare", study)
    annotator.refresh_from_db()
    assert annotator.profile_completed_at is not None
    assert annotator.profile.data["stated_prefs"]["values"] == 10
    assert annotator.profile.data["lm_usecases"] == sorted(["research", "professional"])

    for i in range(study.pairs_per_annotator):
        pair_id, key, html = current_form(client, study)
        assert f"Pair {i + 1} of {study.pairs_per_annotator}" in html
        response = judge(client, study, pair_id, key, choice=["left", "right", "tie"][i % 3])
        assert response.status_code == 302

    assert Judgment.objects.filter(annotator=annotator).count() == study.pairs_per_annotator
    response = client.get(url("compare", study))
    assert response.status_code == 302 and response.url == url("done", study)
    response = client.get(url("done", study))
    html = response.content.decode()
    annotator.refresh_from_db()
    assert annotator.completed_at is not None
    assert annotator.completion_code in html
    assert f"cc={annotator.completion_code}" in html
    assert "Return to the platform" in html


def test_it_maps_screen_sides_to_pair_choices(ready_client, ready, study):
    for order, screen, stored in [("ab", "left", "a"), ("ba", "left", "b"), ("ab", "right", "b"),
                                  ("ba", "right", "a"), ("ba", "tie", "tie")]:
        pair_id, key, _ = current_form(ready_client, study)
        Assignment.objects.filter(annotator=ready, pair_id=pair_id).update(shown_order=order)
        judge(ready_client, study, pair_id, key, choice=screen)
        judgment = Judgment.objects.get(client_key=key)
        assert (judgment.choice, judgment.shown_order, judgment.chosen_side_shown) == (stored, order, screen)
        assert judgment.strength == (None if screen == "tie" else 70)
        assert judgment.time_ms == 1234


def test_it_shows_left_and_right_per_shown_order(ready_client, ready, study):
    pair_id, _, _ = current_form(ready_client, study)
    assignment = Assignment.objects.get(annotator=ready, pair_id=pair_id)
    assignment.pair.candidate_a.__class__.objects.filter(pk=assignment.pair.candidate_a_id).update(text="ALPHA-TEXT")
    assignment.pair.candidate_b.__class__.objects.filter(pk=assignment.pair.candidate_b_id).update(text="BRAVO-TEXT")
    for order, first, second in [("ab", "ALPHA-TEXT", "BRAVO-TEXT"), ("ba", "BRAVO-TEXT", "ALPHA-TEXT")]:
        Assignment.objects.filter(pk=assignment.pk).update(shown_order=order)
        html = ready_client.get(url("compare", study)).content.decode()
        assert html.index("Response 1") < html.index(first) < html.index("Response 2") < html.index(second)


# --- join ---------------------------------------------------------------------------------------


def test_it_has_no_side_effects_on_join_get(client, study):
    assert client.get(url("join", study) + "?pid=abc").status_code == 200
    assert not Annotator.objects.filter(study=study).exists()
    assert "_auth_user_id" not in client.session


def test_it_accepts_prolific_pid_as_an_alias(client, study):
    response = client.get(url("join", study) + "?PROLIFIC_PID=PRO-9&STUDY_ID=1&SESSION_ID=2")
    assert 'name="pid" value="PRO-9"' in response.content.decode()
    client.post(url("join", study) + "?PROLIFIC_PID=PRO-9")
    assert Annotator.objects.get(study=study).external_id == "PRO-9"


def test_it_joins_without_a_pid(client, study):
    response = client.post(url("join", study))
    assert response.url == url("consent", study)
    assert Annotator.objects.get(study=study).external_id == ""


def test_it_refuses_the_same_pid_in_a_new_browser(client, study):
    client.post(url("join", study), {"pid": "W1"})
    client.post(url("consent", study), {"decision": "agree"})
    other_browser = Client()
    page = other_browser.get(url("join", study) + "?pid=W1")
    assert page.status_code == 403 and "cannot continue" in page.content.decode()
    response = other_browser.post(url("join", study), {"pid": "W1"})
    assert response.status_code == 403
    assert "already joined" in response.content.decode()
    assert "_auth_user_id" not in other_browser.session
    assert Annotator.objects.filter(study=study).count() == 1
    # The profile / done pages stay closed to that browser.
    assert other_browser.get(url("profile", study)).url == url("join", study)


def test_it_resumes_the_same_pid_in_the_same_browser_after_the_session_ended(client, study):
    client.post(url("join", study), {"pid": "W2"})
    client.post(url("consent", study), {"decision": "agree"})
    client.session.flush()  # the session expired; the resume cookie is still there
    client.cookies.pop("sessionid", None)
    response = client.post(url("join", study), {"pid": "W2"})
    assert response.status_code == 302 and response.url == url("profile", study)
    assert Annotator.objects.filter(study=study).count() == 1


def test_it_refuses_a_forged_resume_cookie(client, study):
    client.post(url("join", study), {"pid": "W3"})
    thief = Client()
    thief.cookies[f"chorus_resume_{study.pk}"] = "forged-value"
    assert thief.post(url("join", study), {"pid": "W3"}).status_code == 403
    # A forged resume link is refused too.
    assert thief.get(reverse("feedback:resume", args=[study.slug, "not-a-token"])).status_code == 403


def test_it_skips_ahead_when_already_an_annotator_of_the_study(ready_client, study):
    response = ready_client.get(url("join", study))
    assert response.status_code == 302 and response.url == url("compare", study)


def test_it_shows_a_closed_study_as_not_accepting(client, study):
    study.status = Study.Status.CLOSED
    study.save()
    for response in (client.get(url("join", study)), client.post(url("join", study), {"pid": "x"})):
        assert response.status_code == 403
        assert "not accepting" in response.content.decode()
    assert not Annotator.objects.filter(study=study).exists()


def test_it_404s_an_unknown_study(client):
    assert client.get("/s/no-such-study/join").status_code == 404
    assert client.get("/s/no-such-study/compare").status_code == 404


def test_it_warns_a_researcher_and_logs_them_out_only_on_start(client, study, researcher):
    client.force_login(researcher)
    response = client.get(url("join", study))
    html = response.content.decode()
    assert response.status_code == 200
    assert "logs you out" in html and researcher.username in html
    assert int(client.session["_auth_user_id"]) == researcher.pk

    client.post(url("join", study))
    annotator = Annotator.objects.get(study=study)
    assert int(client.session["_auth_user_id"]) == annotator.user_id


def test_it_lets_an_annotator_of_another_study_join_this_one(client, study, other_annotator):
    client.force_login(other_annotator.user)
    assert client.get(url("join", study)).status_code == 200
    client.post(url("join", study))
    assert Annotator.objects.filter(study=study).count() == 1


# --- access control -----------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_it_redirects_anonymous_visitors_to_join(client, study, page):
    response = client.get(url(page, study))
    assert response.status_code == 302 and response.url == url("join", study)


@pytest.mark.parametrize("page", PAGES)
def test_it_redirects_researchers_to_join(client, study, researcher, page):
    client.force_login(researcher)
    response = client.get(url(page, study))
    assert response.status_code == 302 and response.url == url("join", study)


@pytest.mark.parametrize("page", PAGES)
def test_it_404s_annotators_of_another_study(client, study, other_annotator, page):
    client.force_login(other_annotator.user)
    assert client.get(url(page, study)).status_code == 404
    assert client.post(url(page, study), {"decision": "agree"}).status_code in (404, 405)


def test_it_404s_a_judgment_post_from_another_study(client, study, other_annotator):
    client.force_login(other_annotator.user)
    pair = study.pairs.first()
    response = client.post(url("compare", study), {"pair": pair.id, "client_key": "k", "choice": "left"})
    assert response.status_code == 404
    assert not Judgment.objects.exists()


@pytest.mark.parametrize(
    ("state", "page", "expected"),
    [
        ({"consented_at": None}, "compare", "consent"),
        ({"consented_at": None}, "profile", "consent"),
        ({"consented_at": None}, "done", "consent"),
        ({}, "compare", "profile"),
        ({}, "consent", "profile"),
        ({"profile_completed_at": timezone.now()}, "profile", "compare"),
        ({"profile_completed_at": timezone.now()}, "done", "compare"),
        ({"profile_completed_at": timezone.now(), "completed_at": timezone.now()}, "compare", "done"),
        ({"profile_completed_at": timezone.now(), "completed_at": timezone.now()}, "consent", "done"),
    ],
)
def test_it_enforces_step_order(client, annotator, study, state, page, expected):
    Annotator.objects.filter(pk=annotator.pk).update(**state)
    client.force_login(annotator.user)
    response = client.get(url(page, study))
    assert response.status_code == 302 and response.url == url(expected, study)


def test_it_skips_the_profile_when_the_study_asks_nothing(client, study):
    study.profile_fields = []
    study.save()
    client.post(url("join", study))
    response = client.post(url("consent", study), {"decision": "agree"})
    assert response.url == url("compare", study)


# --- consent & profile --------------------------------------------------------------------------


def test_it_shows_a_default_consent_text_and_the_study_text(client, study):
    client.post(url("join", study))
    assert "research study" in client.get(url("consent", study)).content.decode()
    study.consent_text = "Custom **consent** words."
    study.save()
    assert "Custom <strong>consent</strong> words." in client.get(url("consent", study)).content.decode()


def test_it_shows_a_polite_exit_when_consent_is_declined(client, study):
    client.post(url("join", study))
    response = client.post(url("consent", study), {"decision": "decline"})
    assert response.status_code == 200
    assert "Thank you for considering" in response.content.decode()
    annotator = Annotator.objects.get(study=study)
    assert annotator.consented_at is None
    assert client.get(url("compare", study)).url == url("consent", study)


def test_it_renders_every_profile_question_with_prefer_not_to_say(client, annotator, study):
    client.force_login(annotator.user)
    html = client.get(url("profile", study)).content.decode()
    for spec in FIELDS:
        assert spec.label.replace("'", "&#x27;") in html
    # choice radios/select options + multi + text + one per slider
    n_choice = sum(1 for f in FIELDS if f.kind == "choice")
    assert html.count(f'value="{PREFER_NOT}"') == n_choice
    assert html.count("__prefer_not") >= 2 + len(STATED_PREFS)
    assert html.count('type="range"') == len(STATED_PREFS)
    assert '<select name="reside_country"' in html


def test_it_stores_prefer_not_to_say_answers(client, annotator, study):
    client.force_login(annotator.user)
    data = profile_post(
        study,
        age=PREFER_NOT,
        reside_country=PREFER_NOT,
        lm_usecases__prefer_not="on",
        stated_prefs__safety__prefer_not="on",
        self_description__prefer_not="on",
    )
    response = client.post(url("profile", study), data)
    assert response.status_code == 302
    stored = Annotator.objects.get(pk=annotator.pk).profile.data
    assert stored["age"] == stored["reside_country"] == stored["lm_usecases"] == PREFER_NOT
    assert stored["self_description"] == PREFER_NOT
    assert stored["stated_prefs"]["safety"] == PREFER_NOT
    assert stored["stated_prefs"]["values"] == 10


def test_it_rejects_an_incomplete_or_invalid_profile(client, annotator, study):
    client.force_login(annotator.user)
    data = profile_post(study, age="", stated_prefs__values="500")
    del data["lm_usecases"]
    response = client.post(url("profile", study), data)
    assert response.status_code == 400
    html = response.content.decode()
    assert "Please choose an answer" in html
    assert "Choose at least one answer" in html
    assert html.count('class="field-error"') >= 3
    annotator.refresh_from_db()
    assert annotator.profile_completed_at is None


def test_it_shows_profile_errors_from_the_service(client, annotator, study, monkeypatch):
    def refuse(**kwargs):
        raise ProfileError({"age": "must be one of the listed ages"})

    monkeypatch.setattr(services, "profile_update", refuse)
    client.force_login(annotator.user)
    response = client.post(url("profile", study), profile_post(study))
    assert response.status_code == 400
    assert "must be one of the listed ages" in response.content.decode()


# --- compare: submissions -----------------------------------------------------------------------


def test_it_stores_one_judgment_for_a_resubmitted_client_key(ready_client, ready, study):
    pair_id, key, _ = current_form(ready_client, study)
    first = judge(ready_client, study, pair_id, key)
    second = judge(ready_client, study, pair_id, key, choice="right")
    assert first.status_code == second.status_code == 302
    assert Judgment.objects.filter(annotator=ready).count() == 1
    assert Judgment.objects.get(annotator=ready).chosen_side_shown == "left"


@pytest.mark.parametrize(
    "fields",
    [
        {"choice": "a"},
        {"choice": ""},
        {"choice": "LEFT"},
        {"strength": "0"},
        {"strength": "101"},
        {"strength": "strong"},
        {"pair": "nope"},
        {"client_key": ""},
        {"client_key": "x" * 65},
    ],
)
def test_it_rejects_bad_input_with_400_and_stores_nothing(ready_client, ready, study, fields):
    pair_id, key, _ = current_form(ready_client, study)
    response = judge(ready_client, study, pair_id, key, **fields)
    assert response.status_code == 400
    assert not Judgment.objects.exists()
    assert 'role="alert"' in response.content.decode()


def test_it_rejects_a_pair_that_is_not_assigned(ready_client, ready, study):
    pair_id, key, _ = current_form(ready_client, study)
    other_pair = study.pairs.exclude(id=pair_id).first()
    response = judge(ready_client, study, other_pair.id, key)
    assert response.status_code == 400
    response = judge(ready_client, study, 999_999, key)
    assert response.status_code == 404
    assert not Judgment.objects.exists()


def test_it_measures_time_server_side_without_javascript(ready_client, ready, study):
    pair_id, key, _ = current_form(ready_client, study)
    Assignment.objects.filter(annotator=ready, pair_id=pair_id).update(
        assigned_at=timezone.now() - timezone.timedelta(seconds=12)
    )
    judge(ready_client, study, pair_id, key, time_ms="")
    assert 11_000 <= Judgment.objects.get().time_ms <= 60_000


def test_it_stores_the_rationale(ready_client, study):
    pair_id, key, _ = current_form(ready_client, study)
    judge(ready_client, study, pair_id, key, rationale="  More concise.  ")
    assert Judgment.objects.get().rationale == "More concise."


def test_it_finishes_when_no_pairs_are_left(client, study):
    study.pairs_per_annotator = 50
    study.save()
    ann = AnnotatorFactory(study=study, profile_completed_at=timezone.now())
    client.force_login(ann.user)
    for _ in range(study.pairs.count()):
        pair_id, key, _ = current_form(client, study)
        judge(client, study, pair_id, key)
    response = client.get(url("compare", study))
    assert response.url == url("done", study)
    ann.refresh_from_db()
    assert ann.completed_at is not None


def test_it_shows_a_paused_page_instead_of_finishing(ready_client, ready, study):
    study.status = Study.Status.PAUSED
    study.save()
    response = ready_client.get(url("compare", study))
    assert response.status_code == 200
    assert "paused" in response.content.decode()
    ready.refresh_from_db()
    assert ready.completed_at is None


# --- compare: rendering -------------------------------------------------------------------------


def test_it_renders_untrusted_text_inert(ready_client, ready, study):
    prompt = PromptFactory(
        study=study,
        text="<script>alert(1)</script> question",
        context=[{"role": "user", "content": "<img src=x onerror=alert(1)>"},
                 {"role": "assistant", "content": "[x](javascript:alert(1))"}],
    )
    evil = [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        "<script>alert(1)</script>" + "<img src=x onerror=alert(1)> " * 40_000,
    ]
    assert len(evil[-1]) > 1_000_000
    candidates = [CandidateFactory(prompt=prompt, text=t) for t in evil]
    pairs = [PairFactory(prompt=prompt, candidate_a=candidates[0], candidate_b=candidates[1]),
             PairFactory(prompt=prompt, candidate_a=candidates[2], candidate_b=candidates[3])]
    for pair in pairs:
        Assignment.objects.filter(annotator=ready).delete()
        Assignment.objects.create(annotator=ready, pair=pair, shown_order="ab")
        response = ready_client.get(url("compare", study))
        html = response.content.decode()
        assert_inert(html)
        assert "&lt;script&gt;" in html  # shown as text, escaped


def test_it_shows_empty_responses_explicitly(ready_client, ready, study):
    prompt = PromptFactory(study=study)
    pair = PairFactory(prompt=prompt, candidate_a=CandidateFactory(prompt=prompt, text="  "),
                       candidate_b=CandidateFactory(prompt=prompt, text="Fine."))
    Assignment.objects.create(annotator=ready, pair=pair, shown_order="ab")
    assert "(empty response)" in ready_client.get(url("compare", study)).content.decode()


def test_it_renders_the_conversation_as_bubbles(ready_client, ready, study):
    prompt = PromptFactory(study=study, text="And now?", context=[
        {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi, *how* can I help?"},
    ])
    Assignment.objects.create(annotator=ready, pair=PairFactory(prompt=prompt), shown_order="ab")
    html = ready_client.get(url("compare", study)).content.decode()
    assert html.index("Hello there") < html.index("<em>how</em>") < html.index("And now?")
    assert html.count('class="bubble ') == 3


def test_it_returns_only_the_partial_to_htmx(ready_client, ready, study):
    headers = {"HTTP_HX_REQUEST": "true"}
    response = ready_client.get(url("compare", study), **headers)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="comparison"')
    assert "<html" not in html and "topbar" not in html

    pair_id = int(re.search(r'name="pair" value="(\d+)"', html).group(1))
    key = re.search(r'name="client_key" value="(\w+)"', html).group(1)
    response = ready_client.post(
        url("compare", study), {"pair": pair_id, "client_key": key, "choice": "right", "strength": "60"}, **headers
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="comparison"') and "<html" not in html
    assert f'name="pair" value="{pair_id}"' not in html
    assert "Pair 2 of 5" in html
    assert Judgment.objects.filter(annotator=ready).count() == 1

    bad = ready_client.post(url("compare", study), {"pair": pair_id, "client_key": "k2", "choice": "x"}, **headers)
    assert bad.status_code == 400 and bad.content.decode().lstrip().startswith('<section id="comparison"')


def test_it_tells_htmx_to_redirect_when_done(ready_client, ready, study):
    headers = {"HTTP_HX_REQUEST": "true"}
    for _ in range(study.pairs_per_annotator):
        pair_id, key, _ = current_form(ready_client, study, **headers)
        response = ready_client.post(
            url("compare", study), {"pair": pair_id, "client_key": key, "choice": "tie"}, **headers
        )
    assert response.status_code == 200
    assert response["HX-Redirect"] == url("done", study)
    assert "Response 1" not in response.content.decode()


def test_it_enforces_csrf(study, ready):
    csrf_client = Client(enforce_csrf_checks=True)
    assert csrf_client.post(url("join", study)).status_code == 403
    assert not Annotator.objects.filter(study=study).exclude(pk=ready.pk).exists()

    csrf_client.force_login(ready.user)
    pair_id, key, html = current_form(csrf_client, study)
    response = csrf_client.post(url("compare", study), {"pair": pair_id, "client_key": key, "choice": "left"})
    assert response.status_code == 403
    assert not Judgment.objects.exists()

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    response = csrf_client.post(
        url("compare", study), {"pair": pair_id, "client_key": key, "choice": "left", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert Judgment.objects.count() == 1
    # htmx sends the token as a header (hx-headers on <body>).
    pair_id, key, html = current_form(csrf_client, study, HTTP_HX_REQUEST="true")
    body_token = re.search(r'"X-CSRFToken": "([^"]+)"', csrf_client.get(url("compare", study)).content.decode())
    response = csrf_client.post(
        url("compare", study),
        {"pair": pair_id, "client_key": key, "choice": "left"},
        HTTP_HX_REQUEST="true",
        HTTP_X_CSRFTOKEN=body_token.group(1),
    )
    assert response.status_code == 200
    assert Judgment.objects.count() == 2


def test_it_keeps_compare_queries_bounded(ready_client, ready, study, django_assert_max_num_queries):
    prompt = PromptFactory(study=study, context=[{"role": "user", "content": f"turn {i}"} for i in range(10)])
    Assignment.objects.create(annotator=ready, pair=PairFactory(prompt=prompt), shown_order="ab")
    # session, user, annotator+study, open assignment with pair/prompt/candidates, progress count.
    with django_assert_max_num_queries(6):
        pair_id, key, _ = current_form(ready_client, study)
    # Storing one judgment and claiming the next pair: ~25 including savepoints, none per turn or pair.
    with django_assert_max_num_queries(26):
        response = ready_client.post(
            url("compare", study),
            {"pair": pair_id, "client_key": key, "choice": "left"},
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200
    with django_assert_max_num_queries(6):
        current_form(ready_client, study)


def test_it_shows_the_completion_code_without_a_return_link(client, study):
    ann = AnnotatorFactory(study=study, profile_completed_at=timezone.now(), completed_at=timezone.now())
    client.force_login(ann.user)
    html = client.get(url("done", study)).content.decode()
    assert ann.completion_code in html and "Copy code" in html
    assert "Return to the platform" not in html


def test_it_lets_a_finished_annotator_reopen_the_join_link(client, study):
    ann = AnnotatorFactory(study=study, profile_completed_at=timezone.now(), completed_at=timezone.now())
    study.status = Study.Status.CLOSED
    study.save()
    client.force_login(ann.user)
    assert client.get(url("join", study)).url == url("done", study)


def test_it_does_not_resume_a_different_pid_on_a_shared_browser(client, study):
    client.post(url("join", study), {"pid": "first"})
    response = client.get(url("join", study) + "?pid=second")
    assert response.status_code == 200
    client.post(url("join", study), {"pid": "second"})
    assert set(Annotator.objects.filter(study=study).values_list("external_id", flat=True)) == {"first", "second"}


# --- a full study (issue 15) ------------------------------------------------------------------------


def _fill(study: Study) -> None:
    """Every pair at its overlap target (as if other annotators had taken every slot)."""
    study.pairs.update(n_assigned=study.overlap_target)


def test_it_turns_a_new_worker_away_from_a_full_study_before_consent(client, study):
    _fill(study)
    response = client.get(url("join", study) + "?PROLIFIC_PID=NEW-1")
    html = response.content.decode()
    assert response.status_code == 403
    assert "This study is full" in html and "No completion code" in html
    assert "Start" not in html and "Return to the platform" not in html
    response = client.post(url("join", study), {"pid": "NEW-1"})
    assert response.status_code == 403
    assert not Annotator.objects.filter(study=study).exists()


def test_it_sends_a_worker_of_a_full_study_back_with_the_screenout_code(client, study):
    study.completion_url = "https://app.prolific.com/submissions/complete?cc={code}"
    study.screenout_code = "SCREENED"
    study.save()
    _fill(study)
    html = client.get(url("join", study)).content.decode()
    assert 'href="https://app.prolific.com/submissions/complete?cc=SCREENED"' in html
    assert "No completion code" in html


def test_it_lets_a_returning_crowd_id_resume_a_full_study(client, study):
    client.post(url("join", study), {"pid": "BACK-1"})  # this browser keeps the resume secret
    ann = Annotator.objects.get(study=study, external_id="BACK-1")
    _fill(study)
    client.session.flush()  # the session ended; the resume cookie is the proof
    client.cookies.pop("sessionid", None)
    response = client.get(url("join", study) + "?pid=BACK-1")
    assert response.status_code == 200 and "This study is full" not in response.content.decode()
    client.post(url("join", study), {"pid": "BACK-1"})
    assert Annotator.objects.filter(study=study).count() == 1
    assert int(client.session["_auth_user_id"]) == ann.user_id
    # Without the proof, knowing the crowd id gets neither the study nor the "full" page's screen-out.
    assert Client().get(url("join", study) + "?pid=BACK-1").status_code == 403


def test_it_counts_a_slot_abandoned_past_its_ttl_as_free(client, study, settings):
    settings.CHORUS_ASSIGNMENT_TTL_SECONDS = 60
    other = AnnotatorFactory(study=study)
    pair = study.pairs.first()
    stale = Assignment.objects.create(annotator=other, pair=pair, shown_order="ab")
    Assignment.objects.filter(pk=stale.pk).update(assigned_at=timezone.now() - timezone.timedelta(minutes=5))
    _fill(study)
    assert client.get(url("join", study)).status_code == 200


def test_it_shows_full_not_a_code_when_the_study_filled_before_the_first_pair(client, study):
    ann = AnnotatorFactory(study=study, profile_completed_at=timezone.now())
    client.force_login(ann.user)
    _fill(study)
    response = client.get(url("compare", study))
    assert response.status_code == 403
    html = response.content.decode()
    assert "This study is full" in html and ann.completion_code not in html
    ann.refresh_from_db()
    assert ann.completed_at is None
    htmx = client.get(url("compare", study), HTTP_HX_REQUEST="true")
    assert htmx["HX-Redirect"] == url("compare", study)


def test_it_redirects_htmx_to_the_paused_page_when_paused_mid_task(ready_client, ready, study):
    headers = {"HTTP_HX_REQUEST": "true"}
    pair_id, key, _ = current_form(ready_client, study, **headers)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.PAUSED)
    response = ready_client.post(url("compare", study), {"pair": pair_id, "client_key": key, "choice": "left"}, **headers)
    # The judgment of the pair on screen is kept; the page, not the compare area, shows the pause.
    assert Judgment.objects.filter(annotator=ready).count() == 1
    assert response["HX-Redirect"] == url("compare", study)
    assert "topbar" not in response.content.decode()
    page = ready_client.get(url("compare", study))
    assert page.status_code == 200 and "The study is paused" in page.content.decode()


def test_it_records_a_slider_never_moved_as_no_strength(ready_client, ready, study):
    pair_id, key, _ = current_form(ready_client, study)
    judge(ready_client, study, pair_id, key, strength="50", strength_moved="0")
    pair_id, key, _ = current_form(ready_client, study)
    judge(ready_client, study, pair_id, key, strength="50", strength_moved="1")
    pair_id, key, _ = current_form(ready_client, study)
    judge(ready_client, study, pair_id, key, strength="50")  # no JavaScript: what the form sent
    assert list(Judgment.objects.order_by("id").values_list("strength", flat=True)) == [None, 50, 50]


def test_it_keeps_line_breaks_of_a_response_over_100k_characters(ready_client, ready, study):
    from feedback.rendering import MAX_MARKDOWN_CHARS

    long_text = ("line one <b>bold?</b>\n    indented line two\n\n" * (MAX_MARKDOWN_CHARS // 40 + 10))
    _pair_id, _key, _ = current_form(ready_client, study)
    assignment = Assignment.objects.get(annotator=ready, completed_at__isnull=True)
    cand = assignment.pair.candidate_a
    cand.text = long_text
    cand.save()
    html = ready_client.get(url("compare", study)).content.decode()
    assert '<div class="md-plain">line one &lt;b&gt;bold?&lt;/b&gt;\n    indented line two\n\n' in html
    assert "<b>bold?</b>" not in html
