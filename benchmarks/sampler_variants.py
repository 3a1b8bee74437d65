"""Classifier confidence of one trained DDPM run's samples under sampler variants (same weights, same seeds).

    python benchmarks/sampler_variants.py RUN "ema=1,bf16=1;ema=1,bf16=1,eta=1,steps=200" [--n 256] [--out X.json]

A variant is comma-separated ``key=value``: ``ema`` (1 = EMA weights, 0 = raw), ``bf16`` (1 = forwards under
bf16 autocast), ``sampler`` (ddim, ancestral, pc, langevin), ``steps``, ``eta``, ``spacing`` (leading,
linspace, trailing), ``variance`` (beta, beta_tilde), ``snr``. For each it prints and records the fraction of
``--n`` samples that the shipped MNIST classifier labels with confidence >= 0.9, the predicted-class histogram
and the sampling time (the table "the demo recipe" in benchmarks/README.md came from this script).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import torch

from elbolab.config import apply_overrides
from elbolab.io import atomic_write_text
from elbolab.evaluate.pipeline import classifier_confidence
from elbolab.families import SampleRequest
from elbolab.runs import draw_samples, load_run

KEYS = {"ema", "bf16", "sampler", "steps", "eta", "spacing", "variance", "snr"}


def parse_variant(text: str) -> dict[str, str]:
    pairs = [kv for kv in text.split(",") if kv]
    bad = [kv for kv in pairs if "=" not in kv]
    if bad:
        raise SystemExit(f"variant {text!r}: {bad} is not key=value; keys: {sorted(KEYS)}")
    opts = dict(kv.split("=", 1) for kv in pairs)
    unknown = set(opts) - KEYS
    if unknown:
        raise SystemExit(f"variant {text!r}: unknown keys {sorted(unknown)}; allowed: {sorted(KEYS)}")
    return opts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("variants", help="variants separated by ';'")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    results = {}
    for text in args.variants.split(";"):
        opts = parse_variant(text)
        try:
            results[text] = run_variant(args, opts)
        except ValueError as e:  # a bad sampler / spacing / variance name: say which and what is allowed
            raise SystemExit(f"variant {text!r}: {e}") from None
        r = results[text]
        print(f"{text:55s} confident {r['confident']:.3f}  {r['seconds']:6.1f} s  {r['class_counts']}", flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps({"run": args.run, "n": args.n, "seed": args.seed,
                                                "results": results}, indent=2) + "\n")
    return 0


def run_variant(args: argparse.Namespace, opts: dict[str, str]) -> dict:
    """Sample ``args.n`` images of ``args.run`` under one variant and score them."""
    run = load_run(args.run, use_ema=opts.get("ema", "1") == "1")
    cfg = run.config
    if "variance" in opts:
        cfg = apply_overrides(cfg, [f"diffusion.variance={opts['variance']}"])
    run.config = cfg
    sampler = opts.get("sampler", "ddim")
    options = {"steps": int(opts.get("steps", 50))}
    if sampler == "ddim":
        options["eta"] = float(opts.get("eta", 0.0))
    for key in ("spacing", "snr"):
        if key in opts:
            options[key] = opts[key]
    request = SampleRequest(n=args.n, sampler=sampler, options=options, seed=args.seed)
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if opts.get("bf16") == "1" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with bf16:
        batch = draw_samples(run, request)
    seconds = time.perf_counter() - t0
    conf = classifier_confidence(batch.images.float(), "mnist")
    return {"confident": conf.fraction, "class_counts": conf.class_counts, "seconds": seconds,
            "method": batch.method}


if __name__ == "__main__":
    sys.exit(main())
