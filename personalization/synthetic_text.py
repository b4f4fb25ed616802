"""Text with controlled, visible attributes, and the populations that judge it (pure Python, no Django).

Short generated responses whose length, caution (hedging), humour and markdown are set by construction
(``synthetic_response``; ``synthetic_study_lines`` writes them as import rows carrying the attributes as
metadata), the same attributes measured from any text (``text_attributes``), and the population presets
over them (``pluralistic``, ``opposite``: ``personalization.synthetic.Population`` with named types).
Used by the app's simulation protocol (benchmarks/simulation_protocol.py) and the text benchmark.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any

from personalization.synthetic import Population, UserType

ATTRIBUTES: tuple[str, ...] = ("length", "caution", "humor", "markdown")

# ---------------------------------------------------------------------------------------------------
# Visible attributes of a response
# ---------------------------------------------------------------------------------------------------
_LENGTH_CODES = {"short": 0.0, "medium": 1.0, "long": 2.0}
_HEDGES = re.compile(
    r"\b(might|may|perhaps|possibly|probably|consult|careful|caution|unsure|not sure|depends|risks?|"
    r"safety|professional|however|although|please check)\b",
    re.IGNORECASE,
)
_HUMOR = re.compile(r"(!|\bhaha\b|\blol\b|\bjoke\b|\bfun fact\b|[\U0001F600-\U0001F64F])", re.IGNORECASE)
_MARKDOWN = re.compile(r"(^\s*[-*+] |^\s*\d+\. |^#+ |\*\*|`)", re.MULTILINE)


def text_attributes(text: str) -> dict[str, float]:
    """Attributes measurable from any text (used when a study's candidates carry no metadata)."""
    return {
        "length": math.log1p(len(text)),
        "caution": float(len(_HEDGES.findall(text))),
        "humor": float(len(_HUMOR.findall(text))),
        "markdown": float(len(_MARKDOWN.findall(text))),
    }


def metadata_attribute(metadata: dict[str, Any], name: str) -> float | None:
    value = (metadata or {}).get(name)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if name == "length" and isinstance(value, str):
        return _LENGTH_CODES.get(value.strip().lower())
    return None


# ---------------------------------------------------------------------------------------------------
# Populations over these attributes
# ---------------------------------------------------------------------------------------------------
def pluralistic(label_scale: float = 1.0) -> Population:
    """Four types who disagree: concise vs thorough on length, playful vs careful on humour and caution.

    Demographics are correlated with the type, not determined by it (half the answers are the type's
    typical value, the rest drawn at random), people of a type differ (individual spread 30% of the type's
    weight norm), and the stated-preference sliders are a weak, noisy echo of the true weights: the
    profile gets a new annotator part of the way, and only their labels can tell the rest.
    """
    types = [
        UserType("concise", {"length": -2.0, "markdown": -0.5, "caution": -0.5}, 0.35,
                 {"age": "25-34", "gender": "male", "reside_country": "US", "lm_frequency_use": "every-day",
                  "education": "bachelors", "employment_status": "full-time"}),
        UserType("thorough", {"length": 1.5, "markdown": 1.2, "caution": 0.5}, 0.30,
                 {"age": "45-54", "gender": "female", "reside_country": "DE", "lm_frequency_use": "every-week",
                  "education": "graduate", "employment_status": "full-time"}),
        UserType("playful", {"humor": 2.0, "caution": -1.0, "length": -0.3}, 0.20,
                 {"age": "18-24", "gender": "non-binary", "reside_country": "BR", "lm_frequency_use": "every-day",
                  "education": "some-university", "employment_status": "student"}),
        UserType("careful", {"caution": 2.0, "humor": -1.0, "markdown": 0.3}, 0.15,
                 {"age": "65+", "gender": "female", "reside_country": "GB", "lm_frequency_use": "less-than-monthly",
                  "education": "completed-secondary", "employment_status": "retired"}),
    ]
    return Population.of_types(types, ATTRIBUTES, label_scale=label_scale, individual_std=0.3, profile_signal=0.5,
                               slider_signal=8.0, slider_noise=15.0, name="pluralistic")


def opposite(label_scale: float = 1.5) -> Population:
    """Two types with opposite tastes on length; the short-answer type is the minority (30%)."""
    types = [
        UserType("long", {"length": 2.0}, 0.7, {"gender": "female", "age": "45-54"}),
        UserType("short", {"length": -2.0}, 0.3, {"gender": "male", "age": "18-24"}),
    ]
    return Population.of_types(types, ATTRIBUTES, label_scale=label_scale, name="opposite")


POPULATIONS: dict[str, Callable[..., Population]] = {"pluralistic": pluralistic, "opposite": opposite}


# ---------------------------------------------------------------------------------------------------
# A content source with controlled attributes (short texts: fast to embed)
# ---------------------------------------------------------------------------------------------------
TOPICS = [
    "brewing green tea", "training for a 5k", "keeping a budget", "sleeping better", "learning chess",
    "growing tomatoes", "baking sourdough", "commuting by train", "kayaking on rivers", "learning guitar",
    "writing a CV", "saving for retirement", "cooking rice", "learning Spanish", "cleaning a laptop",
    "caring for a cat", "walking a puppy", "planning a wedding", "fixing a bike puncture", "reading more books",
    "meditating daily", "starting a podcast", "painting a room", "buying a used car", "making coffee",
    "hiking in the rain", "negotiating a salary", "composting at home", "learning to swim", "drawing portraits",
    "packing for a trip", "hosting a dinner", "studying for exams", "running a meeting", "choosing a laptop",
    "repotting a plant", "writing a poem", "learning to code", "stretching after work", "decluttering a flat",
    "making pancakes", "planting a hedge", "birdwatching", "learning to juggle", "brewing kombucha",
    "ironing shirts", "sharpening knives", "camping with kids", "recording a song", "tidying email",
    "building a bookshelf", "learning to knit", "cycling to work", "feeding a sourdough starter", "making jam",
    "writing thank-you notes", "organising photos", "picking a running shoe", "fixing a squeaky door",
    "planning a garden",
]
_CORE = [
    "The key to {t} is consistency.",
    "Start small with {t} and build up step by step.",
    "Most people get comfortable with {t} within a few weeks.",
    "Keep notes on what works for you and adjust as you go.",
    "The common mistakes with {t} are rushing and skipping the basics.",
    "A short daily routine beats an occasional long session.",
]
_CAUTION = [
    "That said, results may vary.",
    "Please be careful, and check with someone experienced if you are unsure.",
    "I might be wrong here, so consult a professional before relying on this; safety first.",
]
_HUMOR_LINES = [
    "Fun fact: even the experts were beginners once!",
    "Haha, don't worry, nobody gets {t} right on day one!",
    "Joke time: {t} is like a cat, it ignores you until you bring snacks! 😄",
]


def synthetic_response(topic: str, length: int, caution: int, humor: int, markdown: int, variant: int = 0) -> str:
    n_core = (1, 3, 5)[length]
    core = [_CORE[(variant + i) % len(_CORE)].format(t=topic) for i in range(n_core)]
    lines = core + [_CAUTION[i].format(t=topic) for i in range(caution)]
    lines += [_HUMOR_LINES[i].format(t=topic) for i in range(humor)]
    if markdown:
        return f"**{topic.capitalize()}**\n" + "\n".join(f"- {s}" for s in lines)
    return " ".join(lines)


def synthetic_study_lines(n_prompts: int = 60, responses: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Import rows ("responses" format) whose responses carry their attributes as metadata."""
    rng = random.Random(seed)
    combos = [(ln, c, h, m) for ln in range(3) for c in range(4) for h in range(4) for m in range(2)]
    rows = []
    for i in range(n_prompts):
        topic = TOPICS[i % len(TOPICS)] + ("" if i < len(TOPICS) else f" (part {i // len(TOPICS) + 1})")
        chosen = rng.sample(combos, responses)
        resp = []
        for k, (ln, c, h, m) in enumerate(chosen):
            resp.append({
                "text": synthetic_response(topic, ln, c, h, m, variant=rng.randrange(len(_CORE))),
                "model": f"Sim-{k % 5 + 1}",
                "metadata": {"length": ("short", "medium", "long")[ln], "caution": c, "humor": h, "markdown": bool(m)},
            })
        rows.append({"prompt": f"Any advice on {topic}?", "responses": resp})
    return rows
