"""Label the demo study with simulated annotators and train its reward model (a living dashboard).

    python manage.py seed_demo_labels [--study demo] [--annotators 24] [--labels 8] [--kind vpl]

Idempotent: a study that already has judgments is left alone. Simulated annotators join, consent and
answer a PRISM profile whose demographics go with their taste, then label through feedback.services
(so every hook runs), the texts are embedded and a model is trained — a newcomer opening the dashboard
sees groups, leaderboards, a latent map and downloadable models at once.

Tastes, over the demo responses' metadata (see feedback/demo/demo_study.jsonl):
  concise      short, plain, blunt answers (what Aster-7B writes)         mostly men, 25–34, US, daily users
  thorough     long, cautious, markdown answers (Bramble-13B)            mostly women, 55–64, GB, rare users
  playful      humour (Cobalt-Chat)                                      mostly non-binary, 18–24, BR, students
  opinionated  answers that take a side (Dune-70B)                       mostly men, 35–44, DE, weekly users
plus one careless annotator who always clicks the left answer within a second (the quality flags).
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q
from django.test.utils import override_settings

from feedback import services as fs
from feedback.models import Annotator, Candidate, Judgment, Pair, Study
from personalization.synthetic import Population, UserType
from training import services as ts
from training.embeddings import embed_study
from training.models import ModelVersion

ATTRIBUTES = ("length", "caution", "humor", "markdown", "opinionated", "blunt")
_LENGTH = {"short": 0.0, "medium": 1.0, "long": 2.0}


def candidate_attributes(meta: dict[str, Any]) -> list[float]:
    return [
        _LENGTH.get(str(meta.get("length", "medium")), 1.0),
        float(meta.get("caution") or 0),
        float(meta.get("humor") or 0),
        float(bool(meta.get("markdown"))),
        float(meta.get("stance") == "takes-a-side"),
        float(meta.get("tone") == "blunt"),
    ]


def demo_population() -> Population:
    types = [
        UserType("concise", {"length": -2.0, "markdown": -0.8, "caution": -0.6, "blunt": 0.8}, 0.30,
                 {"gender": "male", "age": "25-34", "reside_country": "US", "lm_frequency_use": "every-day",
                  "education": "bachelors", "employment_status": "full-time"}),
        UserType("thorough", {"length": 1.5, "caution": 1.2, "markdown": 1.4}, 0.30,
                 {"gender": "female", "age": "55-64", "reside_country": "GB", "lm_frequency_use": "less-than-monthly",
                  "education": "graduate", "employment_status": "retired"}),
        UserType("playful", {"humor": 2.2, "caution": -0.8}, 0.20,
                 {"gender": "non-binary", "age": "18-24", "reside_country": "BR", "lm_frequency_use": "every-day",
                  "education": "some-university", "employment_status": "student"}),
        UserType("opinionated", {"opinionated": 2.0, "caution": -1.0, "length": -0.3}, 0.20,
                 {"gender": "male", "age": "35-44", "reside_country": "DE", "lm_frequency_use": "every-week",
                  "education": "vocational", "employment_status": "part-time"}),
    ]
    return Population.of_types(types, ATTRIBUTES, label_scale=2.0, individual_std=0.15, profile_signal=0.85,
                               name="demo")


class Command(BaseCommand):
    help = "Label the demo study with simulated annotators (with profiles) and train its model; safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", default="demo", help="slug (or id) of the study to label")
        parser.add_argument("--annotators", type=int, default=24, help="simulated annotators")
        parser.add_argument("--labels", type=int, default=8, help="judgments per annotator (at most the study's quota)")
        parser.add_argument("--kind", default="vpl", choices=ts.MODEL_KINDS, help="reward model to train")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options) -> None:
        started = time.perf_counter()
        ident = options["study"]
        study = Study.objects.filter(Q(slug=ident) | Q(pk=int(ident)) if ident.isdigit() else Q(slug=ident)).first()
        if study is None:
            raise CommandError(f"no study {ident!r}: run `manage.py seed_demo` first")
        existing = Judgment.objects.filter(pair__study=study).count()
        if existing:
            self.stdout.write(f"“{study.name}” already has {existing} judgments; nothing to do.")
            return
        if not Pair.objects.filter(study=study).exists():
            raise CommandError(f"“{study.name}” has no pairs to label")
        if not study.is_open():
            raise CommandError(f"“{study.name}” is {study.status}; activate it first")

        self.stdout.write("Embedding the study's texts …")
        embed_study(study.pk)

        rng = random.Random(options["seed"])
        pop = demo_population()
        cands = {c.pk: candidate_attributes(c.metadata or {}) for c in Candidate.objects.filter(prompt__study=study)}
        raw = np.asarray(list(cands.values()), dtype=np.float64)
        std = raw.std(0)
        mean = raw.mean(0)
        z = {pk: (np.asarray(v) - mean) / np.where(std > 1e-9, std, 1.0) for pk, v in cands.items()}

        users = pop.draw_users(max(0, options["annotators"] - 1), rng, prefix="demo-")
        n_labels = options["labels"]
        # Labelling must not trigger training runs on the way; the model is trained once at the end.
        with override_settings(CHORUS_RETRAIN_MIN_JUDGMENTS=10**9, CHORUS_RETRAIN_EVERY_JUDGMENTS=10**9):
            total = 0
            for user in users:
                annotator = self._join(study, f"sim-{user.id}", user.profile)
                total += self._label(annotator, n_labels, rng, lambda pair, u=user: bool(
                    pop.prob(u, (z[pair.candidate_a_id] - z[pair.candidate_b_id])[None, :])[0] > rng.random()))
            careless = self._join(study, "sim-careless", {"gender": "male", "age": "18-24"})
            total += self._label(careless, n_labels, rng, None, careless=True)
        self.stdout.write(f"{len(users) + 1} simulated annotators made {total} judgments.")

        self.stdout.write(f"Training the {options['kind']} reward model …")
        version = self._train(study, options["kind"])
        m = version.metrics or {}
        self.stdout.write(
            f"Model version {version.pk} is {version.status}: held-out accuracy personalized "
            f"{m.get('accuracy', float('nan')):.2f}, population {m.get('accuracy_population', float('nan')):.2f}."
        )
        self.stdout.write(f"Dashboard: /studies/{study.pk}/dashboard/  (done in {time.perf_counter() - started:.0f} s)")

    def _join(self, study: Study, external_id: str, profile: dict[str, Any]) -> Annotator:
        # A server-side command may resume its own simulated annotator (an interrupted earlier run) directly;
        # annotator_join refuses a known crowd id without its resume secret.
        existing = Annotator.objects.filter(study=study, external_id=external_id).first()
        annotator = existing or fs.annotator_join(study=study, external_id=external_id)[0]
        fs.annotator_consent(annotator=annotator)
        allowed = set(study.profile_fields)
        fs.profile_update(annotator=annotator, data={k: v for k, v in profile.items() if k in allowed})
        return Annotator.objects.select_related("study", "profile").get(pk=annotator.pk)

    def _label(self, annotator: Annotator, n: int, rng: random.Random, picks_a, careless: bool = False) -> int:
        done = 0
        for i in range(n):
            assignment = fs.assignment_next(annotator=annotator, rng=rng)
            if assignment is None:
                break
            if careless:  # always the left answer, fast
                choice = "a" if assignment.shown_order == "ab" else "b"
                time_ms = rng.randint(700, 1500)
            else:
                choice = "a" if picks_a(assignment.pair) else "b"
                time_ms = rng.randint(6000, 40000)
            fs.judgment_create(annotator=annotator, pair=assignment.pair, choice=choice, client_key=f"seed-{i}",
                               strength=rng.randint(40, 100), time_ms=time_ms)
            done += 1
        if done:
            fs.annotator_finish(annotator=annotator)
        return done

    def _train(self, study: Study, kind: str) -> ModelVersion:
        version = ts.model_version_request(study=study, kind=kind)
        version.refresh_from_db()
        if version.status == ModelVersion.Status.QUEUED:  # a broker took the task: train here, now
            version = ts.model_version_train(model_version_id=version.pk)
        deadline = time.monotonic() + 600
        while version.status == ModelVersion.Status.TRAINING and time.monotonic() < deadline:
            time.sleep(1)  # a worker is on it
            version.refresh_from_db()
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"training failed: {version.error.splitlines()[0] if version.error else '?'}")
        # Everyone's posterior under the new model (a no-op where the eager task already did it).
        for annotator_id in Annotator.objects.filter(study=study).values_list("id", flat=True):
            ts.posterior_update(annotator_id=annotator_id)
        return version
