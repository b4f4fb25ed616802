"""benchmarks/simulation_protocol.py: simulated annotators through the real services (the app's research harness)."""

from __future__ import annotations

import json

import pytest

from feedback.models import Annotator, Assignment, Judgment, Pair, Study
from tests.benchmarks.conftest import load
from training.models import AnnotatorPosterior, ModelVersion

simulation = load("simulation_protocol")


@pytest.fixture
def tiny_study(db, researcher, settings):
    """16 prompts × 4 generated responses (96 pairs) with length/caution/humour/markdown metadata."""
    settings.CHORUS_EMBED_ON_IMPORT = False
    return simulation.create_synthetic_study(
        name="tiny simulation", n_prompts=16, responses=4, seed=1, model_kind="vpl", created_by=researcher
    )


@pytest.mark.django_db
def test_it_personalizes_for_the_minority_from_the_command_line(tiny_study, tmp_path, settings):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    lines, path = [], tmp_path / "sim.json"
    before = dict(Pair.objects.filter(study=tiny_study).values_list("id", "n_assigned"))
    study_before = _study_row(tiny_study)
    simulation.main([
        "--study", str(tiny_study.pk), "--annotators", "4", "--labels", "10", "--strategy", "info_gain",
        "--population", "opposite", "--warmup-annotators", "8", "--warmup-labels", "20", "--eval-pairs", "30",
        "--checkpoints", "0,5,10", "--seed", "3", "--json", str(path),
    ], out=lines.append)
    text = "\n".join(lines)
    assert "learning curve — strategy info_gain" in text and "labels to reach 90% of Bayes-optimal" in text
    result = json.loads(path.read_text())

    # every label went through the services, stored against the simulated annotators, with their profiles
    annotators = Annotator.objects.filter(study=tiny_study).select_related("profile")
    assert annotators.count() == 8 + 4
    assert all(a.external_id.startswith("sim-") for a in annotators)
    assert all(a.profile.data.get("gender") and a.profile.data.get("stated_prefs") for a in annotators)
    judgments = Judgment.objects.filter(pair__study=tiny_study)
    assert judgments.count() == 8 * 20 + 4 * 10
    assert {j.annotator.study_id for j in judgments.select_related("annotator")} == {tiny_study.pk}
    new = [a for a in annotators if "-info_gain-" in a.external_id]
    assert all(a.judgments.count() == 10 for a in new)
    assert all(AnnotatorPosterior.objects.get(annotator=a).n_predicted == 10 for a in new)
    # held-out pairs were never labelled, nor their rows written
    held = result["eval_pair_ids"]
    assert not judgments.filter(pair_id__in=held).exists()
    assert dict(Pair.objects.filter(id__in=held).values_list("id", "n_assigned")) == {i: before[i] for i in held}
    assert _study_row(tiny_study) == study_before  # never written, not merely put back

    summary = result["strategies"]["info_gain"]
    assert [p["n"] for p in summary["curve"]] == [0, 5, 10]
    assert 0.5 < summary["bayes_optimal"] <= 1.0
    minority = summary["by_type"]["short"]
    # The population model follows the majority (long answers), so it gets the minority wrong. How far
    # 10 labels move the minority's model on a study this small varies between trainings (see the
    # benchmark in BENCHMARKS.md); this test checks the wiring, the learning claim lives in
    # tests/training/test_services.py::test_it_trains_activates_and_personalizes.
    assert minority["population"] < 0.5
    assert all(0.0 <= v <= 1.0 for v in minority["curve"].values()), minority


@pytest.mark.django_db
def test_it_starts_every_strategy_and_profile_mode_from_the_same_place(tiny_study, tmp_path, settings):
    """Paired comparison: before any label, every strategy scores the same people identically; without a
    profile the start is the population model. (A model swapped under the run broke this once: artifacts
    of two runs collided at the same study-<pk>/version-<pk> path.)"""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    config = simulation.SimulationConfig(
        annotators=3, labels=2, strategies=("random", "info_gain"), seed=5, eval_pairs=30, warmup_annotators=6,
        warmup_labels=15, kind="vpl", population="pluralistic", checkpoints=(0, 2),
        profile_modes=("profile", "no_profile"),
    )
    result = simulation.run_simulation(tiny_study, config, log=lambda _: None)
    runs = result["strategies"]
    assert set(runs) == {"random", "info_gain", "random/no_profile", "info_gain/no_profile"}
    for mode in ("", "/no_profile"):
        a, b = runs["random" + mode]["per_user"], runs["info_gain" + mode]["per_user"]
        assert [u["type"] for u in a] == [u["type"] for u in b]
        for ua, ub in zip(a, b, strict=True):
            assert ua["bayes"] == ub["bayes"]
            assert ua["curve"][0] == pytest.approx(ub["curve"][0])
    for u in runs["random/no_profile"]["per_user"]:
        assert u["curve"][0] == pytest.approx(u["population"])
    assert all(len(u["curve"]) == 2 for r in runs.values() for u in r["per_user"])
    with pytest.raises(ValueError):
        simulation.run_simulation(tiny_study, simulation.SimulationConfig(profile_modes=("nope",)))


