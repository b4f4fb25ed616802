"""feedback/selectors.py: the access rules (a study's researchers; an annotator's own data)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from feedback.selectors import annotator_of, get_study_for_researcher, own_annotator
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


@pytest.mark.django_db
def test_it_gives_an_annotator_their_own_record_in_their_own_study_only():
    study = StudyFactory()
    annotator = AnnotatorFactory(study=study)
    other = AnnotatorFactory(study=study)
    user = annotator.user
    assert own_annotator(user=user, study_id=study.pk) == annotator
    assert own_annotator(user=user, study_id=study.pk, annotator_id=annotator.pk) == annotator
    assert own_annotator(user=user, study_id=study.pk, annotator_id=other.pk) is None
    assert own_annotator(user=user, study_id=StudyFactory().pk) is None


@pytest.mark.django_db
def test_it_has_no_own_annotator_for_anyone_but_annotators():
    study = StudyFactory()
    for user in (AnonymousUser(), study.created_by, UserFactory(is_superuser=True)):
        assert own_annotator(user=user, study_id=study.pk) is None


@pytest.mark.django_db
def test_it_takes_the_annotator_the_token_query_loaded_without_a_query(django_assert_num_queries):
    annotator = AnnotatorFactory()
    user = type(annotator.user).objects.select_related("annotator").get(pk=annotator.user.pk)
    with django_assert_num_queries(0):
        assert annotator_of(user) == annotator
        assert own_annotator(user=user, study_id=annotator.study_id) == annotator
    with django_assert_num_queries(1):
        assert annotator_of(UserFactory.build(pk=annotator.user.pk)) == annotator
