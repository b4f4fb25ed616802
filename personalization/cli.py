"""``python -m personalization fit|predict`` — train personalized reward models and predict preferences."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def _encoder(path: str | None, device: str, cache_dir: str | None) -> Any:
    from .encoder import EncoderConfig, TextEncoder

    return TextEncoder(EncoderConfig(model_path=path, device=device, cache_dir=cache_dir))


def cmd_fit(args: argparse.Namespace) -> int:
    from .data import read_profiles, read_train
    from .train import FitConfig, PreferenceData, fit

    rows = read_train(args.train)
    if not rows:
        raise ValueError(f"{args.train}: no training rows")
    profiles = read_profiles(args.profiles) if args.profiles else None
    encoder_path = str(Path(args.encoder).resolve()) if args.encoder else None
    encoder = _encoder(encoder_path, "cpu" if args.device == "cpu" else "auto", args.cache_dir)
    data = PreferenceData.from_rows(rows, encoder, progress=not args.quiet)
    config = FitConfig(progress=not args.quiet, guard=not args.no_guard)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    model = fit(args.model, data, profiles, config, device=args.device, seed=args.seed)
    model.encoder_info = {"model_id": encoder.model_id, "model_path": encoder_path}
    model.save(args.out)
    print(f"saved {args.model} model ({len(data)} pairs, {len(data.user_ids)} users, "
          f"{model.info['fit_seconds']:.1f}s) to {args.out}", file=sys.stderr)
    guard = model.info.get("guard")
    if guard:
        print(_guard_summary(guard), file=sys.stderr)
    return 0


def _guard_summary(guard: dict[str, Any]) -> str:
    """One line per setting: what the population guard chose and its held-out figures beside BT's."""
    if "chosen" not in guard:
        return f"population guard skipped: {guard.get('skipped', 'no split')}"
    lines = [f"population guard (held-out users): chose {guard['chosen']} "
             f"(personal weight {guard['personal_weight']:g}, prior scale {guard['prior_scale']:g}, "
             f"temperature {guard['temperature']:.3g}"
             + (f", {guard['temperature_split']:.3g} on the split's models" if "temperature_split" in guard else "")
             + ")"]
    for part, label in (("seen", "seen users' held-out labels"), ("new", "new users, n = 0-10 labels")):
        m, b = guard["heldout"][part], guard["bt"][part]
        if m.get("n"):
            lines.append(f"  {label}: acc {m['acc']:.3f} (bt {b['acc']:.3f}), cross-entropy {m['ce']:.3f} "
                         f"(bt {b['ce']:.3f}), ECE {m['ece']:.3f} (bt {b['ece']:.3f})")
    return "\n".join(lines)


def cmd_predict(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from .artifacts import load_model
    from .data import read_profiles, read_test, read_train, write_jsonl

    model = load_model(args.model, device="cpu" if args.device == "auto" else args.device)
    tests = read_test(args.pairs)
    context = read_train(args.context) if args.context else []
    profiles = read_profiles(args.profiles) if args.profiles else {}
    enc_info = model.encoder_info or {}
    path = str(Path(args.encoder).resolve()) if args.encoder else enc_info.get("model_path")
    encoder = _encoder(path, "cpu" if args.device == "cpu" else "auto", args.cache_dir)
    if enc_info.get("model_id") and enc_info["model_id"] != encoder.model_id and not args.encoder:
        raise ValueError(f"encoder mismatch: model trained on {enc_info['model_id']!r}, loaded {encoder.model_id!r}")
    n, k = len(tests), len(context)
    texts = [t.prompt for t in tests] + [t.a for t in tests] + [t.b for t in tests]
    texts += [c.prompt for c in context] + [c.chosen for c in context] + [c.rejected for c in context]
    emb = encoder.encode(texts, progress=not args.quiet)
    tp, ta, tb = emb[:n], emb[n : 2 * n], emb[2 * n : 3 * n]
    cp, cc, cr = emb[3 * n : 3 * n + k], emb[3 * n + k : 3 * n + 2 * k], emb[3 * n + 2 * k :]
    ctx_of: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(context):
        ctx_of[c.user_id].append(i)
    test_of: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tests):
        test_of[t.user_id].append(i)
    p_a = torch.zeros(n)
    for user_id, idx in tqdm(test_of.items(), desc="predict", unit="user", disable=args.quiet):
        ci = torch.tensor(ctx_of.get(user_id, []), dtype=torch.long)
        ctx = (cp[ci], cc[ci], cr[ci]) if len(ci) else None
        if user_id in model.user_index:
            post = model.user_posterior(user_id)
            if ctx is not None:
                post = model.posterior(ctx, start=post)
        else:
            post = model.posterior(ctx, profiles.get(user_id))
        ti = torch.tensor(idx, dtype=torch.long)
        p, _ = model.predict_proba(post, tp[ti], ta[ti], tb[ti])
        p_a[ti] = p
    write_jsonl(args.out, ({"id": t.id, "p_a": round(float(p_a[i]), 6)} for i, t in enumerate(tests)))
    print(f"wrote {n} predictions to {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m personalization", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train a reward model on labelled pairs")
    f.add_argument("--train", required=True, help='JSONL rows {"user_id","prompt","chosen","rejected"}')
    f.add_argument("--profiles", help='JSONL rows {"user_id", <field>: <value>, …}')
    f.add_argument("--model", required=True, choices=["bt", "vpl", "pal"], help="model kind")
    f.add_argument("--out", required=True, help="output folder (safetensors + config.json)")
    f.add_argument("--epochs", type=int, default=None, help="training epochs (default: FitConfig's)")
    f.add_argument("--no-guard", action="store_true",
                   help="vpl/pal: skip the population guard (back-off to BT and calibration chosen on held-out "
                        "users); the raw personal model")
    f.set_defaults(func=cmd_fit)
    p = sub.add_parser("predict", help="predict p(a ≻ b) for test pairs")
    p.add_argument("--model", required=True, help="folder written by `fit`")
    p.add_argument("--pairs", required=True, help='JSONL rows {"id","user_id","prompt","a","b"}')
    p.add_argument("--context", help="labelled rows of new (or seen) users, same format as --train")
    p.add_argument("--profiles", help="profiles of new users")
    p.add_argument("--out", required=True, help='output JSONL rows {"id","p_a"}')
    p.set_defaults(func=cmd_predict)
    for s in (f, p):
        s.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="torch device")
        s.add_argument("--seed", type=int, default=0, help="random seed")
        s.add_argument("--encoder", default=None, help="local text-encoder folder (default: all-MiniLM-L6-v2)")
        s.add_argument("--cache-dir", default=None, help="on-disk embedding cache folder")
        s.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataError

    try:
        return int(args.func(args))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
