"""Active-learning selectors (training/active_learning.py): scores, ranking, constraints, fallbacks."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from feedback import services as feedback_services
from feedback.models import Assignment, Pair
from feedback.selection import SELECTORS, RandomSelector, get_selector
from personalization import Posterior
from tests.factories import AnnotatorFactory, make_study_with_pairs
from tests.training.conftest import label_all
from training import active_learning, services
from training.active_learning import ModelSelector, PairPool, score_pairs
from training.models import ModelVersion


def uncertain(dim: int, var: float = 4.0) -> Posterior:
    return Posterior(torch.zeros(dim), var * torch.eye(dim))


def pool_of(pair_ids, db, dg, link="identity") -> PairPool:
    return PairPool(
        np.asarray(pair_ids, dtype=np.int64),
        torch.tensor(db, dtype=torch.float32),
        torch.tensor(dg, dtype=torch.float32),
        link,
    )


def scores(pool: PairPool, post: Posterior, strategy: str) -> list[float]:
    return score_pairs(pool, np.arange(len(pool.pair_ids)), post, strategy).tolist()


# ----------------------------------------------------------------------------------------- scoring maths

# Four pairs under an uncertain posterior over a 3-d latent:
SPLIT, SURE, COIN, MILD = 0, 1, 2, 3
HAND_POOL = dict(
    pair_ids=[10, 11, 12, 13],
    db=[0.0, 6.0, 0.0, 0.0],
    dg=[
        [3.0, 0.0, 0.0],  # SPLIT: the population is indifferent, users differ strongly -> most to learn
        [0.1, 0.0, 0.0],  # SURE: everyone prefers a -> nothing to learn
        [0.0, 0.0, 0.0],  # COIN: a coin flip for everyone -> uncertain, but nothing to learn about the user
        [0.0, 0.5, 0.0],  # MILD: users differ a little
    ],
)


def test_info_gain_prefers_pairs_that_split_the_posterior():
    pool = pool_of(**HAND_POOL)
    ig = scores(pool, uncertain(3), "info_gain")
    assert ig[SPLIT] > ig[MILD] > ig[SURE]
    assert ig[SPLIT] > ig[COIN]
    assert ig[COIN] == pytest.approx(0.0, abs=1e-6)  # label noise teaches nothing about the user
    assert all(0.0 <= s <= 1.0 for s in ig)  # bits, for one binary label
    # once the model is sure about the user, the same pair is worth less
    assert scores(pool, uncertain(3, var=0.01), "info_gain")[SPLIT] < ig[SPLIT]


def test_uncertainty_is_predictive_entropy():
    pool = pool_of(**HAND_POOL)
    ent = scores(pool, uncertain(3), "uncertainty")
    assert ent[COIN] == pytest.approx(1.0, abs=1e-5)  # p = 1/2 -> one bit
    assert ent[SPLIT] == pytest.approx(1.0, abs=1e-5)  # mean logit 0 too
    assert ent[SURE] < 0.1
    # unlike info gain, entropy cannot tell the coin flip from the informative pair
    ig = scores(pool, uncertain(3), "info_gain")
    assert ent[COIN] == pytest.approx(ent[SPLIT], abs=1e-5) and ig[COIN] < ig[SPLIT]


def test_uncertainty_matches_the_closed_form_on_random_pairs():
    gen = torch.Generator().manual_seed(0)
    n, dim = 200, 5
    db = torch.randn(n, generator=gen)
    dg = torch.randn(n, dim, generator=gen)
    mean = torch.randn(dim, generator=gen) * 0.3
    a = torch.randn(dim, dim, generator=gen)
    cov = a @ a.T / dim + 0.1 * torch.eye(dim)
    post = Posterior(mean, cov)
    pool = PairPool(np.arange(n, dtype=np.int64), db, dg, "identity")
    got = score_pairs(pool, np.arange(n), post, "uncertainty").double().numpy()
    m = (db + dg @ mean).double().numpy()
    s2 = ((dg @ cov) * dg).sum(-1).double().numpy()
    p = 1 / (1 + np.exp(-m / np.sqrt(1 + math.pi / 8 * s2)))
    expected = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # and info gain never exceeds the entropy it is part of
    ig = score_pairs(pool, np.arange(n), post, "info_gain").double().numpy()
    assert (ig <= got + 1e-6).all() and (ig >= 0).all()


def test_scores_work_for_the_softmax_link_and_for_bt():
    gen = torch.Generator().manual_seed(1)
    pal = PairPool(np.arange(50, dtype=np.int64), torch.randn(50, generator=gen), torch.randn(50, 4, generator=gen),
                   "softmax")
    for strategy in ("uncertainty", "info_gain"):
        s = score_pairs(pal, np.arange(50), uncertain(4), strategy)
        assert s.shape == (50,) and torch.isfinite(s).all()
    # BT has no user latent: entropy only
    bt = PairPool(np.arange(3, dtype=np.int64), torch.tensor([0.0, 1.0, 5.0]), torch.zeros(3, 0), "identity")
    post = Posterior(torch.zeros(0), torch.zeros(0, 0))
    ent = scores(bt, post, "uncertainty")
    assert ent[0] > ent[1] > ent[2]
    assert all(math.isfinite(s) and s >= 0 for s in scores(bt, post, "info_gain"))


def test_info_gain_is_zero_without_epistemic_uncertainty():
    from personalization.models.posterior import bald

    m = torch.tensor([0.0, 1.0, 3.0, 5.0, 8.0])
    assert bald(m, torch.zeros(5)).tolist() == pytest.approx([0.0] * 5, abs=1e-3)
    # a sure pair must never outrank a pair that still splits the posterior
    assert bald(torch.tensor([3.0]), torch.tensor([0.0])) < bald(torch.tensor([0.0]), torch.tensor([0.5]))


def test_ranking_scores_the_whole_pool_in_one_vectorised_call(monkeypatch):
    """10k pairs are scored by one batched computation, never a Python loop per pair (timings:
    benchmarks/selection_bench.py)."""
    calls: list[int] = []
    real = active_learning.logit_moments

    def counting(post, db, dg, link):
        calls.append(int(db.shape[0]))
        return real(post, db, dg, link)

    monkeypatch.setattr(active_learning, "logit_moments", counting)
    gen = torch.Generator().manual_seed(2)
    n = 10_000
    pool = PairPool(np.arange(n, dtype=np.int64) * 3, torch.randn(n, generator=gen),
                    torch.randn(n, 8, generator=gen), "identity")
    positions, found = pool.positions(list(range(0, 3 * n, 3)))
    assert len(found) == n
    s = score_pairs(pool, positions, uncertain(8), "info_gain")
    assert calls == [n]
    assert s.shape == (n,)


def test_pool_positions_skip_unknown_ids():
    pool = pool_of([2, 5, 9], [0.0, 0.0, 0.0], [[1.0], [1.0], [1.0]])
    positions, found = pool.positions([9, 3, 2, 100])
    assert found.tolist() == [9, 2] and positions.tolist() == [2, 0]
    empty = pool_of([], [], np.zeros((0, 1)))
    positions, found = empty.positions([1, 2])
    assert len(found) == 0


# ------------------------------------------------------------------------------- ranking via the database


@pytest.fixture
def fake_model(monkeypatch):
    """An "active model" for a study whose pair pool the test sets: no training needed."""

    class Fake:
        pool: PairPool | None = None
        post: Posterior = uncertain(3)
        pool_calls = 0

    def pair_pool(study_id, version):
        Fake.pool_calls += 1
        return Fake.pool

    monkeypatch.setattr(active_learning, "active_version", lambda study_id: ModelVersion(pk=1, study_id=study_id))
    monkeypatch.setattr(active_learning, "pair_pool", pair_pool)
    monkeypatch.setattr(active_learning, "annotator_posterior", lambda annotator, version: Fake.post)
    return Fake


def hand_pool_for(study) -> tuple[PairPool, dict[str, int]]:
    """The study's pairs with the hand-made deltas, cycling SPLIT, SURE, COIN, MILD."""
    ids = list(Pair.objects.filter(study=study).order_by("id").values_list("id", flat=True))
    kinds = [i % 4 for i in range(len(ids))]
    pool = pool_of(ids, [HAND_POOL["db"][k] for k in kinds], [HAND_POOL["dg"][k] for k in kinds])
    return pool, dict(zip(ids, kinds, strict=True))


