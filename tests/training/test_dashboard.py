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
