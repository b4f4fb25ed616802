from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from feedback.models import Annotator, Assignment, Candidate, Pair, Profile, Prompt, Study, text_hash

User = get_user_model()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-secret-123")


class ResearcherFactory(UserFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True  # the hook only adds a group

    username = factory.Sequence(lambda n: f"researcher{n}")

    @factory.post_generation
    def researcher_group(self, create, extracted, **kwargs):
        if create:
            from django.contrib.auth.models import Group

            self.groups.add(Group.objects.get_or_create(name="researchers")[0])


class StudyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Study
        skip_postgeneration_save = True  # the hook only adds an M2M row

    name = factory.Sequence(lambda n: f"Study {n}")
    slug = factory.Sequence(lambda n: f"study-{n}")
    instructions = "Pick the response you prefer."
    overlap_target = 2
    pairs_per_annotator = 5
    created_by = factory.SubFactory(ResearcherFactory)

    @factory.post_generation
    def add_creator(self, create, extracted, **kwargs):
        if create and self.created_by:
            self.researchers.add(self.created_by)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    study = factory.SubFactory(StudyFactory)
    text = factory.Sequence(lambda n: f"Prompt number {n}?")


class CandidateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Candidate

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Response **{n}**")
    model_name = factory.Iterator(["Aster-7B", "Bramble-13B", "Cobalt-Chat"])
    text_hash = factory.LazyAttribute(lambda o: text_hash(o.text))


class PairFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pair

    prompt = factory.SubFactory(PromptFactory)
    study = factory.LazyAttribute(lambda o: o.prompt.study)
    candidate_a = factory.LazyAttribute(lambda o: CandidateFactory(prompt=o.prompt))
    candidate_b = factory.LazyAttribute(lambda o: CandidateFactory(prompt=o.prompt))


class AnnotatorFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Annotator
        skip_postgeneration_save = True  # the hook only creates the profile row

    study = factory.SubFactory(StudyFactory)
    user = factory.SubFactory(UserFactory)
    consented_at = factory.Faker("date_time", tzinfo=__import__("datetime").timezone.utc)

    @factory.post_generation
    def profile(self, create, extracted, **kwargs):
        if create:
            Profile.objects.get_or_create(annotator=self, defaults={"data": extracted or {}})


class AssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assignment

    annotator = factory.SubFactory(AnnotatorFactory)
    pair = factory.SubFactory(PairFactory)
    shown_order = "ab"


def make_study_with_pairs(n_pairs: int = 6, **study_kwargs) -> Study:
    """A study with n_pairs pairs over distinct prompts."""
    study = StudyFactory(**study_kwargs)
    for _ in range(n_pairs):
        PairFactory(prompt=PromptFactory(study=study))
    return study
