from __future__ import annotations

import gzip
import json

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from feedback import services
from feedback.models import Pair, Prompt, Study
from feedback.profile_schema import ALL_FIELD_NAMES
from tests.factories import AnnotatorFactory, AssignmentFactory, ResearcherFactory, UserFactory

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "annotator", "other_researcher", "researcher", "superuser"]


@pytest.fixture
def login_as(client, study, annotator):
    def _login(role: str):
        if role == "anonymous":
            return None
        user = {
            "annotator": lambda: annotator.user,
            "other_researcher": lambda: ResearcherFactory(),
            "researcher": lambda: study.created_by,
            "superuser": lambda: UserFactory(is_superuser=True, is_staff=True),
        }[role]()
        client.force_login(user)
        return user

    return _login


def _jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


GOOD_ROWS = [
    {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
    {"prompt": "Name a prime number.", "chosen": "7", "rejected": "8"},
]


def _assert_login_redirect(response, url: str) -> None:
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


# --- access matrix ---------------------------------------------------------------------------------

STUDY_PAGE_EXPECTED = {"annotator": 403, "other_researcher": 403, "researcher": 200, "superuser": 200}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", ["study_detail", "study_import"])
def test_it_guards_study_pages(client, study, login_as, role, name):
    url = reverse(f"feedback:{name}", args=[study.pk])
    login_as(role)
    response = client.get(url)
    if role == "anonymous":
        _assert_login_redirect(response, url)
    else:
        assert response.status_code == STUDY_PAGE_EXPECTED[role]


@pytest.mark.parametrize("role", ROLES)
def test_it_guards_the_status_change(client, study, login_as, role):
    url = reverse("feedback:study_status", args=[study.pk])
    login_as(role)
    response = client.post(url, {"status": "paused"})
    study.refresh_from_db()
    if role == "anonymous":
        _assert_login_redirect(response, url)
    elif STUDY_PAGE_EXPECTED[role] == 403:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"] == reverse("feedback:study_detail", args=[study.pk])
    assert study.status == ("paused" if role in ("researcher", "superuser") else "active")


@pytest.mark.parametrize("role", ROLES)
def test_it_guards_the_import_post(client, study, login_as, role):
    url = reverse("feedback:study_import", args=[study.pk])
    login_as(role)
    before = Pair.objects.filter(study=study).count()
    response = client.post(url, {"file": SimpleUploadedFile("pairs.jsonl", _jsonl(GOOD_ROWS))})
    imported = Pair.objects.filter(study=study).count() - before
    if role == "anonymous":
        _assert_login_redirect(response, url)
    elif STUDY_PAGE_EXPECTED[role] == 403:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
    assert imported == (2 if role in ("researcher", "superuser") else 0)


def test_the_upload_page_asks_before_importing_rows_again(client, study, login_as):
    url = reverse("feedback:study_import", args=[study.pk])
    login_as("researcher")
    client.post(url, {"file": SimpleUploadedFile("pairs.jsonl", _jsonl(GOOD_ROWS))})
    before = Pair.objects.filter(study=study).count()
    response = client.post(url, {"file": SimpleUploadedFile("pairs.jsonl", _jsonl(GOOD_ROWS))})
    assert response.status_code == 409
    html = response.content.decode()
    assert 'id="import-duplicates"' in html and "nothing was imported" in html
    assert 'name="allow_duplicates"' in html  # the confirmation the researcher ticks
    assert Pair.objects.filter(study=study).count() == before
    response = client.post(url, {"file": SimpleUploadedFile("pairs.jsonl", _jsonl(GOOD_ROWS)),
                                 "allow_duplicates": "on"})
    assert response.status_code == 302
    assert Pair.objects.filter(study=study).count() == before + 2


@pytest.mark.parametrize(
    "role,expected", [("annotator", 403), ("other_researcher", 200), ("researcher", 200), ("superuser", 200)]
)
def test_it_guards_the_study_list(client, study, login_as, role, expected):
    login_as(role)
    response = client.get(reverse("feedback:study_list"))
    assert response.status_code == expected
    if expected == 200:
        # Only one's own studies are listed (a superuser sees every study).
        assert (study.name in response.content.decode()) == (role != "other_researcher")


def test_it_redirects_anonymous_from_the_list_and_create_pages(client, db):
    for name in ("study_list", "study_create"):
        url = reverse(f"feedback:{name}")
        _assert_login_redirect(client.get(url), url)


@pytest.mark.parametrize(
    "role,expected", [("annotator", 403), ("other_researcher", 200), ("researcher", 200), ("superuser", 200)]
)
def test_it_lets_only_researchers_open_the_create_page(client, login_as, role, expected):
    login_as(role)
    assert client.get(reverse("feedback:study_create")).status_code == expected


def test_it_forbids_creating_studies_to_users_outside_the_researchers_group(client, study):
    # A study's co-researcher who is not in the "researchers" group may run it but not create studies.
    helper = UserFactory()
    study.researchers.add(helper)
    client.force_login(helper)
    assert client.get(reverse("feedback:study_detail", args=[study.pk])).status_code == 200
    assert client.get(reverse("feedback:study_create")).status_code == 403
    response = client.get(reverse("feedback:study_list"))
    assert response.status_code == 200
    assert "New study" not in response.content.decode()


def test_it_returns_404_for_a_missing_study(client, researcher):
    client.force_login(researcher)
    assert client.get(reverse("feedback:study_detail", args=[999_999])).status_code == 404
    assert client.get(reverse("feedback:study_import", args=[999_999])).status_code == 404


# --- list and detail -------------------------------------------------------------------------------


def test_it_lists_studies_with_status_counts_and_progress(client, study, researcher):
    client.force_login(researcher)
    response = client.get(reverse("feedback:study_list"))
    html = response.content.decode()
    assert reverse("feedback:study_detail", args=[study.pk]) in html
    assert "Active" in html
    assert "<progress" in html
    assert reverse("feedback:study_create") in html


def test_it_shows_the_study_page(client, study, researcher, annotator, settings):
    settings.PUBLIC_URL = "https://chorus.example.org"
    assignment = AssignmentFactory(annotator=annotator, pair=study.pairs.first())
    Prompt.objects.filter(pk=assignment.pair.prompt_id).update(text="<script>alert('x')</script> Which?")
    services.judgment_create(
        annotator=annotator, pair=assignment.pair, choice="a", client_key="k1", strength=70
    )
    client.force_login(researcher)
    response = client.get(reverse("feedback:study_detail", args=[study.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert f"https://chorus.example.org/s/{study.slug}/join" in html
    assert f"https://chorus.example.org/s/{study.slug}/join?pid={{{{%PROLIFIC_PID%}}}}" in html
    assert annotator.pseudonym in html
    # Untrusted prompt text is escaped.
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert" in html
    assert 'hx-trigger="every 5s"' in html
    assert reverse("feedback:study_import", args=[study.pk]) in html
    for status in ("active", "paused", "closed"):
        assert f'value="{status}"' in html


def test_it_shows_the_most_recent_20_judgments_only(client, researcher, study):
    study.overlap_target = 30
    study.pairs_per_annotator = 30
    study.save()
    pair = study.pairs.first()
    pseudonyms = []
    for i in range(22):
        ann = AnnotatorFactory(study=study)
        AssignmentFactory(annotator=ann, pair=pair)
        services.judgment_create(annotator=ann, pair=pair, choice="b", client_key=f"k{i}")
        pseudonyms.append(ann.pseudonym)
    client.force_login(researcher)
    response = client.get(reverse("feedback:study_detail", args=[study.pk]))
    html = response.content.decode()
    assert all(p in html for p in pseudonyms[2:])
    assert not any(p in html for p in pseudonyms[:2])


def test_it_renders_only_the_counts_partial_for_htmx(client, study, researcher):
    client.force_login(researcher)
    response = client.get(reverse("feedback:study_detail", args=[study.pk]), headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="study-counts"')
    assert "<html" not in html
    assert "Join link" not in html
    assert "<dd>6</dd>" in html  # the study fixture has 6 pairs


def test_it_changes_the_status(client, study, researcher):
    client.force_login(researcher)
    url = reverse("feedback:study_status", args=[study.pk])
    client.post(url, {"status": "closed"})
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED
    response = client.post(url, {"status": "bogus"}, follow=True)
    study.refresh_from_db()
    assert study.status == Study.Status.CLOSED
    assert "Unknown status" in response.content.decode()
    assert client.get(url).status_code == 405


# --- create ---------------------------------------------------------------------------------------


def test_it_offers_every_profile_field_checked_by_default(client, researcher):
    client.force_login(researcher)
    html = client.get(reverse("feedback:study_create")).content.decode()
    for name in ALL_FIELD_NAMES:
        assert f'value="{name}"' in html
    assert html.count('name="profile_fields"') == len(ALL_FIELD_NAMES)
    assert html.count("checked") >= len(ALL_FIELD_NAMES)


def test_it_creates_a_study(client, researcher):
    client.force_login(researcher)
    response = client.post(
        reverse("feedback:study_create"),
        {
            "name": "Tone study",
            "instructions": "Pick one.",
            "consent_text": "I agree.",
            "profile_fields": ["age", "gender"],
            "overlap_target": "4",
            "pairs_per_annotator": "12",
            "completion_url": "https://app.prolific.com/submissions/complete?cc={code}",
        },
    )
    study = Study.objects.get(name="Tone study")
    assert response.status_code == 302
    assert response["Location"] == reverse("feedback:study_detail", args=[study.pk])
    assert study.profile_fields == ["age", "gender"]
    assert (study.overlap_target, study.pairs_per_annotator) == (4, 12)
    assert study.created_by == researcher
    assert study.has_researcher(researcher)
    assert study.slug == "tone-study"


def test_it_rerenders_the_create_form_with_errors(client, researcher, study):
    client.force_login(researcher)
    response = client.post(
        reverse("feedback:study_create"),
        {
            "name": study.name,
            "overlap_target": "0",
            "pairs_per_annotator": "5",
            "completion_url": "not a url",
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "already exists" in html
    assert "greater than or equal to 1" in html
    assert Study.objects.count() == 1


# --- import ----------------------------------------------------------------------------------------


def test_it_describes_the_formats_on_the_import_page(client, study, researcher):
    client.force_login(researcher)
    html = client.get(reverse("feedback:study_import", args=[study.pk])).content.decode()
    assert 'enctype="multipart/form-data"' in html
    for key in ("trl", "responses", "hh"):
        assert f'id="format-{key}"' in html
    assert "&quot;chosen&quot;" in html and "&quot;responses&quot;" in html and "Human:" in html


def test_it_imports_a_good_file_via_the_page(client, study, researcher):
    client.force_login(researcher)
    before = Pair.objects.filter(study=study).count()
    upload = SimpleUploadedFile("pairs.jsonl.gz", gzip.compress(_jsonl(GOOD_ROWS)))
    response = client.post(reverse("feedback:study_import", args=[study.pk]), {"file": upload}, follow=True)
    assert response.redirect_chain == [(reverse("feedback:study_detail", args=[study.pk]), 302)]
    assert Pair.objects.filter(study=study).count() == before + 2
    assert "Imported 2 pairs (2 prompts, 4 responses, trl format)" in response.content.decode()


def test_it_reports_every_bad_line_and_imports_nothing(client, study, researcher):
    client.force_login(researcher)
    before = (Prompt.objects.count(), Pair.objects.count())
    lines = [
        json.dumps(GOOD_ROWS[0]),
        "{not json",
        json.dumps({"prompt": "Q?", "chosen": "same", "rejected": "same"}),
        json.dumps(GOOD_ROWS[1]),
        json.dumps({"prompt": "<b>Q</b>", "chosen": "", "rejected": "x"}),
    ]
    upload = SimpleUploadedFile("bad.jsonl", "\n".join(lines).encode())
    response = client.post(reverse("feedback:study_import", args=[study.pk]), {"file": upload})
    html = response.content.decode()
    assert response.status_code == 400
    assert (Prompt.objects.count(), Pair.objects.count()) == before
    assert "3 problems in bad.jsonl" in html
    assert '<td class="num">2</td><td>invalid JSON' in html
    assert '<td class="num">3</td><td>&quot;chosen&quot; and &quot;rejected&quot; are identical' in html
    assert '<td class="num">5</td><td>&quot;chosen&quot; is empty' in html


def test_it_requires_a_file(client, study, researcher):
    client.force_login(researcher)
    response = client.post(reverse("feedback:study_import", args=[study.pk]), {})
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()


def test_it_rejects_an_oversized_upload(client, study, researcher, settings):
    settings.CHORUS_IMPORT_MAX_BYTES = 10
    client.force_login(researcher)
    upload = SimpleUploadedFile("pairs.jsonl", _jsonl(GOOD_ROWS))
    response = client.post(reverse("feedback:study_import", args=[study.pk]), {"file": upload})
    assert response.status_code == 400
    assert "larger than 10 bytes" in response.content.decode()


def test_it_shows_the_login_page(client, db):
    User.objects.create_user("alice", password="pw-secret-123")
    response = client.get(reverse("login") + "?next=/studies/")
    assert response.status_code == 200
    assert 'name="next" value="/studies/"' in response.content.decode()
    response = client.post(
        reverse("login"), {"username": "alice", "password": "pw-secret-123", "next": "/studies/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/studies/"
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


# --- settings card, full study, recent judgments, exclusion (issue 15) ------------------------------

SETTINGS_POST = {
    "selector": "info_gain", "model_kind": "pal", "overlap_target": "4", "pairs_per_annotator": "7",
    "completion_url": "https://app.prolific.com/submissions/complete?cc={code}", "screenout_code": "NOPE1",
    "retrain_every_judgments": "25", "retrain_every_minutes": "0",
}


@pytest.mark.parametrize("role", ROLES)
def test_it_guards_the_settings_post(client, study, login_as, role):
    url = reverse("feedback:study_settings", args=[study.pk])
    login_as(role)
    response = client.post(url, SETTINGS_POST)
    study.refresh_from_db()
    if role == "anonymous":
        _assert_login_redirect(response, url)
    elif STUDY_PAGE_EXPECTED[role] == 403:
        assert response.status_code == 403
    else:
        assert response.status_code == 302
    assert (study.selector == "info_gain") == (role in ("researcher", "superuser"))


def test_it_shows_dropdowns_of_the_allowed_settings_on_the_study_page(client, study, researcher):
    from feedback.selection import SELECTORS

    client.force_login(researcher)
    html = client.get(reverse("feedback:study_detail", args=[study.pk])).content.decode()
    assert 'id="settings"' in html and "Train now" in html
    for name in SELECTORS:
        assert f'<option value="{name}"' in html
    for kind in ("bt", "vpl", "pal"):
        assert f'<option value="{kind}"' in html
    assert 'name="retrain_every_judgments"' in html and 'name="screenout_code"' in html


def test_it_saves_the_settings(client, study, researcher):
    client.force_login(researcher)
    response = client.post(reverse("feedback:study_settings", args=[study.pk]), SETTINGS_POST)
    assert response["Location"].endswith("#settings")
    study.refresh_from_db()
    assert (study.selector, study.model_kind, study.overlap_target, study.pairs_per_annotator) == ("info_gain", "pal", 4, 7)
    assert study.screenout_code == "NOPE1" and study.completion_url.endswith("cc={code}")
    assert (study.retrain_every_judgments, study.retrain_every_minutes) == (25, 0)
    # empty retrain rule = the site default again
    client.post(reverse("feedback:study_settings", args=[study.pk]),
                {**SETTINGS_POST, "retrain_every_judgments": "", "retrain_every_minutes": ""})
    study.refresh_from_db()
    assert (study.retrain_every_judgments, study.retrain_every_minutes) == (None, None)


@pytest.mark.parametrize("field, value", [("selector", "clever"), ("model_kind", "gpt"), ("overlap_target", "0"),
                                          ("retrain_every_minutes", "-1"), ("completion_url", "not a url")])
def test_it_rerenders_bad_settings_with_the_error_and_changes_nothing(client, study, researcher, field, value):
    client.force_login(researcher)
    response = client.post(reverse("feedback:study_settings", args=[study.pk]), {**SETTINGS_POST, field: value})
    assert response.status_code == 400
    assert "has-error" in response.content.decode()
    study.refresh_from_db()
    assert study.selector == "random" and study.overlap_target == 2


def test_it_creates_studies_with_active_learning_and_the_chosen_settings(client, researcher):
    client.force_login(researcher)
    html = client.get(reverse("feedback:study_create")).content.decode()
    assert '<option value="mixed" selected>' in html
    client.post(reverse("feedback:study_create"), {"name": "Defaults", "overlap_target": 3, "pairs_per_annotator": 10})
    assert Study.objects.get(name="Defaults").selector == "mixed"
    client.post(reverse("feedback:study_create"), {"name": "Chosen", "overlap_target": 3, "pairs_per_annotator": 10,
                                                   "selector": "random", "model_kind": "bt", "retrain_every_judgments": 5})
    chosen = Study.objects.get(name="Chosen")
    assert (chosen.selector, chosen.model_kind, chosen.retrain_every_judgments) == ("random", "bt", 5)


def test_it_says_on_the_study_page_when_the_study_is_full(client, study, researcher):
    client.force_login(researcher)
    url = reverse("feedback:study_detail", args=[study.pk])
    assert "Study full" not in client.get(url).content.decode()
    study.pairs.update(n_assigned=study.overlap_target)
    assert "Study full" in client.get(url).content.decode()
    assert "Study full" in client.get(url, HTTP_HX_REQUEST="true").content.decode()  # the polled counts


def test_it_shows_both_responses_side_strength_rationale_in_recent_judgments(client, study, researcher):
    pair = study.pairs.select_related("candidate_a", "candidate_b").first()
    ann = AnnotatorFactory(study=study)
    AssignmentFactory(annotator=ann, pair=pair, shown_order="ba")
    services.judgment_create(annotator=ann, pair=pair, choice="a", client_key="k1", rationale="Kinder tone", time_ms=2500)
    client.force_login(researcher)
    html = client.get(reverse("feedback:study_detail", args=[study.pk])).content.decode()
    assert pair.candidate_a.text in html and pair.candidate_b.text in html
    assert "<details" in html  # collapsed
    assert "Kinder tone" in html and "2.5 s" in html
    assert "<td>right</td>" in html  # A was shown on the right
    assert "not moved" in html  # no strength given for a side choice


@pytest.mark.parametrize("role", ROLES)
def test_it_guards_the_exclusion_post(client, study, login_as, role, annotator):
    url = reverse("feedback:annotator_exclusion", args=[study.pk, annotator.pk])
    login_as(role)
    response = client.post(url, {"action": "exclude"})
    annotator.refresh_from_db()
    if role == "anonymous":
        _assert_login_redirect(response, url)
    elif STUDY_PAGE_EXPECTED[role] == 403:
        assert response.status_code == 403
    assert annotator.is_excluded == (role in ("researcher", "superuser"))


def test_it_excludes_and_includes_an_annotator_with_a_record(client, study, researcher):
    from feedback.exports import annotator_rows, judgment_rows
    from feedback.models import ExclusionEvent

    pair = study.pairs.first()
    ann = AnnotatorFactory(study=study)
    AssignmentFactory(annotator=ann, pair=pair)
    services.judgment_create(annotator=ann, pair=pair, choice="a", client_key="k1")
    client.force_login(researcher)
    url = reverse("feedback:annotator_exclusion", args=[study.pk, ann.pk])
    dashboard = reverse("training:dashboard", args=[study.pk]) + "#quality"
    response = client.post(url, {"action": "exclude", "reason": "too fast", "next": dashboard})
    assert response["Location"] == dashboard
    ann.refresh_from_db()
    assert ann.is_excluded and ann.excluded_by == researcher and ann.exclusion_reason == "too fast"
    assert list(judgment_rows(study)) == [] and list(annotator_rows(study)) == []
    # stays stored, shows as excluded
    assert "excluded" in client.get(reverse("feedback:study_detail", args=[study.pk])).content.decode()
    client.post(url, {"action": "include", "next": "https://evil.example/"})
    ann.refresh_from_db()
    assert not ann.is_excluded and len(list(judgment_rows(study))) == 1
    events = list(ExclusionEvent.objects.filter(annotator=ann).order_by("id").values_list("excluded", "by", "reason"))
    assert events == [(True, researcher.pk, "too fast"), (False, researcher.pk, "")]
    other_study_ann = AnnotatorFactory()
    assert client.post(reverse("feedback:annotator_exclusion", args=[study.pk, other_study_ann.pk]),
                       {"action": "exclude"}).status_code == 404