def _study_row(study):
    return Study.objects.filter(pk=study.pk).values().get()


def _pair_rows(study):
    return {row["id"]: row for row in Pair.objects.filter(study=study).values()}


def _settings_a_run_must_not_need(study):
    """Settings under which the run could not proceed if it read them from the row: paused (no joins),
    a quota of one pair, a model selector instead of the warm-up's random one, a retrain after every label."""
    Study.objects.filter(pk=study.pk).update(status=Study.Status.PAUSED, pairs_per_annotator=1,
                                             selector="info_gain", overlap_target=2, retrain_every_judgments=1)
    study.refresh_from_db()


@pytest.mark.django_db
def test_it_leaves_the_study_and_its_pairs_untouched_when_a_run_fails_midway(tiny_study, tmp_path, settings,
                                                                               monkeypatch):
    """Nothing is written to hold pairs out or to set the run's selector, overlap target, quota or status,
    so a run that dies midway (here: an error where a killed process would simply stop) leaves every field
    of the study and of its pairs as it was, during the run and after."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    _settings_a_run_must_not_need(tiny_study)
    study_before, pairs_before = _study_row(tiny_study), _pair_rows(tiny_study)
    seen_midway = []

    def crash(*args, **kwargs):
        seen_midway.append((_study_row(tiny_study), _pair_rows(tiny_study)))
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(simulation, "_label_one", crash)
    config = simulation.SimulationConfig(annotators=2, labels=2, seed=1, eval_pairs=30, warmup_annotators=2,
                                         warmup_labels=2, kind="vpl", population="opposite", checkpoints=(0, 2))
    with pytest.raises(RuntimeError, match="went away"):
        simulation.run_simulation(tiny_study, config, log=lambda _: None)
    assert seen_midway == [(study_before, pairs_before)]  # what a crash at that moment would have left
    assert _study_row(tiny_study) == study_before
    assert _pair_rows(tiny_study) == pairs_before
    assert not Annotator.objects.filter(study=tiny_study).exclude(assignments=None).exists()


@pytest.mark.django_db
def test_it_labels_under_the_runs_settings_without_writing_them(tiny_study, tmp_path, settings, monkeypatch):
    """The run's settings reach the services in-process: on a paused study with a quota of one pair and a
    model selector, warm-up annotators still join and give every label with the random selector, while the
    study's row stays as it was throughout; the labels' pairs change only by the slots and judgments they
    took, the held-out pairs not at all. The run then fails (at its retrain) and nothing needs putting back."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    _settings_a_run_must_not_need(tiny_study)
    study_before, pairs_before = _study_row(tiny_study), _pair_rows(tiny_study)
    real_label_one, rows_midway = simulation._label_one, []

    def label_one(*args, **kwargs):
        labelled = real_label_one(*args, **kwargs)
        rows_midway.append(_study_row(tiny_study))
        return labelled

    def crash(*args, **kwargs):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(simulation, "_label_one", label_one)
    monkeypatch.setattr(simulation, "_retrain", crash)
    config = simulation.SimulationConfig(annotators=2, labels=2, seed=1, eval_pairs=30, warmup_annotators=2,
                                         warmup_labels=3, kind="vpl", population="opposite", checkpoints=(0, 2))
    with pytest.raises(RuntimeError, match="went away"):
        simulation.run_simulation(tiny_study, config, log=lambda _: None)

    annotators = Annotator.objects.filter(study=tiny_study)
    assert annotators.count() == 2
    assert all(a.judgments.count() == 3 for a in annotators)  # past the stored quota of 1
    assert set(Assignment.objects.filter(annotator__study=tiny_study).values_list("selector", flat=True)) == {
        "random"}
    assert len(rows_midway) == 6 and all(row == study_before for row in rows_midway)
    # the study's own rule (a retrain after every judgment) did not fire: the run retrains only when it asks
    assert not ModelVersion.objects.filter(study=tiny_study).exists()
    assert _study_row(tiny_study) == study_before
    judged: dict[int, int] = {}
    for pair_id in Judgment.objects.filter(pair__study=tiny_study).values_list("pair_id", flat=True):
        judged[pair_id] = judged.get(pair_id, 0) + 1
    after = _pair_rows(tiny_study)
    assert after.keys() == pairs_before.keys()
    for pair_id, row in after.items():
        n = judged.get(pair_id, 0)
        was = pairs_before[pair_id]
        assert row == {**was, "n_assigned": was["n_assigned"] + n, "n_judgments": was["n_judgments"] + n}


@pytest.mark.django_db
def test_it_refuses_bad_arguments_on_the_command_line(tiny_study):
    with pytest.raises(SystemExit, match="unknown strategy"):
        simulation.main(["--study", str(tiny_study.pk), "--strategy", "psychic"], out=lambda _: None)
    with pytest.raises(SystemExit, match="--study ID or --create-synthetic"):
        simulation.main([], out=lambda _: None)
    with pytest.raises(SystemExit, match="no study"):
        simulation.main(["--study", str(Study.objects.order_by("-pk").first().pk + 1)], out=lambda _: None)