@pytest.mark.django_db
def test_model_selector_ranks_eligible_pairs_by_score(fake_model):
    study = make_study_with_pairs(8, overlap_target=2)
    fake_model.pool, kind_of = hand_pool_for(study)
    annotator = AnnotatorFactory(study=study)
    ranked = ModelSelector("info_gain", "info_gain").rank(annotator=annotator, limit=8)
    assert [kind_of[i] for i in ranked] == [SPLIT, SPLIT, MILD, MILD, SURE, SURE, COIN, COIN]
    # only eligible pairs: not one the annotator had, not one at its overlap target
    full = ranked[0]
    Pair.objects.filter(pk=full).update(n_assigned=2)
    had = Assignment.objects.create(annotator=annotator, pair_id=ranked[1], shown_order="ab").pair_id
    again = ModelSelector("info_gain", "info_gain").rank(annotator=annotator, limit=8)
    assert full not in again and had not in again and len(again) == 6
    assert ModelSelector("x", "info_gain").rank(annotator=annotator, limit=2) == again[:2]
    # uncertainty: every pair with mean logit 0 is one bit; the sure ones come last
    unc = ModelSelector("uncertainty", "uncertainty").rank(annotator=annotator, limit=8)
    assert {kind_of[i] for i in unc[:4]} <= {SPLIT, COIN, MILD} and kind_of[unc[-1]] == SURE


