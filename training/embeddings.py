"""Vectors for every prompt and candidate text, stored once per distinct text (TextEmbedding)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import numpy as np
from django.conf import settings

from feedback.models import Candidate, Prompt, text_hash
from personalization.encoder import EncoderConfig, TextEncoder, conversation_text
from training.models import TextEmbedding

log = logging.getLogger(__name__)
ENCODE_BATCH = 256  # texts per database round trip while embedding a study


@functools.cache
def get_encoder() -> TextEncoder:
    """One encoder per process: loading weights takes a second, encoding is the worker's job."""
    return TextEncoder(
        EncoderConfig(
            model_path=settings.CHORUS_ENCODER_PATH or None,
            device=settings.CHORUS_ENCODER_DEVICE,
            batch_size=settings.CHORUS_ENCODER_BATCH_SIZE,
        )
    )


def prompt_text(prompt: Prompt) -> str:
    # The model conditions on the whole conversation, not just the final user turn.
    return conversation_text(prompt.as_messages())


def study_texts(study_id: int) -> dict[str, str]:
    """hash -> text for every prompt conversation and candidate of a study."""
    texts: dict[str, str] = {}
    for prompt in Prompt.objects.filter(study_id=study_id).only("context", "text").iterator(chunk_size=2000):
        t = prompt_text(prompt)
        texts[text_hash(t)] = t
    for h, t in Candidate.objects.filter(prompt__study_id=study_id).values_list("text_hash", "text").iterator(
        chunk_size=2000
    ):
        texts[h] = t
    return texts


def embed_texts(texts: dict[str, str], *, encoder: TextEncoder | None = None) -> int:
    """Encode and store the texts that have no vector yet; returns how many were new."""
    encoder = encoder or get_encoder()
    hashes = list(texts)
    have: set[str] = set()
    for i in range(0, len(hashes), 5000):
        have.update(
            TextEmbedding.objects.filter(model_id=encoder.model_id, text_hash__in=hashes[i : i + 5000]).values_list(
                "text_hash", flat=True
            )
        )
    missing = [h for h in hashes if h not in have]
    for i in range(0, len(missing), ENCODE_BATCH):
        chunk = missing[i : i + ENCODE_BATCH]
        vectors = encoder.encode([texts[h] for h in chunk]).numpy().astype(np.float16)
        # ignore_conflicts: two workers embedding overlapping studies both succeed.
        TextEmbedding.objects.bulk_create(
            [
                TextEmbedding(model_id=encoder.model_id, text_hash=h, dim=vectors.shape[1], vector=vectors[j].tobytes())
                for j, h in enumerate(chunk)
            ],
            ignore_conflicts=True,
        )
    if missing:
        log.info("embedded %d new texts with %s", len(missing), encoder.model_id)
    return len(missing)


def embed_study(study_id: int) -> int:
    return embed_texts(study_texts(study_id))


def load_vectors(hashes: Iterable[str], *, model_id: str | None = None) -> dict[str, np.ndarray]:
    """hash -> float32 vector for the hashes that have one (texts not embedded yet are absent)."""
    model_id = model_id or get_encoder().model_id
    wanted = list(dict.fromkeys(hashes))
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(wanted), 5000):
        for h, blob in TextEmbedding.objects.filter(model_id=model_id, text_hash__in=wanted[i : i + 5000]).values_list(
            "text_hash", "vector"
        ):
            out[h] = np.frombuffer(bytes(blob), dtype=np.float16).astype(np.float32)
    return out


def ensure_vectors(texts: dict[str, str]) -> dict[str, np.ndarray]:
    """Vectors for these texts, encoding (and storing) any that are missing — for small, urgent sets."""
    vectors = load_vectors(texts)
    missing = {h: t for h, t in texts.items() if h not in vectors}
    if missing:
        embed_texts(missing)
        vectors.update(load_vectors(missing))
    return vectors
