"""feedback/selectors.py: the one access rule for a study's researcher pages and API calls."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from feedback.selectors import get_study_for_researcher
from tests.factories import AnnotatorFactory, ResearcherFactory, StudyFactory, UserFactory


@pytest.mark.django_db
def test_it_gives_the_study_to_its_creator_co_researchers_and_superusers():
    study = StudyFactory()
    co = ResearcherFactory()
    study.researchers.add(co)
    admin = UserFactory(is_superuser=True)
    for user in (study.created_by, co, admin):
        assert get_study_for_researcher(user=user, pk=study.pk) == study


@pytest.mark.django_db
def test_it_refuses_everyone_else_with_403():
    study = StudyFactory()
    annotator = AnnotatorFactory(study=study)
    for user in (AnonymousUser(), UserFactory(), ResearcherFactory(), annotator.user):
        with pytest.raises(PermissionDenied, match="not a researcher of this study"):
            get_study_for_researcher(user=user, pk=study.pk)


@pytest.mark.django_db
def test_it_refuses_an_annotator_account_even_when_listed_as_researcher():
    # Participants must never see each other's data, whatever the researcher list says.
    study = StudyFactory()
    annotator = AnnotatorFactory(study=study)
    study.researchers.add(annotator.user)
    with pytest.raises(PermissionDenied):
        get_study_for_researcher(user=annotator.user, pk=study.pk)


@pytest.mark.django_db
def test_it_says_404_for_a_study_that_does_not_exist():
    with pytest.raises(Http404, match="no such study"):
        get_study_for_researcher(user=ResearcherFactory(), pk=999_999)
