"""Inpainting on MNIST test images with centre masks: RePaint with a trained unconditional DDPM against two
baselines, mean fill (the mean training image in the hole) and harmonic fill (the steady state of the heat
equation in the hole, boundary values from the known pixels).

Metrics, each over the same ``--n`` first test images and the same centred 14 x 14 hole:
- masked-region MSE in [0, 1] pixel units (mean over images, with its standard error);
- FID of the completed images against the MNIST training set, on the shipped MNIST feature network; the row
  "originals" (the uncorrupted test images) is the floor at this sample size (FID is biased upwards for small n).
RePaint draws one completion per image (a sample of p(x_hole | x_known)); with ``--posterior-samples K`` it also
reports the MSE of the average of K completions (a Monte Carlo estimate of the posterior mean E[x_hole | x_known],
the MSE-optimal fill), which single samples cannot match by construction (their MSE is about twice the
posterior variance).

Usage (from the repository root; OMP_NUM_THREADS=1 keeps a loaded CPU from thrashing):

    OMP_NUM_THREADS=1 python benchmarks/inpainting.py --run runs/ddpm-mnist --data-dir ../shared/data/mnist \
        --n 256 --steps 50 --jump-length 5 --resample 4 --out benchmarks/results/inpainting.json

Writes the JSON table (atomically), a Markdown copy beside it, and ``inpainting_examples.png`` (rows: images;
columns: original, masked input, mean fill, harmonic fill, RePaint).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from elbolab.apps.chain import run_diffusion
from elbolab.apps.inpainting import harmonic_fill, make_mask, masked_mse, mean_fill, repaint
from elbolab.apps.io import test_images
from elbolab.io import atomic_write_text
from elbolab.data import load_dataset
from elbolab.evaluate import evaluate_samples, load_feature_network, load_reference
from elbolab.runs import load_run
from elbolab.viz.plots import save_annotated_grid

logger = logging.getLogger("benchmarks.inpainting")


def _mse_stats(per_image: torch.Tensor) -> dict[str, float]:
    """Mean and standard error of per-image MSEs given in [-1, 1] units, reported in [0, 1] units (/4)."""
    v = per_image.double() / 4.0
    return {"masked_mse": float(v.mean()), "masked_mse_stderr": float(v.std() / v.numel() ** 0.5)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="trained DDPM run folder (MNIST)")
    ap.add_argument("--data-dir", default="", help="MNIST folder (for the mean image and the FID reference)")
    ap.add_argument("--n", type=int, default=256, help="test images")
    ap.add_argument("--box", type=int, default=14, help="side of the centred square hole")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--jump-length", type=int, default=5)
    ap.add_argument("--resample", type=int, default=4)
    ap.add_argument("--posterior-samples", type=int, default=0, help="K completions averaged (0: skip)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/inpainting.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)

    run = load_run(args.run)
    diffusion = run_diffusion(run)
    data_cfg = dataclasses.replace(run.config.data, data_dir=args.data_dir or run.config.data.data_dir)
    cfg = dataclasses.replace(run.config, data=data_cfg)
    x, _ = test_images(cfg, list(range(args.n)))
    N, C, H, W = x.shape
    mask = make_mask("center", (H, W), N, box_size=args.box)
    train = load_dataset(dataclasses.replace(data_cfg, split="train", limit=0), download=False)
    mean_image = train.batch(torch.arange(len(train)))[0].float().mean(0)  # (C, H, W) in [-1, 1]

    results: dict[str, dict[str, float]] = {}
    completions: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    completions["mean fill"] = mean_fill(x, mask, mean_image)
    results["mean fill"] = {"seconds": time.perf_counter() - t0, "nfe": 0}
    t0 = time.perf_counter()
    completions["harmonic fill"] = harmonic_fill(x, mask)
    results["harmonic fill"] = {"seconds": time.perf_counter() - t0, "nfe": 0}

    def repaint_all(seed: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(seed)
        outs, nfe = [], 0
        for i in range(0, N, args.batch_size):
            res = repaint(run.model, x[i:i + args.batch_size], mask[i:i + args.batch_size], diffusion, generator=g,
                          steps=args.steps, jump_length=args.jump_length, resample=args.resample, clip_x0=True,
                          progress=True)
            outs.append(res.sample.clamp(-1, 1))
            nfe = res.nfe
            logger.info("repaint: %d/%d images", min(i + args.batch_size, N), N)
        return torch.cat(outs), nfe

    t0 = time.perf_counter()
    completions["RePaint"], nfe = repaint_all(args.seed)
    results["RePaint"] = {"seconds": time.perf_counter() - t0, "nfe": nfe}
    if args.posterior_samples > 1:
        t0 = time.perf_counter()
        draws = [completions["RePaint"]] + [repaint_all(args.seed + k)[0] for k in range(1, args.posterior_samples)]
        completions[f"RePaint mean of {args.posterior_samples}"] = torch.stack(draws).mean(0)
        results[f"RePaint mean of {args.posterior_samples}"] = {
            "seconds": time.perf_counter() - t0 + results["RePaint"]["seconds"], "nfe": nfe * args.posterior_samples}

    keep = mask.bool().expand_as(x)
    for name, out in completions.items():
        if not torch.equal(out[keep], x[keep]):
            raise AssertionError(f"{name} changed known pixels")
        results[name].update(_mse_stats(masked_mse(out, x, mask)))

    net = load_feature_network("mnist")
    ref = load_reference("mnist", "train", data_dir=data_cfg.data_dir, network=net)
    for name, out in [("originals", x), *completions.items()]:
        if name.startswith("RePaint mean"):
            continue  # an average of samples is not an image of the data distribution; FID is not meaningful
        fid = evaluate_samples(out, "mnist", ["fid"], reference=ref, network=net, progress=False).fid
        results.setdefault(name, {})["fid"] = float(fid.fid)

    setup = {"run": str(run.folder), "step": run.step, "n": N, "hole": f"{args.box}x{args.box} centre",
             "steps": args.steps, "jump_length": args.jump_length, "resample": args.resample,
             "fid_reference": "mnist/train (shipped MNIST feature network)", "mse_units": "[0, 1] pixels",
             "threads": args.threads, "seed": args.seed}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    lines = [f"Inpainting, MNIST test (first {N}), centred {args.box}x{args.box} hole; run {run.folder} "
             f"(step {run.step}); RePaint {args.steps} steps, j = {args.jump_length}, r = {args.resample}", "",
             "| method | masked MSE ([0,1]) | FID vs MNIST train | NFE/image | seconds |", "|---|---|---|---|---|"]
    for name, r in results.items():
        mse = f"{r['masked_mse']:.4f} ± {r['masked_mse_stderr']:.4f}" if "masked_mse" in r else "-"
        fid = f"{r['fid']:.2f}" if "fid" in r else "-"
        lines.append(f"| {name} | {mse} | {fid} | {r.get('nfe', 0)} | {r.get('seconds', 0.0):.0f} |")
    atomic_write_text(out_path.with_suffix(".md"), "\n".join(lines) + "\n")
    shown = torch.where(keep, x, torch.zeros_like(x))
    cols = [x, shown, completions["mean fill"], completions["harmonic fill"], completions["RePaint"]]
    save_annotated_grid(torch.stack(cols, 1)[:8], out_path.with_name("inpainting_examples.png"),
                        col_labels=["original", "masked", "mean fill", "harmonic", "RePaint"],
                        title="centre-mask inpainting, MNIST test")
    print("\n".join(lines))
    print(f"wrote {out_path}, {out_path.with_suffix('.md')}, {out_path.with_name('inpainting_examples.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