@pytest.mark.django_db
def test_pairs_without_embeddings_are_served_after_the_scored_ones(fake_model):
    study = make_study_with_pairs(4, overlap_target=2)
    ids = list(Pair.objects.filter(study=study).order_by("id").values_list("id", flat=True))
    fake_model.pool = pool_of(ids[:2], [6.0, 0.0], [[0.0, 0, 0], [3.0, 0, 0]])  # the last two not embedded
    annotator = AnnotatorFactory(study=study)
    selector = ModelSelector("info_gain", "info_gain")
    ranked = selector.rank(annotator=annotator, limit=4)
    assert ranked[:2] == [ids[1], ids[0]] and set(ranked[2:]) == set(ids[2:])
    assert selector.name == "info_gain"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["uncertainty", "info_gain", "mixed"])
def test_constraints_hold_with_model_selectors(fake_model, name):
    """Every annotator wants the same best pairs: overlap still caps them and no one sees a pair twice."""
    study = make_study_with_pairs(8, overlap_target=2, pairs_per_annotator=4, selector=name)
    fake_model.pool, _ = hand_pool_for(study)
    rng = random.Random(0)
    for k in range(12):
        annotator = AnnotatorFactory(study=study)
        for j in itertools.count():
            assignment = feedback_services.assignment_next(annotator=annotator, rng=rng)
            if assignment is None:
                break
            assert assignment.selector in (name, f"{name}:random")
            feedback_services.judgment_create(annotator=annotator, pair=assignment.pair, choice="a",
                                              client_key=f"{k}-{j}")
    rows = list(Assignment.objects.filter(pair__study=study).values_list("annotator_id", "pair_id"))
    assert len(rows) == len(set(rows))  # never a pair twice to one annotator
    for pair in Pair.objects.filter(study=study):
        assert pair.n_assigned <= 2 and pair.assignments.count() <= 2
    assert len(rows) == 16  # every slot filled: 8 pairs × overlap 2, 4 annotators' worth


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["uncertainty", "info_gain", "mixed"])
def test_without_an_active_model_they_fall_back_to_random(monkeypatch, name):
    study = make_study_with_pairs(5, overlap_target=1, selector=name)

    def no_pool(*args, **kwargs):
        raise AssertionError("no model: the pool must not be built")

    monkeypatch.setattr(active_learning, "pair_pool", no_pool)
    assert ModelVersion.objects.filter(study=study).count() == 0
    annotator = AnnotatorFactory(study=study)
    selector = get_selector(name)
    assert isinstance(selector, ModelSelector)
    assert sorted(selector.rank(annotator=annotator, limit=10)) == sorted(study.pairs.values_list("id", flat=True))
    assert selector.name == f"{name}:random"
    assignment = feedback_services.assignment_next(annotator=annotator)
    assert assignment is not None and assignment.selector == f"{name}:random"


