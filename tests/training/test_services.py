from __future__ import annotations

import pytest

from feedback import services as feedback_services
from tests.training.conftest import label_all, likes_long
from training import selectors, services
from training.models import AnnotatorPosterior, ModelVersion, TextEmbedding


@pytest.mark.django_db
def test_it_embeds_study_texts_once_on_import(style_study):
    # 20 prompt conversations + 30 distinct responses (topics repeat every 10 prompts: stored once)
    assert TextEmbedding.objects.count() == 50
    from training.embeddings import embed_study

    assert embed_study(style_study.pk) == 0  # nothing new the second time


@pytest.mark.django_db
def test_it_trains_activates_and_personalizes(style_study):
    annotators = label_all(style_study)
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.ACTIVE, version.error
    assert version.metrics["n_train"] > 0
    assert "gender" in version.metrics["groups"]
    assert version.metrics["accuracy"] >= version.metrics["accuracy_population"]
    # activation refreshed every annotator's posterior under the new version
    states = AnnotatorPosterior.objects.filter(model_version=version)
    assert states.count() == len(annotators)
    # the personalized prediction follows each annotator's own taste, on a pair whose lengths differ (the
    # detailed answer against another), in both orientations: checked for every annotator, no skipping
    pair = next(p for p in style_study.pairs.select_related("candidate_a", "candidate_b")
                if "detailed" in p.candidate_a.text + p.candidate_b.text)
    for a, b in ((pair.candidate_a, pair.candidate_b), (pair.candidate_b, pair.candidate_a)):
        a_long = len(a.text) > len(b.text)
        assert len(a.text) != len(b.text)
        for k, ann in enumerate(annotators):
            out = selectors.predict_for_annotator(annotator=ann, candidate_a=a, candidate_b=b)
            assert (out["p_a"] > 0.5) == (a_long == likes_long(k)), (k, out, version.metrics.get("population_guard"))
    # held-out cross-entropy and calibration next to accuracy, and the population guard's record
    for key in ("cross_entropy", "cross_entropy_population", "ece", "ece_population"):
        assert isinstance(version.metrics[key], float)
    guard = version.metrics["population_guard"]
    assert guard["fallback"] is False
    assert version.metrics["accuracy"] >= guard["population"]["accuracy"]
    assert "chosen" in version.metrics["fit_guard"] or "skipped" in version.metrics["fit_guard"]


@pytest.mark.django_db
def test_it_falls_back_to_the_population_when_the_personal_model_is_worse(style_study, monkeypatch):
    """A personal model worse than BT on the held-out judgments is not served as is: every annotator's
    prediction falls back to the population BT, and metrics say so. The bad model here: the personal model
    backed off completely to a BT trained on flipped labels (the posteriors cannot rescue it)."""
    annotators = label_all(style_study, n_annotators=6, per_annotator=20, taste=lambda k: True)  # one shared taste
    real_fit = services._fit

    def flipped_fit(kind, batch, profiles, seed):
        wrong = services.JudgmentBatch(**{**batch.__dict__, "chosen": batch.rejected, "rejected": batch.chosen})
        model = real_fit(kind, batch, profiles, seed)
        model.attach_population(services._fit_population(wrong, seed=seed), 0.0)
        return model

    monkeypatch.setattr(services, "_fit", flipped_fit)
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.ACTIVE, version.error
    guard = version.metrics["population_guard"]
    assert guard["fallback"] is True, version.metrics
    assert guard["personal"]["accuracy"] < guard["population"]["accuracy"]
    assert version.metrics["accuracy"] == pytest.approx(guard["population"]["accuracy"])
    model = selectors.load_version_model(version)
    assert model.config.personal_weight == 0.0 and model.population is not None
    pair = style_study.pairs.select_related("candidate_a", "candidate_b").first()
    bt_p = [selectors.predict_for_annotator(annotator=ann, candidate_a=pair.candidate_a,
                                           candidate_b=pair.candidate_b)["p_a"] for ann in annotators]
    assert max(bt_p) - min(bt_p) < 1e-5  # one population prediction for everybody


@pytest.mark.django_db
def test_it_keeps_the_active_model_when_training_fails(style_study, monkeypatch):
    label_all(style_study, n_annotators=4, per_annotator=10)
    first = services.model_version_request(study=style_study)
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.ACTIVE

    def boom(*args, **kwargs):
        raise RuntimeError("GPU fell off the bus")

    monkeypatch.setattr(services, "_fit", boom)
    second = services.model_version_request(study=style_study, kind="pal")
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.status == ModelVersion.Status.FAILED
    assert "GPU fell off the bus" in second.error
    assert first.status == ModelVersion.Status.ACTIVE


