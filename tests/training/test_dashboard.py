from __future__ import annotations

import json

import pytest

from tests.training.conftest import label_all
from training import services
from training.dashboard import study_dashboard


@pytest.mark.django_db
def test_it_slices_the_dashboard_by_a_profile_field(style_study):
    label_all(style_study, n_annotators=6, per_annotator=20)
    services.model_version_request(study=style_study)
    data = study_dashboard(style_study, "gender")
    json.dumps(data)  # JSON-ready: no NaN, no numpy types
    names = {g["name"] for g in data["groups"]}
    assert names == {"female", "male"}
    female = next(g for g in data["groups"] if g["name"] == "female")
    male = next(g for g in data["groups"] if g["name"] == "male")
    # the long-answer model wins for the group that likes long answers and loses for the other
    top_f = female["leaderboard"][0]["model"]
    top_m = male["leaderboard"][0]["model"]
    assert top_f == "Bramble-13B"
    assert top_m != "Bramble-13B"
    for row in female["leaderboard"]:
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert data["rank_correlation"]["female"]["male"] < 0
    assert data["progress"]["judgments"] == 120
    assert len(data["latent_map"]) == 6
    assert {p["group"] for p in data["latent_map"]} == {"female", "male"}
    cross = data["cross_group_accuracy"]["matrix"]
    # each group's own model predicts its own judgments better than the other group's does
    assert cross["female"]["female"] > cross["male"]["female"]
    assert cross["male"]["male"] > cross["female"]["male"]
    assert len(data["quality"]) == 6


@pytest.mark.django_db
def test_it_rejects_unknown_group_fields(style_study):
    with pytest.raises(ValueError):
        study_dashboard(style_study, "shoe_size")


@pytest.mark.django_db
def test_it_works_before_any_model_or_judgment(style_study):
    data = study_dashboard(style_study, "age")
    assert data["model_version"] is None
    assert data["latent_map"] == []
    assert data["progress"]["judgments"] == 0


def _judge(annotator, pair, choice: str) -> None:
    from tests.factories import AssignmentFactory

    AssignmentFactory(annotator=annotator, pair=pair)
    from feedback import services as feedback_services

    feedback_services.judgment_create(annotator=annotator, pair=pair, choice=choice, client_key=f"{pair.pk}")


@pytest.mark.django_db
def test_it_puts_the_within_group_agreement_on_the_matrix_diagonal(researcher):
    """Hand-computed: two pairs, two men, two women, one non-binary annotator with a single label.

    pair 1: m1 a, m2 b, f1 a, n1 a     pair 2: m1 a, m2 a, f1 b, f2 a
    male within:   pair 1 {a,b} 0 of 1 agree, pair 2 {a,a} 1 of 1      -> 1/2 = 50%   (self-pairing: 6/8 = 75%)
    female within: pair 1 one label, no pair; pair 2 {b,a} 0 of 1      -> 0/1 = 0%    (self-pairing: 3/5 = 60%)
    non-binary:    one label only, no pair                             -> blank       (self-pairing: 100%)
    male × female: pair 1 (a,b)×(a) 1 of 2, pair 2 (a,a)×(b,a) 2 of 4  -> 3/6 = 50%
    """
    from tests.factories import AnnotatorFactory, make_study_with_pairs

    study = make_study_with_pairs(2, created_by=researcher, overlap_target=5)
    p1, p2 = list(study.pairs.order_by("id"))
    m1, m2, f1, f2, n1 = (
        AnnotatorFactory(study=study, profile={"gender": g}) for g in ("male", "male", "female", "female", "non-binary")
    )
    for ann, pair, choice in [(m1, p1, "a"), (m2, p1, "b"), (f1, p1, "a"), (n1, p1, "a"),
                              (m1, p2, "a"), (m2, p2, "a"), (f1, p2, "b"), (f2, p2, "a")]:
        _judge(ann, pair, choice)
    between = study_dashboard(study, "gender")["between_group_agreement"]
    assert between["male"]["male"] == pytest.approx(0.5)
    assert between["female"]["female"] == pytest.approx(0.0)
    assert between["non-binary"]["non-binary"] is None
    assert between["male"]["female"] == between["female"]["male"] == pytest.approx(0.5)
    # the diagonal is exactly the within-group table's figure
    groups = {g["name"]: g for g in study_dashboard(study, "gender")["groups"]}
    assert groups["male"]["agreement"]["pairwise"] == pytest.approx(0.5)
    assert groups["non-binary"]["agreement"]["pairwise"] is None


@pytest.mark.django_db
def test_it_reads_stated_preferences_through_the_one_mapping_the_simulation_uses(style_study):
    """"Helpfulness" (directly answering) is revealed by SHORTER answers, for the dashboard as for the simulated
    annotators' sliders: people who like short answers and rate helpfulness high AGREE (correlation > 0)."""
    from feedback.models import Candidate
    from feedback.profile_schema import STATED_PREFS
    from personalization import profiles, synthetic
    from training import dashboard

    assert dashboard.STATED_PREF_ATTRIBUTES is profiles.STATED_PREF_ATTRIBUTES is synthetic.STATED_PREF_ATTRIBUTES
    assert [code for code, _ in STATED_PREFS] == list(profiles.STATED_PREF_CODES)
    lengths = {"Aster-7B": "short", "Bramble-13B": "long", "Cobalt-Chat": "medium"}
    for cand in Candidate.objects.filter(prompt__study=style_study):
        cand.metadata = {"length": lengths[cand.model_name]}
        cand.save(update_fields=["metadata"])
    annotators = label_all(style_study, n_annotators=6, per_annotator=20)
    for k, ann in enumerate(annotators):  # likes_long(k): even k; they say helpfulness matters less
        ann.profile.data = {**ann.profile.data, "stated_prefs": {"helpfulness": 20 + k if k % 2 == 0 else 80 + k}}
        ann.profile.save(update_fields=["data"])
    services.model_version_request(study=style_study)
    rows = {a["attribute"]: a for a in study_dashboard(style_study, "gender")["stated_vs_revealed"]["attributes"]}
    helpful = rows["helpfulness"]
    assert helpful["revealed_by"] == "−length" and rows["safety"]["revealed_by"] == "caution"
    assert rows["values"]["revealed_by"] is None
    assert helpful["n"] == 6 and helpful["correlation"] > 0.5, helpful
