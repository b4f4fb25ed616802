"""Simulated annotators through the real services: learning curves per active-learning strategy.

    python manage.py simulate --study 3 --annotators 20 --labels 30 --strategy random,info_gain --json out.json
    python manage.py simulate --create-synthetic --annotators 10 --labels 20 --strategy info_gain
    python manage.py simulate --create-synthetic --strategy random,info_gain --profiles profile,no_profile \
        --warmup-annotators 96 --warmup-labels 40

It ADDS annotators and judgments to the study (use a sandbox study); the study's selector, overlap
target and quota are changed for the run and restored afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from feedback.models import Study
from training.services import MODEL_KINDS
from training.simulation import (
    POPULATIONS,
    STRATEGIES,
    SimulationConfig,
    create_synthetic_study,
    run_simulation,
)


class Command(BaseCommand):
    help = "Run simulated annotators (known tastes) through the services and print learning curves."

    def add_arguments(self, parser):
        parser.add_argument("--study", type=int, help="id of the study to simulate on")
        parser.add_argument("--create-synthetic", action="store_true",
                            help="create a study of generated responses with controlled attributes")
        parser.add_argument("--prompts", type=int, default=60, help="prompts of a --create-synthetic study")
        parser.add_argument("--annotators", type=int, default=20, help="new annotators per strategy")
        parser.add_argument("--labels", type=int, default=30, help="labels each new annotator gives")
        parser.add_argument("--strategy", default="info_gain",
                            help=f"one or a comma list of {', '.join(STRATEGIES)} (same annotators for each)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--retrain-every", type=int, default=0,
                            help="global retrain after every R new labels (0: keep the warm-up model)")
        parser.add_argument("--eval-pairs", type=int, default=200, help="held-out pairs nobody labels")
        parser.add_argument("--warmup-annotators", type=int, default=24)
        parser.add_argument("--warmup-labels", type=int, default=30)
        parser.add_argument("--kind", choices=MODEL_KINDS, help="global model kind (default: the study's)")
        parser.add_argument("--population", choices=sorted(POPULATIONS), default="pluralistic")
        parser.add_argument("--label-scale", type=float, help="Bradley–Terry inverse temperature")
        parser.add_argument("--profiles", default="profile",
                            help="comma list of profile (annotators fill in their profile) and no_profile "
                                 "(they skip it): each runs every strategy on the same people")
        parser.add_argument("--checkpoints", help="comma list of label counts to measure at")
        parser.add_argument("--json", dest="json_out", help="write the full results here")

    def handle(self, *args, **opts):
        strategies = tuple(s.strip() for s in opts["strategy"].split(",") if s.strip())
        bad = [s for s in strategies if s not in STRATEGIES]
        if bad or not strategies:
            raise CommandError(f"unknown strategy {bad}; choose from {', '.join(STRATEGIES)}")
        if opts["create_synthetic"]:
            study = create_synthetic_study(name=f"Simulation (seed {opts['seed']}) {Study.objects.count() + 1}",
                                           n_prompts=opts["prompts"], seed=opts["seed"], model_kind=opts["kind"] or "vpl")
            self.stdout.write(f"created study {study.pk} '{study.name}'")
        elif opts["study"] is None:
            raise CommandError("give --study ID or --create-synthetic")
        else:
            found = Study.objects.filter(pk=opts["study"]).first()
            if found is None:
                raise CommandError(f"no study {opts['study']}")
            study = found
        config = SimulationConfig(
            annotators=opts["annotators"],
            labels=opts["labels"],
            strategies=strategies,
            seed=opts["seed"],
            retrain_every=opts["retrain_every"],
            eval_pairs=opts["eval_pairs"],
            warmup_annotators=opts["warmup_annotators"],
            warmup_labels=opts["warmup_labels"],
            kind=opts["kind"],
            population=opts["population"],
            label_scale=opts["label_scale"],
            profile_modes=tuple(m.strip() for m in opts["profiles"].split(",") if m.strip()),
        )
        if opts["checkpoints"]:
            config.checkpoints = tuple(int(c) for c in opts["checkpoints"].split(","))
        try:
            result = run_simulation(study, config, log=self.stdout.write)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"done in {result['seconds']}s")
        if opts["json_out"]:
            Path(opts["json_out"]).write_text(json.dumps(result, indent=2, default=str))
            self.stdout.write(f"wrote {opts['json_out']}")
