"""The reconstruction term -log p_theta(x_0 | x_1) of a trained DDPM run against the decoder's standard deviation
sigma_1 (Ho et al. 2020 eq. 13, the discretised Gaussian): the run's own sigma_1 (beta_tilde_2 or beta_1) beside a
grid, on training and on held-out test images, with the noise of x_1 shared across the grid. One sigma for every
pixel gains little over the fixed one; the calibrated decoder of elbolab.diffusion.decoder (a sigma per bucket of
the predicted mean) is what the demo reports beside it.

    python benchmarks/decoder_sigma.py runs/demo --n 512 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import torch

from elbolab.data import load_dataset
from elbolab.diffusion.decoder import decoder_mean
from elbolab.host import host_info
from elbolab.io import atomic_write_text
from elbolab.math import discretized_gaussian_log_likelihood, sum_flat
from elbolab.runs import load_run


def l0_bits_per_dim(run, split: str, n: int, sigmas: list[float], seed: int) -> list[float]:
    diffusion = run.family.diffusion(run.config)
    data = load_dataset(dataclasses.replace(run.config.data, split=split, limit=n))
    x0, y = data.batch(torch.arange(len(data)))
    y = y if run.family.num_classes(run.config) else None
    mean = decoder_mean(diffusion, run.model, x0, y=y, generator=torch.Generator().manual_seed(seed))
    d = x0[0].numel()
    rows = []
    for s in sigmas:
        ll = sum_flat(discretized_gaussian_log_likelihood(x0, mean, torch.full_like(mean, 2 * math.log(s))))
        rows.append(float(-ll.double().mean()) / (d * math.log(2)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    run = load_run(args.run)
    diffusion = run.family.diffusion(run.config)
    own = math.sqrt(float(diffusion.table("reverse_variance")[1]))
    sigmas = sorted({own, *[own * 2 ** (k / 2) for k in range(-8, 5)]})
    result = {"run": args.run, "own_sigma_1": own, "sigmas": sigmas, "n": args.n, "host": host_info()}
    for split in ("train", "test"):
        result[split] = l0_bits_per_dim(run, split, args.n, sigmas, args.seed)
    for s, a, b in zip(sigmas, result["train"], result["test"]):
        print(f"sigma_1 {s:.5f} ({s / own:5.2f}x): train {a:.4f}  test {b:.4f} bits/dim" + ("  <- run's" if s == own else ""))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
