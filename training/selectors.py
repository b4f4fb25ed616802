"""Reads of the training domain: the active model version, per-user posteriors, predictions, dashboards.

Writes (retraining, posterior updates) live in training/services.py. HTML views and the API both read
through here, so the API never imports an HTML view module.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from django.core.cache import cache
from django.db.models import Count, Max

from feedback.models import Annotator, Judgment, Profile, Study, text_hash
from feedback.profile_schema import groupable_fields
from personalization import Posterior, load_model
from training.embeddings import ensure_vectors, prompt_text
from training.models import AnnotatorPosterior, ModelVersion

log = logging.getLogger(__name__)
DEFAULT_GROUP_BY = "gender"
# The dashboard's cache key changes with its inputs (_fingerprint); this only bounds a stale entry's life.
CACHE_SECONDS = 600


def active_version(study_id: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(study_id=study_id, status=ModelVersion.Status.ACTIVE).first()


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime: float):
    model = load_model(path)
    model.eval()
    return model


def load_version_model(version: ModelVersion):
    path = Path(version.artifact_path)
    return _load_cached(str(path), path.stat().st_mtime)


def annotator_posterior(annotator: Annotator, version: ModelVersion) -> Posterior:
    """The annotator's current posterior (stored), or the profile prior if they have none yet."""
    stored = AnnotatorPosterior.objects.filter(annotator=annotator, model_version=version).first()
    if stored is not None:
        return Posterior.from_dict(stored.state)
    model = load_version_model(version)
    profile = annotator.profile.data if hasattr(annotator, "profile") else None
    return model.prior(profile)


def predict_for_annotator(*, annotator: Annotator, candidate_a, candidate_b) -> dict[str, Any]:
    version = active_version(annotator.study_id)
    if version is None:
        raise LookupError("no trained model for this study yet")
    if candidate_a.prompt_id != candidate_b.prompt_id:
        raise ValueError("both candidates must answer the same prompt")
    model = load_version_model(version)
    post = annotator_posterior(annotator, version)
    prompt = candidate_a.prompt
    pt = prompt_text(prompt)
    vecs = ensure_vectors({text_hash(pt): pt, candidate_a.text_hash: candidate_a.text, candidate_b.text_hash: candidate_b.text})
    p = torch.from_numpy(vecs[text_hash(pt)]).unsqueeze(0)
    a = torch.from_numpy(vecs[candidate_a.text_hash]).unsqueeze(0)
    b = torch.from_numpy(vecs[candidate_b.text_hash]).unsqueeze(0)
    prob, std = model.predict_proba(post, p, a, b)
    return {"p_a": float(prob[0]), "std": float(std[0]), "model_version": version.pk, "n_labels": post.n_labels}


def _fingerprint(study: Study) -> tuple:
    """Changes whenever anything the dashboard shows can have changed (judgments, profiles, models)."""
    version = active_version(study.pk)
    judgments = Judgment.objects.filter(pair__study=study).aggregate(n=Count("id"), last=Max("id"))
    profiles = Profile.objects.filter(annotator__study=study).aggregate(n=Count("id"), last=Max("updated_at"))
    posteriors = (
        AnnotatorPosterior.objects.filter(model_version=version).aggregate(n=Count("id"), last=Max("updated_at"))
        if version
        else {}
    )
    n_annotators = Annotator.objects.filter(study=study).count()
    return (
        study.created_at.isoformat(),
        judgments["n"], judgments["last"], profiles["n"], str(profiles["last"]), n_annotators,
        version.pk if version else None, posteriors.get("n"), str(posteriors.get("last")), study.overlap_target,
    )


def dashboard_data(study: Study, group_by: str) -> dict[str, Any]:
    """study_dashboard, cached until something it depends on changes (live pages re-fetch often)."""
    if group_by not in groupable_fields():
        raise ValueError(f"cannot group by {group_by!r}; choose one of {groupable_fields()}")
    digest = hashlib.sha256(repr(_fingerprint(study)).encode()).hexdigest()[:32]
    key = f"chorus:dashboard:{study.pk}:{group_by}:{digest}"
    try:
        data = cache.get(key)
    except Exception:  # Redis (cache and broker) down: compute instead of failing the page
        log.warning("dashboard cache unavailable", exc_info=True)
        data = None
    if data is None:
        # Imported here: training.dashboard reads the active model through this module.
        from training.dashboard import study_dashboard

        data = study_dashboard(study, group_by)
        try:
            cache.set(key, data, CACHE_SECONDS)
        except Exception:
            log.warning("dashboard cache unavailable", exc_info=True)
    return data