@pytest.mark.django_db
def test_a_failed_or_queued_version_is_no_model(monkeypatch):
    study = make_study_with_pairs(3, selector="info_gain")
    ModelVersion.objects.create(study=study, kind="vpl", status="failed")
    ModelVersion.objects.create(study=study, kind="vpl", status="queued")
    monkeypatch.setattr(active_learning, "pair_pool", lambda *a: pytest.fail("no active model"))
    selector = get_selector("info_gain")
    assert len(selector.rank(annotator=AnnotatorFactory(study=study), limit=3)) == 3


@pytest.mark.django_db
def test_mixed_serves_a_share_of_random(fake_model, settings, monkeypatch):
    settings.CHORUS_AL_RANDOM_SHARE = 0.3
    study = make_study_with_pairs(8, overlap_target=3)
    fake_model.pool, _ = hand_pool_for(study)
    annotator = AnnotatorFactory(study=study)
    random_calls = 0
    real_rank = RandomSelector.rank

    def counting(self, *, annotator, limit):
        nonlocal random_calls
        random_calls += 1
        return real_rank(self, annotator=annotator, limit=limit)

    monkeypatch.setattr(RandomSelector, "rank", counting)
    random.seed(1234)
    n = 300
    names = []
    for _ in range(n):
        selector = SELECTORS["mixed"]()
        assert selector.random_share == 0.3
        selector.rank(annotator=annotator, limit=3)
        names.append(selector.name)
    assert names.count("mixed:random") == random_calls
    assert 0.2 < random_calls / n < 0.4  # binomial(300, 0.3): ± 4.5 standard deviations
    assert fake_model.pool_calls == n - random_calls
    # the pure model selectors never serve random while a model is active
    random_calls = 0
    for name in ("uncertainty", "info_gain"):
        for _ in range(50):
            SELECTORS[name]().rank(annotator=annotator, limit=3)
    assert random_calls == 0


# --------------------------------------------------------------------------------- with a real tiny model


@pytest.mark.django_db
def test_selectors_with_a_real_trained_model(style_study, settings):
    settings.CHORUS_FIT_EPOCHS = 2
    label_all(style_study, n_annotators=3, per_annotator=12)
    version = services.model_version_request(study=style_study, kind="vpl")
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.ACTIVE, version.error
    pool = active_learning.pair_pool(style_study.pk, version)
    assert len(pool.pair_ids) == 60 and pool.dg.shape == (60, 8)
    assert active_learning.pair_pool(style_study.pk, version) is pool  # cached per (study, version, n pairs)
    newcomer = AnnotatorFactory(study=style_study, profile={"gender": "female"})
    for name in ("uncertainty", "info_gain"):
        selector = get_selector(name)
        ranked = selector.rank(annotator=newcomer, limit=60)
        assert selector.name == name
        eligible = set(Pair.objects.filter(study=style_study, n_assigned__lt=10).values_list("id", flat=True))
        assert len(ranked) == len(set(ranked)) == len(eligible) and set(ranked) == eligible
        post = active_learning.annotator_posterior(newcomer, version)
        positions, found = pool.positions(ranked)
        s = score_pairs(pool, positions, post, selector.strategy)
        assert (s[:-1] >= s[1:] - 1e-6).all()  # best first
    # the study served by info_gain: constraints hold with a real model too
    style_study.selector = "info_gain"
    style_study.save(update_fields=["selector"])
    style_study.pairs_per_annotator = 5
    style_study.save(update_fields=["pairs_per_annotator"])
    for k in range(3):
        ann = AnnotatorFactory(study=style_study)
        for j in range(5):
            assignment = feedback_services.assignment_next(annotator=ann)
            assert assignment is not None and assignment.selector == "info_gain"
            feedback_services.judgment_create(annotator=ann, pair=assignment.pair, choice="b", client_key=f"r{k}{j}")
    rows = list(Assignment.objects.filter(pair__study=style_study).values_list("annotator_id", "pair_id"))
    assert len(rows) == len(set(rows))
    assert not Pair.objects.filter(study=style_study, n_assigned__gt=10).exists()
