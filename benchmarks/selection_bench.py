"""Active-learning selection: p50/p95 latency of ModelSelector ranking over a 10k-pair pool.

Each timed call is one `ModelSelector.rank(annotator=..., limit=20)` as `assignment_next` makes it: the
database query for the annotator's eligible pairs (free overlap slot, not given to them yet), the lookup of
those ids in the cached pair pool, scoring every eligible pair under the annotator's posterior, and top-k.
The pool (per-pair network deltas db, dg) holds random numbers: building it runs the reward network once
per model version and is cached, so it is not part of a request.

It needs a PostgreSQL database in DATABASE_URL (it migrates it, creates a throwaway study of 10k pairs and
deletes it afterwards):

    createdb -h 127.0.0.1 -U postgres chorus_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chorus_bench \\
        .venv/bin/python benchmarks/selection_bench.py --pairs 10000 --repeats 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--latent", type=int, default=8, help="latent size L (VPL default 8)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--strategy", default="info_gain", choices=["info_gain", "uncertainty"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("set DATABASE_URL to a PostgreSQL database (see the docstring)")

    import django

    django.setup()
    import numpy as np
    import torch
    from django.core.management import call_command

    from feedback.models import Candidate, Pair, Prompt, Study, text_hash
    from personalization import Posterior
    from tests.factories import AnnotatorFactory
    from training import active_learning
    from training.models import ModelVersion

    if args.threads:
        torch.set_num_threads(args.threads)
    call_command("migrate", verbosity=0)
    study = Study.objects.create(name=f"selection-bench-{os.getpid()}", slug=f"selection-bench-{os.getpid()}",
                                 overlap_target=3, selector=args.strategy)
    try:
        n_prompts = args.pairs // 3  # 3 candidates -> 3 pairs per prompt
        prompts = Prompt.objects.bulk_create([Prompt(study=study, text=f"prompt {i}") for i in range(n_prompts)],
                                             batch_size=2000)
        cands = Candidate.objects.bulk_create(
            [Candidate(prompt=p, text=f"answer {p.pk}-{k}", text_hash=text_hash(f"answer {p.pk}-{k}"))
             for p in prompts for k in range(3)], batch_size=2000)
        pairs = []
        for i, p in enumerate(prompts):
            a, b, c = cands[3 * i: 3 * i + 3]
            pairs += [Pair(study=study, prompt=p, candidate_a=x, candidate_b=y) for x, y in ((a, b), (a, c), (b, c))]
        Pair.objects.bulk_create(pairs, batch_size=2000)
        ids = np.asarray(sorted(Pair.objects.filter(study=study).values_list("id", flat=True)), dtype=np.int64)
        gen = torch.Generator().manual_seed(0)
        pool = active_learning.PairPool(ids, torch.randn(len(ids), generator=gen),
                                  torch.randn(len(ids), args.latent, generator=gen), "identity")
        # Some pairs are full and some already given to the annotator, as in a running study.
        Pair.objects.filter(pk__in=ids[::10].tolist()).update(n_assigned=3)
        annotator = AnnotatorFactory(study=study)
        post = Posterior(torch.zeros(args.latent), torch.eye(args.latent))
        fake_version = ModelVersion(pk=1, study=study)
        active_learning.active_version = lambda study_id: fake_version
        active_learning.pair_pool = lambda study_id, version: pool
        active_learning.annotator_posterior = lambda annotator, version: post
        selector = active_learning.ModelSelector(args.strategy, args.strategy)

        def timed(fn):
            t = time.perf_counter()
            out = fn()
            return (time.perf_counter() - t) * 1000, out

        for _ in range(5):  # warm-up
            selector.rank(annotator=annotator, limit=20)
        total, query, scoring = [], [], []
        for _ in range(args.repeats):
            ms, ranked = timed(lambda: selector.rank(annotator=annotator, limit=20))
            assert len(ranked) == 20
            total.append(ms)
            ms_q, eligible = timed(lambda: list(active_learning.eligible_pairs(annotator).values_list("id", flat=True)))
            query.append(ms_q)
            positions, _ = pool.positions(eligible)
            scoring.append(timed(lambda p=positions: active_learning.score_pairs(pool, p, post, args.strategy))[0])

        def pct(xs, q):
            return round(statistics.quantiles(xs, n=100)[q - 1], 2)

        print(json.dumps({
            "pairs": len(ids), "eligible": len(eligible), "latent": args.latent, "strategy": args.strategy,
            "repeats": args.repeats, "machine": f"{os.cpu_count()}-core {platform.machine()}",
            "torch_threads": torch.get_num_threads(),
            "rank_ms": {"p50": pct(total, 50), "p95": pct(total, 95)},
            "eligible_query_ms": {"p50": pct(query, 50), "p95": pct(query, 95)},
            "scoring_ms": {"p50": pct(scoring, 50), "p95": pct(scoring, 95)},
        }, indent=2))
    finally:
        study.delete()


if __name__ == "__main__":
    main()
