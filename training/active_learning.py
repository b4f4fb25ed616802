"""Active learning: rank the pairs that tell us most about *this* annotator.

The expensive part — running the reward network over every pair of the study — depends only on the
model version, so it is computed once per (study, version) and cached in the process: the network's
per-pair deltas (db, dg) make any user's logit mean/variance a small matrix product. Ranking then
costs O(N·L²) per request, a few ms for 10k pairs on a CPU.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import numpy as np
import torch
from django.conf import settings

from feedback.models import Annotator, Pair, text_hash
from feedback.selection import RandomSelector, eligible_pairs
from personalization.models.posterior import bald, binary_entropy, logit_moments, probit_proba
from training.embeddings import load_vectors, prompt_text
from training.models import ModelVersion
from training.selectors import active_version, annotator_posterior, load_version_model


@dataclass
class PairPool:
    pair_ids: np.ndarray  # (N,) ids of the study's pairs whose texts are embedded
    db: torch.Tensor  # (N,) base logit of a over b
    dg: torch.Tensor  # (N, L) latent basis difference
    link: str

    def positions(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the pool, the ids found) for the given pair ids."""
        wanted = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.pair_ids, wanted)
        pos = np.clip(pos, 0, max(len(self.pair_ids) - 1, 0))
        ok = (self.pair_ids[pos] == wanted) if len(self.pair_ids) else np.zeros(len(wanted), bool)
        return pos[ok], wanted[ok]


_pools: dict[tuple[int, int, int], PairPool] = {}
_lock = threading.Lock()


def pair_pool(study_id: int, version: ModelVersion) -> PairPool:
    n_pairs = Pair.objects.filter(study_id=study_id).count()
    key = (study_id, version.pk, n_pairs)
    with _lock:
        pool = _pools.get(key)
    if pool is not None:
        return pool
    model = load_version_model(version)
    rows = list(
        Pair.objects.filter(study_id=study_id)
        .order_by("id")
        .values_list("id", "prompt__context", "prompt__text", "candidate_a__text_hash", "candidate_b__text_hash")
    )
    prompt_hashes = []
    for _, ctx, text, _, _ in rows:
        from feedback.models import Prompt

        prompt_hashes.append(text_hash(prompt_text(Prompt(context=ctx, text=text))))
    vectors = load_vectors(prompt_hashes + [r[3] for r in rows] + [r[4] for r in rows])
    keep = [i for i, r in enumerate(rows) if prompt_hashes[i] in vectors and r[3] in vectors and r[4] in vectors]
    if keep:
        P = torch.from_numpy(np.stack([vectors[prompt_hashes[i]] for i in keep]))
        A = torch.from_numpy(np.stack([vectors[rows[i][3]] for i in keep]))
        B = torch.from_numpy(np.stack([vectors[rows[i][4]] for i in keep]))
        with torch.no_grad():
            db, dg = model._deltas_chunked(P, A, B)
    else:
        db, dg = torch.zeros(0), torch.zeros(0, model.latent_dim)
    pool = PairPool(np.asarray([rows[i][0] for i in keep], dtype=np.int64), db.float(), dg.float(), model.link)
    with _lock:
        # Keep only the newest pool per study: old versions are never asked again.
        for k in [k for k in _pools if k[0] == study_id]:
            del _pools[k]
        _pools[key] = pool
    return pool


def score_pairs(pool: PairPool, positions: np.ndarray, post, strategy: str) -> torch.Tensor:
    idx = torch.from_numpy(positions)
    m, s2 = logit_moments(post, pool.db[idx], pool.dg[idx], pool.link)
    if strategy == "uncertainty":
        return binary_entropy(probit_proba(m, s2))
    return bald(m, s2)


class ModelSelector:
    """Ranks eligible pairs by this annotator's predictive entropy or by BALD information gain.

    Constraints are the shared ones: only eligible pairs (free overlap slot, not seen by them) are
    ranked. Without an active model (study just started) it behaves like the random selector.
    """

    def __init__(self, name: str, strategy: str, random_share: float = 0.0):
        self.base_name = name
        # What the assignment records (Assignment.selector): "<name>:random" when this request was served
        # overlap-balanced random (the mixed share, or no model yet), so analyses can keep those apart.
        self.name = name
        self.strategy = strategy  # "uncertainty" | "info_gain"
        self.random_share = random_share  # share of requests served overlap-balanced random

    def _random(self, annotator: Annotator, limit: int) -> list[int]:
        self.name = f"{self.base_name}:random"
        return RandomSelector().rank(annotator=annotator, limit=limit)

    def rank(self, *, annotator: Annotator, limit: int) -> list[int]:
        self.name = self.base_name
        if self.random_share and random.random() < self.random_share:
            return self._random(annotator, limit)
        version = active_version(annotator.study_id)
        if version is None:
            return self._random(annotator, limit)
        pool = pair_pool(annotator.study_id, version)
        ids = list(eligible_pairs(annotator).values_list("id", flat=True))
        positions, found = pool.positions(ids)
        if len(found) == 0:
            return self._random(annotator, limit)
        post = annotator_posterior(annotator, version)
        scores = score_pairs(pool, positions, post, self.strategy)
        k = min(limit, len(found))
        top = torch.topk(scores, k).indices.numpy()
        ranked = [int(found[i]) for i in top]
        # Pairs not embedded yet still get served, after the scored ones.
        if len(ranked) < limit:
            seen = set(found.tolist())
            ranked += [i for i in ids if i not in seen][: limit - len(ranked)]
        return ranked


SELECTORS = {
    "uncertainty": lambda: ModelSelector("uncertainty", "uncertainty"),
    "info_gain": lambda: ModelSelector("info_gain", "info_gain"),
    # Keeps a share of overlap-balanced random pairs so population statistics stay unbiased.
    "mixed": lambda: ModelSelector("mixed", "info_gain", random_share=settings.CHORUS_AL_RANDOM_SHARE),
}
