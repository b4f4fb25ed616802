"""Tests of personalization.encoder with the real all-MiniLM-L6-v2 weights (CPU; one shared encoder)."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from personalization.encoder import (
    DEFAULT_MODEL_ID,
    EmbeddingCache,
    EncoderConfig,
    TextEncoder,
    _local_model_id,
    conversation_text,
    default_model_path,
    text_key,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir: Path) -> TextEncoder:
    return TextEncoder(EncoderConfig(device="cpu", batch_size=8, cache_dir=str(cache_dir)))


class ForwardCounter:
    """Counts forward passes of a model and the texts (rows) they saw, via a forward hook."""

    def __init__(self, model: torch.nn.Module):
        self.calls = 0
        self.texts = 0
        self._handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        self.calls += 1
        self.texts += int(kwargs["input_ids"].shape[0])

    def remove(self) -> None:
        self._handle.remove()


@pytest.fixture
def counter(encoder: TextEncoder) -> Iterator[ForwardCounter]:
    c = ForwardCounter(encoder.model)
    yield c
    c.remove()


def fresh(label: str) -> str:
    """A text no other test (or earlier run) has cached."""
    return f"{label} {uuid.uuid4().hex}"


def test_it_encodes_texts_to_unit_vectors(encoder: TextEncoder) -> None:
    texts = ["A short one.", "A somewhat longer sentence about cooking pasta at home.", "x" * 5000, ""]
    out = encoder.encode(texts)
    assert encoder.model_id == DEFAULT_MODEL_ID
    assert encoder.dim == 384
    assert out.shape == (4, 384)
    assert out.dtype == torch.float32
    assert out.device.type == "cpu"
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-3)


def test_it_returns_an_empty_matrix_for_no_texts(encoder: TextEncoder) -> None:
    assert encoder.encode([]).shape == (0, 384)


def test_it_rejects_a_bare_string_and_non_strings(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("not a list")
    with pytest.raises(TypeError):
        encoder.encode(["ok", 3])  # type: ignore[list-item]


def test_it_gives_identical_vectors_for_identical_texts(encoder: TextEncoder) -> None:
    text = fresh("The cat sat on the mat.")
    out = encoder.encode([text, "something else entirely", text])
    assert torch.equal(out[0], out[2])
    again = encoder.encode([text])
    assert torch.equal(again[0], out[0])


def test_it_does_not_depend_on_batch_composition(encoder: TextEncoder) -> None:
    a, b = fresh("Dogs are loyal."), fresh("Quarterly revenue grew by ten percent in the last fiscal year.")
    together = encoder.encode([a, b])  # a is padded in this batch
    alone = encoder._embed([a], progress=False)
    assert torch.allclose(together[0], alone[0], atol=2e-3)


def test_it_places_similar_sentences_closer_than_unrelated_ones(encoder: TextEncoder) -> None:
    a, b, c = encoder.encode(
        [
            "How do I bake a chocolate cake?",
            "What is a good recipe for chocolate cake?",
            "The central bank raised interest rates again.",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.3
    assert float(a @ b) > float(b @ c) + 0.3


def test_it_does_not_call_the_model_for_cache_hits(encoder: TextEncoder, counter: ForwardCounter) -> None:
    x, y = fresh("first"), fresh("second")
    first = encoder.encode([x, y, x, x])
    assert counter.calls == 1  # batch_size 8: one forward pass
    assert counter.texts == 2  # duplicates encoded once
    second = encoder.encode([y, x])
    assert counter.calls == 1
    assert torch.equal(second, first[[1, 0]])
    z = fresh("third")
    encoder.encode([x, z, y])
    assert counter.calls == 2
    assert counter.texts == 3  # only the miss


def test_it_batches_by_batch_size(encoder: TextEncoder, counter: ForwardCounter) -> None:
    texts = [fresh("t" * (i % 7)) for i in range(20)]
    encoder.encode(texts, progress=True)
    assert counter.calls == 3  # 8 + 8 + 4
    assert counter.texts == 20


def test_it_keeps_the_disk_cache_across_instances(encoder: TextEncoder, cache_dir: Path) -> None:
    texts = [fresh("persisted one"), fresh("persisted two")]
    before = encoder.encode(texts)
    shards = list((cache_dir / DEFAULT_MODEL_ID).glob("shard-*.safetensors"))
    assert shards
    other = TextEncoder(EncoderConfig(device="cpu", cache_dir=str(cache_dir)))
    assert len(other.cache) >= 2
    c = ForwardCounter(other.model)
    after = other.encode(texts)
    c.remove()
    assert c.calls == 0
    assert torch.equal(before, after)


def test_it_loads_a_local_model_path_with_a_stable_id(encoder: TextEncoder, tmp_path: Path) -> None:
    folder = tmp_path / "my-minilm"
    folder.mkdir()
    for f in encoder.model_dir.iterdir():
        if f.is_file():
            (folder / f.name).symlink_to(f)
    local = TextEncoder(EncoderConfig(model_path=str(folder), device="cpu"))
    assert local.model_id.startswith("my-minilm-")
    assert len(local.model_id) == len("my-minilm-") + 12
    assert local.model_id == _local_model_id(folder)
    text = "identical weights give identical embeddings"
    assert torch.allclose(local.encode([text]), encoder.encode([text]), atol=1e-6)


def test_it_rejects_a_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TextEncoder(EncoderConfig(model_path=str(tmp_path / "nope")))


def test_it_changes_the_local_model_id_with_the_weights(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"0" * 10)
    first = _local_model_id(folder)
    assert first == _local_model_id(folder)
    (folder / "model.safetensors").write_bytes(b"0" * 11)
    assert _local_model_id(folder) != first
    (folder / "config.json").write_text('{"hidden_size": 16}')
    assert len({first, _local_model_id(folder)}) == 2


def test_it_extracts_the_default_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(default_model_path(tmp_path))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    path = results[0]
    assert path == tmp_path / "models" / DEFAULT_MODEL_ID
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setenv("CHORUS_CACHE_DIR", str(tmp_path))
    assert default_model_path() == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [DEFAULT_MODEL_ID]  # no temp leftovers


def test_it_keys_texts_by_model_and_text() -> None:
    assert text_key("m", "hello") == hashlib.sha256(b"m\0hello").hexdigest()
    assert text_key("m", "hello") != text_key("n", "hello")
    assert text_key("ab", "c") != text_key("a", "bc")


def test_it_flattens_chat_prompts() -> None:
    assert conversation_text("plain") == "plain"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "tool", "content": "42"},
    ]
    assert conversation_text(messages) == "System: Be brief.\nUser: Hi\nAssistant: Hello\nTool: 42"
    bad_prompts: list[Any] = [[{"content": "x"}], [{"role": "user"}], ["x"], [{"role": "user", "content": 3}]]
    for bad in bad_prompts:
        with pytest.raises(ValueError):
            conversation_text(bad)


def _keys(n: int) -> list[str]:
    return [text_key("m", f"text {i} {uuid.uuid4()}") for i in range(n)]


def test_it_shares_the_cache_between_writers(tmp_path: Path) -> None:
    one, two = EmbeddingCache(str(tmp_path), "m", 4), EmbeddingCache(str(tmp_path), "m", 4)
    k1, k2 = _keys(3), _keys(2)
    v1, v2 = torch.randn(3, 4), torch.randn(2, 4)
    one.put_many(k1, v1)
    two.put_many(k2, v2)
    found, missing = one.get_many(k2 + ["f" * 64])  # a miss triggers a re-scan of the folder
    assert missing == ["f" * 64]
    assert torch.equal(torch.stack([found[k] for k in k2]), v2.half().float())
    reader = EmbeddingCache(str(tmp_path), "m", 4)
    assert len(reader) == 5
    shards = sorted((tmp_path / "m").glob("shard-*.safetensors"))
    assert len(shards) == 2
    with safe_open(str(shards[0]), framework="pt") as f:
        assert set(f.keys()) == {"keys", "vectors"}
        assert f.get_tensor("vectors").dtype == torch.float16
        assert f.metadata()["model_id"] == "m"


def test_it_stores_nothing_on_disk_without_a_cache_dir(tmp_path: Path) -> None:
    cache = EmbeddingCache(None, "m", 4)
    keys = _keys(2)
    cache.put_many(keys + keys[:1], torch.randn(3, 4))
    assert len(cache) == 2
    found, missing = cache.get_many(keys)
    assert set(found) == set(keys) and missing == []


def test_it_skips_corrupt_shards_and_compacts_many(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    writer = EmbeddingCache(str(tmp_path), "m", 4)
    keys = _keys(70)
    for k in keys:
        writer.put_many([k], torch.randn(1, 4))
    (tmp_path / "m" / "shard-0-corrupt.safetensors").write_bytes(b"not a safetensors file")
    reader = EmbeddingCache(str(tmp_path), "m", 4)
    assert len(reader) == 70
    assert "unreadable shard" in caplog.text
    assert len(list((tmp_path / "m").glob("shard-*.safetensors"))) == 1  # merged (corrupt one removed too)
    again = EmbeddingCache(str(tmp_path), "m", 4)
    found, missing = again.get_many(keys)
    assert not missing
    assert all(torch.equal(found[k], writer.get_many([k])[0][k]) for k in keys)


def test_it_validates_cache_input(tmp_path: Path) -> None:
    cache = EmbeddingCache(str(tmp_path), "m", 4)
    with pytest.raises(ValueError):
        cache.put_many(["not-a-key"], torch.randn(1, 4))
    with pytest.raises(ValueError):
        cache.put_many(_keys(2), torch.randn(2, 5))
    assert os.listdir(tmp_path / "m") == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_it_refuses_cuda_without_a_gpu() -> None:
    with pytest.raises(RuntimeError):
        TextEncoder(EncoderConfig(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_it_encodes_on_cuda_like_on_cpu(encoder: TextEncoder) -> None:
    gpu = TextEncoder(EncoderConfig(device="cuda"))
    assert gpu.device.type == "cuda"
    texts = ["A sentence on the GPU.", "Another, slightly longer sentence to encode with bf16 autocast."]
    out = gpu.encode(texts)
    assert out.device.type == "cpu" and out.dtype == torch.float32 and out.shape == (2, 384)
    cpu = encoder.encode(texts)
    assert torch.all((out * cpu).sum(dim=1) > 0.99)
