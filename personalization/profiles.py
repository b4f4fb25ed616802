"""Annotator profiles (PRISM-style survey answers) → fixed-length feature vectors.

A profile is a dict of fields: categorical strings ("age": "25-34", "reside_country": "GB"), lists of
strings (multi-choice), dicts of numbers (``stated_prefs``: eight 1–100 sliders) or plain numbers.
The vocabulary is fitted on the training profiles and saved with the model (``to_dict``/``from_dict``),
so unseen values, missing fields and "prefer not to say" all map to well-defined features:

* categorical: one-hot over the fitted vocabulary plus an ``<unk>`` slot (seen-but-rare or new value);
  missing / prefer-not-to-say gives all zeros and sets the field's ``<missing>`` indicator.
* multi: multi-hot over the vocabulary; missing sets the ``<missing>`` indicator.
* numeric (also each slider): standardised with the training mean/std; missing gives 0 and sets the
  indicator.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

# Values that mean "no answer" (compared case-insensitively after stripping).
MISSING_VALUES = frozenset(
    {"", "prefer-not-to-say", "prefer not to say", "prefer_not_to_say", "n/a", "na", "none", "null", "unknown"}
)
# Keys that never become features.
IGNORED_KEYS = frozenset({"user_id", "id", "annotator_id"})

# PRISM's eight stated-preference sliders (``stated_prefs``), in the order of feedback.profile_schema.STATED_PREFS.
STATED_PREF_CODES: tuple[str, ...] = (
    "values", "creativity", "fluency", "factuality", "diversity", "safety", "personalisation", "helpfulness",
)
# THE mapping from a stated preference to the visible response attribute (Candidate.metadata key, or
# "key:value" for a categorical one) that reveals it, and the direction: +1 means someone who rates the
# slider high should prefer MORE of the attribute, −1 less ("directly answering my request": shorter
# answers). The dashboard's stated-vs-revealed table reads revealed preferences through it, and simulated
# annotators' sliders echo their weights through it (personalization.synthetic), so the two cannot disagree.
STATED_PREF_ATTRIBUTES: dict[str, tuple[str, float]] = {
    "safety": ("caution", 1.0),
    "creativity": ("humor", 1.0),
    "diversity": ("stance:balanced", 1.0),
    "factuality": ("accuracy:ok", 1.0),
    "fluency": ("markdown", 1.0),
    "helpfulness": ("length", -1.0),
}


@dataclass
class ProfileConfig:
    min_count: int = 2  # a categorical value needs this many training profiles to get its own slot
    max_categories: int = 64  # most frequent values kept per categorical field
    max_unique_ratio: float = 0.5  # fields whose values are mostly unique (free text) are dropped


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip().lower() in MISSING_VALUES:
        return True
    if isinstance(value, list | tuple | dict) and len(value) == 0:
        return True
    return False


def _flatten(profile: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested dicts of numbers/strings become dotted keys: {"stated_prefs": {"safety": 80}} → stated_prefs.safety."""
    out: dict[str, Any] = {}
    for key, value in (profile or {}).items():
        if not prefix and key in IGNORED_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def _norm_str(value: Any) -> str:
    return str(value).strip().lower()


@dataclass
class _Field:
    name: str  # dotted field name
    kind: str  # "cat" | "multi" | "num"
    vocab: list[str] = field(default_factory=list)  # categories (cat/multi)
    mean: float = 0.0  # numeric mean
    std: float = 1.0  # numeric std

    @property
    def width(self) -> int:
        if self.kind == "cat":
            return len(self.vocab) + 2  # values + <unk> + <missing>
        if self.kind == "multi":
            return len(self.vocab) + 1  # values + <missing>
        return 2  # value + <missing>


class ProfileEncoder:
    """Turns profile dicts into float vectors; fit on training profiles, then ``transform``."""

    def __init__(self, fields: list[_Field] | None = None, config: ProfileConfig | None = None):
        self.fields: list[_Field] = fields or []
        self.config = config or ProfileConfig()

    @property
    def dim(self) -> int:
        return sum(f.width for f in self.fields)

    def fit(self, profiles: Iterable[Mapping[str, Any] | None]) -> ProfileEncoder:
        flat = [_flatten(p) for p in profiles]
        names = sorted({k for p in flat for k in p})
        fields: list[_Field] = []
        for name in names:
            values = [p[name] for p in flat if name in p and not _is_missing(p[name])]
            if not values:
                continue
            numbers = [_as_number(v) for v in values]
            if all(n is not None for n in numbers):
                nums = [float(n) for n in numbers if n is not None]
                mean = sum(nums) / len(nums)
                var = sum((n - mean) ** 2 for n in nums) / max(len(nums) - 1, 1)
                fields.append(_Field(name, "num", mean=mean, std=math.sqrt(var) if var > 0 else 1.0))
                continue
            if all(isinstance(v, list | tuple) for v in values):
                counts = Counter(_norm_str(x) for v in values for x in v if not _is_missing(x))
                kind = "multi"
            else:
                strs = [_norm_str(v) for v in values]
                if len(strs) >= 10 and len(set(strs)) / len(strs) > self.config.max_unique_ratio:
                    continue  # free text: no signal a vocabulary could capture
                counts = Counter(strs)
                kind = "cat"
            vocab = [v for v, c in counts.most_common(self.config.max_categories) if c >= self.config.min_count]
            if vocab:
                fields.append(_Field(name, kind, vocab=sorted(vocab)))
        self.fields = fields
        return self

    def transform_one(self, profile: Mapping[str, Any] | None) -> torch.Tensor:
        flat = _flatten(profile)
        out = torch.zeros(self.dim)
        offset = 0
        for f in self.fields:
            value = flat.get(f.name)
            missing = _is_missing(value)
            if f.kind == "num":
                number = None if missing else _as_number(value)
                if number is None:
                    out[offset + 1] = 1.0
                else:
                    out[offset] = (number - f.mean) / f.std
            elif f.kind == "cat":
                if missing:
                    out[offset + len(f.vocab) + 1] = 1.0
                else:
                    key = _norm_str(value)
                    idx = f.vocab.index(key) if key in f.vocab else len(f.vocab)
                    out[offset + idx] = 1.0
            else:
                items = value if isinstance(value, list | tuple) else [value]
                if missing:
                    out[offset + len(f.vocab)] = 1.0
                for item in items if not missing else []:
                    key = _norm_str(item)
                    if key in f.vocab:
                        out[offset + f.vocab.index(key)] = 1.0
            offset += f.width
        return out

    def transform(self, profiles: Iterable[Mapping[str, Any] | None]) -> torch.Tensor:
        rows = [self.transform_one(p) for p in profiles]
        return torch.stack(rows) if rows else torch.zeros(0, self.dim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": vars(self.config).copy(),
            "fields": [
                {"name": f.name, "kind": f.kind, "vocab": f.vocab, "mean": f.mean, "std": f.std}
                for f in self.fields
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileEncoder:
        fields = [_Field(**f) for f in data.get("fields", [])]
        return cls(fields, ProfileConfig(**data.get("config", {})))
