"""Shared fixtures: small synthetic preference data and a tiny random BERT text encoder on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from personalization.train import FitConfig, PreferenceData

DIM = 16


def make_data(n_users: int = 12, per_user: int = 30, dim: int = DIM, seed: int = 0):
    """Two user types with opposite tastes along one direction; profiles say which type."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)
    types = torch.arange(n_users) % 2
    user = torch.arange(n_users).repeat_interleave(per_user)
    n = len(user)
    p = torch.randn(n, dim, generator=g)
    a = torch.randn(n, dim, generator=g)
    b = torch.randn(n, dim, generator=g)
    sign = (types[user] * 2 - 1).float()
    a_wins = ((a - b) @ direction * sign * 4) > 0
    c = torch.where(a_wins[:, None], a, b)
    r = torch.where(a_wins[:, None], b, a)
    ids = [f"u{i}" for i in range(n_users)]
    profiles = {ids[i]: {"age": ["18-24", "65+"][int(types[i])], "gender": "female"} for i in range(n_users)}
    return PreferenceData(user, p, c, r, ids), profiles, direction, types


def small_config(**kw) -> FitConfig:
    base = dict(epochs=3, hidden=[16], latent_dim=3, encoder_hidden=16, pal_dim=8, profile_hidden=8,
                batch_size=64, users_per_batch=8, targets=8, context_max=8, progress=False)
    base.update(kw)
    return FitConfig.from_dict(base)  # the model's settings (hidden, latent_dim …) go into FitConfig.model


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BertModel + WordPiece tokenizer saved like a Hugging Face model folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = ("the a an is are was good bad dog cat fast slow short long answer question please help me you "
             "i like it this that to of and or not very cats dogs prefer response hello world").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
