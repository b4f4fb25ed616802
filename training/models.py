from __future__ import annotations

import numpy as np
from django.db import models

from feedback.models import Annotator, Study


class TextEmbedding(models.Model):
    """One vector per distinct text and encoder — shared by every prompt/candidate with that text.

    float16 blobs keep a million 384-d vectors under 1 GB and load with one query per batch.
    """

    model_id = models.CharField(max_length=200)
    text_hash = models.CharField(max_length=64)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_id", "text_hash"], name="embedding_once_per_text")]

    def __str__(self) -> str:
        return f"{self.model_id}:{self.text_hash[:10]}"

    def as_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.vector), dtype=np.float16).astype(np.float32)


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        TRAINING = "training", "Training"
        READY = "ready", "Ready (not better than the active one)"
        ACTIVE = "active", "Active"
        FAILED = "failed", "Failed"
        RETIRED = "retired", "Retired"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="model_versions")
    kind = models.CharField(max_length=10)  # bt | vpl | pal
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # Held-out accuracy overall and per profile group, population vs personalized, sizes, fit time.
    metrics = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=500, blank=True, default="")
    # Judgments with id <= cutoff were available to this training.
    data_cutoff = models.BigIntegerField(default=0)
    n_train = models.PositiveIntegerField(default=0)
    n_heldout = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the training message was last handed to the broker (null: never, e.g. the broker was down);
    # the recovery sweep re-sends queued versions whose message is missing or long overdue.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Refreshed while training; a stale heartbeat means the worker died and the job may be re-claimed.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["study"], condition=models.Q(status="active"), name="one_active_model_per_study"
            )
        ]

    def __str__(self) -> str:
        return f"{self.study} {self.kind} v{self.pk} ({self.status})"


class AnnotatorPosterior(models.Model):
    """An annotator's belief state under one model version, updated online after each judgment."""

    annotator = models.ForeignKey(Annotator, on_delete=models.CASCADE, related_name="posteriors")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="posteriors")
    state = models.JSONField(default=dict)  # personalization.Posterior.to_dict()
    n_labels = models.PositiveIntegerField(default=0)
    # The newest judgment folded in: replays of an older update are no-ops (idempotent tasks).
    last_judgment_id = models.BigIntegerField(default=0)
    # Prequential: each label predicted before it was folded in.
    n_predicted = models.PositiveIntegerField(default=0)
    n_correct = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["annotator", "model_version"], name="posterior_once_per_version")
        ]

    def __str__(self) -> str:
        return f"{self.annotator} @ {self.model_version_id}"

    @property
    def accuracy(self) -> float | None:
        return self.n_correct / self.n_predicted if self.n_predicted else None