@pytest.mark.django_db
def test_it_updates_posteriors_idempotently_with_prequential_accuracy(style_study):
    annotators = label_all(style_study, n_annotators=4, per_annotator=10)
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    ann = annotators[0]
    state = AnnotatorPosterior.objects.get(annotator=ann, model_version=version)
    before = (state.n_predicted, state.last_judgment_id, state.state)
    again = services.posterior_update(annotator_id=ann.pk)  # a replayed task
    assert (again.n_predicted, again.last_judgment_id, again.state) == before
    # one more judgment folds in exactly one label
    asg = feedback_services.assignment_next(annotator=ann)
    feedback_services.judgment_create(annotator=ann, pair=asg.pair, choice="a", client_key="extra")
    state.refresh_from_db()
    assert state.n_predicted == before[0] + 1
    assert 0 <= state.n_correct <= state.n_predicted


@pytest.mark.django_db
def test_it_claims_a_training_job_once(style_study):
    label_all(style_study, n_annotators=2, per_annotator=5)
    version = ModelVersion.objects.create(study=style_study, kind="bt", data_cutoff=10**9)
    assert services._claim(version.pk) is True
    assert services._claim(version.pk) is False  # a second worker backs off
    with pytest.raises(services.TrainingBusy):
        services.model_version_train(model_version_id=version.pk)


@pytest.mark.django_db
def test_it_compares_with_the_active_version_before_taking_the_row_lock(style_study, monkeypatch):
    """The slow comparison (load the active model, predict the held-out slice) runs with no lock held; the
    row lock covers only the compare-and-set activation."""
    from django.db.models.query import QuerySet

    label_all(style_study, n_annotators=4, per_annotator=10)
    first = services.model_version_request(study=style_study, kind="bt")
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.ACTIVE
    events: list[str] = []
    real_load, real_lock = services.load_version_model, QuerySet.select_for_update

    def load(version):
        events.append(f"compare with {version.pk}")
        return real_load(version)

    def lock(self, *args, **kwargs):
        if self.model is ModelVersion:
            events.append("lock")
        return real_lock(self, *args, **kwargs)

    monkeypatch.setattr(services, "load_version_model", load)
    monkeypatch.setattr(QuerySet, "select_for_update", lock)
    second = services.model_version_request(study=style_study, kind="vpl")
    second.refresh_from_db()
    assert second.status in (ModelVersion.Status.ACTIVE, ModelVersion.Status.READY), second.error
    assert "accuracy_active_before" in second.metrics
    # (after the lock: the posterior refresh loads the new version, once per annotator)
    assert events[:2] == [f"compare with {first.pk}", "lock"] and events.count("lock") == 1, events


@pytest.mark.django_db
def test_it_never_replaces_a_newer_active_version_with_an_older_one(style_study):
    label_all(style_study, n_annotators=4, per_annotator=10)
    older = ModelVersion.objects.create(study=style_study, kind="bt", data_cutoff=10**9)  # e.g. a slow job
    newer = services.model_version_request(study=style_study, kind="vpl")
    newer.refresh_from_db()
    assert newer.pk > older.pk and newer.status == ModelVersion.Status.ACTIVE, newer.error
    services.model_version_train(model_version_id=older.pk)
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.status, newer.status) == (ModelVersion.Status.READY, ModelVersion.Status.ACTIVE), older.error
    assert "accuracy_active_before" not in older.metrics  # not even compared


@pytest.mark.django_db
def test_it_compares_again_when_the_active_version_changes_during_the_comparison(style_study, monkeypatch):
    label_all(style_study, n_annotators=4, per_annotator=10)
    a = services.model_version_request(study=style_study, kind="bt")
    b = services.model_version_request(study=style_study, kind="vpl")
    ModelVersion.objects.filter(pk=b.pk).update(status=ModelVersion.Status.RETIRED)  # a is the active one
    ModelVersion.objects.filter(pk=a.pk).update(status=ModelVersion.Status.ACTIVE)
    c = ModelVersion.objects.create(study=style_study, kind="bt", data_cutoff=10**9)
    compared: list[int] = []
    real = services._baseline_accuracy

    def baseline(version, current, metrics, evaluate):
        if current is not None:
            compared.append(current.pk)
            if len(compared) == 1:  # someone activates b while c is being compared with a
                ModelVersion.objects.filter(pk=a.pk).update(status=ModelVersion.Status.RETIRED)
                ModelVersion.objects.filter(pk=b.pk).update(status=ModelVersion.Status.ACTIVE)
        return real(version, current, metrics, evaluate)

    monkeypatch.setattr(services, "_baseline_accuracy", baseline)
    services.model_version_train(model_version_id=c.pk)
    c.refresh_from_db()
    assert compared == [a.pk, b.pk], compared
    assert c.status in (ModelVersion.Status.ACTIVE, ModelVersion.Status.READY), c.error
    assert ModelVersion.objects.filter(study=style_study, status=ModelVersion.Status.ACTIVE).count() == 1
    a.refresh_from_db()
    assert a.status == ModelVersion.Status.RETIRED  # retired by the swap, never by c
