"""feedback/decorators.py: researcher_study_required, the one access rule of the researcher pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.test import RequestFactory

from feedback.decorators import researcher_study_required
from tests.factories import AnnotatorFactory, ResearcherFactory


@researcher_study_required
def _page(request, study, **kwargs):
    return HttpResponse(f"{study.pk} {sorted(kwargs.items())}")


@researcher_study_required(methods=["POST"])
def _post_only(request, study):
    return HttpResponse(str(study.pk))


def _request(user, method: str = "get"):
    request = getattr(RequestFactory(), method)("/studies/x/")
    request.user = user
    return request


@pytest.mark.django_db
def test_it_sends_anonymous_users_to_the_login_page(study):
    response = _page(_request(AnonymousUser()), pk=study.pk)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    # Before the method check too, as login_required above require_POST did.
    assert _post_only(_request(AnonymousUser()), pk=study.pk).status_code == 302


@pytest.mark.django_db
def test_it_refuses_an_annotator_of_the_study(study):
    with pytest.raises(PermissionDenied):
        _page(_request(AnnotatorFactory(study=study).user), pk=study.pk)


@pytest.mark.django_db
def test_it_refuses_another_researcher(study):
    with pytest.raises(PermissionDenied, match="not a researcher of this study"):
        _page(_request(ResearcherFactory()), pk=study.pk)


@pytest.mark.django_db
def test_it_answers_404_for_a_missing_study(researcher):
    with pytest.raises(Http404):
        _page(_request(researcher), pk=999_999)


@pytest.mark.django_db
def test_it_passes_the_study_and_the_other_url_arguments_to_the_researcher(study, researcher):
    response = _page(_request(researcher), pk=study.pk, annotator_id=7)
    assert response.status_code == 200
    assert response.content.decode() == f"{study.pk} [('annotator_id', 7)]"


@pytest.mark.django_db
def test_it_lets_a_co_researcher_and_a_superuser_in(study):
    co = ResearcherFactory()
    study.researchers.add(co)
    for user in (co, ResearcherFactory(is_superuser=True)):
        assert _page(_request(user), pk=study.pk).status_code == 200


@pytest.mark.django_db
def test_it_checks_the_method_before_the_study(study, researcher):
    # A wrong method is 405 for any logged-in user, whether or not they may see the study (as before).
    assert _post_only(_request(ResearcherFactory()), pk=study.pk).status_code == 405
    assert _post_only(_request(researcher), pk=999_999).status_code == 405
    assert _post_only(_request(researcher, "post"), pk=study.pk).status_code == 200


@pytest.mark.django_db
def test_it_guards_the_real_pages_the_same_way(client, study, researcher):
    urls = [f"/studies/{study.pk}/", f"/studies/{study.pk}/export", f"/studies/{study.pk}/dashboard/",
            f"/studies/{study.pk}/models", f"/studies/{study.pk}/import"]
    for url in urls:
        assert client.get(url).status_code == 302, url
    client.force_login(AnnotatorFactory(study=study).user)
    assert {client.get(url).status_code for url in urls} == {403}
    client.force_login(ResearcherFactory())
    assert {client.get(url).status_code for url in urls} == {403}
    client.force_login(researcher)
    assert {client.get(url).status_code for url in urls} == {200}
