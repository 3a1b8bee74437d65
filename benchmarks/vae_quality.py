"""Train the VAE-family presets on MNIST within a CPU budget and measure them: test ELBO / IWAE_K NLL (nats and
bits/dim, standard errors), KL per layer, active units per layer, linear-probe accuracy, samples for FID.

Usage (from the repository root; MNIST IDX files under DATA_DIR/mnist):

    python benchmarks/vae_quality.py --data-dir ../shared/data --out results/vae_quality.json \
        --runs-dir runs/vae --presets vae-mnist-fc hvae-mnist vae-mnist ae-mnist \
        --minutes vae-mnist-fc=5 hvae-mnist=5 vae-mnist=8 ae-mnist=4 --iwae-k 5000 --iwae-minutes 10

Each preset is trained with the library Trainer into ``RUNS_DIR/<preset>/`` (a normal run folder), then
evaluated with its EMA weights on the MNIST test set: the ELBO on all 10,000 images; IWAE_K on as many test
images as fit in ``--iwae-minutes`` (at least 100); active units (Burda et al. 2016) on all test images; a
linear probe trained on frozen features of the 60,000 training images; 10,000 prior samples saved to
``RUN/samples/eval_10000.npz`` (for FID/KID/IS/precision/recall, computed here when the feature network is
installed, otherwise with ``benchmarks/quality.py --samples RUN=RUN/samples/eval_10000.npz``); figures
(samples, reconstructions, a "vary z_1 / vary z_2" grid, slerp interpolation) in ``RUN/figures/``.
Results are written (atomically) after every preset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from elbolab.config import apply_overrides, preset
from elbolab.vae.config import VAEKind
from elbolab.host import host_info
from elbolab.io import atomic_write_text
from elbolab.data import load_dataset
from elbolab.runs import image_batches
from elbolab.train import Trainer
from elbolab.vae import (
    active_units,
    build_objective,
    build_vae,
    evaluate_likelihood,
    extract_features,
    interpolate,
    linear_probe,
    reconstruct,
    sample_fn,
    traversal_grid,
)
from elbolab.viz.grid import save_image_grid

logger = logging.getLogger("benchmarks.vae_quality")


_batches = image_batches  # the first n images of a dataset, in order (elbolab.runs)


def _figures(model, test, run_dir: Path, generative: bool) -> None:
    fig = run_dir / "figures"
    x = test.batch(torch.arange(32))[0]
    save_image_grid(torch.cat([x, reconstruct(model, x)]), fig / "reconstructions.png", nrow=8)
    save_image_grid(interpolate(model, x[:1], x[1:2], 10, "slerp"), fig / "interpolation_slerp.png", nrow=10)
    save_image_grid(interpolate(model, x[:1], x[1:2], 10, "linear"), fig / "interpolation_linear.png", nrow=10)
    if generative:
        save_image_grid(sample_fn(model, 64, torch.Generator().manual_seed(0)), fig / "samples.png", nrow=8)
        # the notes' "vary z_1 / vary z_2": the two dimensions with the largest posterior-mean variance
        means = model.posterior_means(test.batch(torch.arange(1000))[0], torch.Generator().manual_seed(0))[0]
        dims = means.var(0).topk(2).indices.tolist()
        grid = traversal_grid(model, means[0], (dims[0], dims[1]), torch.linspace(-2.5, 2.5, 9))
        save_image_grid(grid.flatten(0, 1), fig / "vary_z1_z2.png", nrow=9)


def _sample_metrics(run_dir: Path, model, dataset: str, data_dir: str, n: int) -> dict[str, Any]:
    from elbolab.evaluate import evaluate_samples, save_samples_npz

    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    images = torch.cat([sample_fn(model, 500, g) for _ in range(math.ceil(n / 500))])[:n]
    seconds = time.perf_counter() - t0
    path = save_samples_npz(run_dir / "samples" / f"eval_{n}.npz", images, meta={"seed": 0, "n": n, "weights": "ema"})
    out: dict[str, Any] = {"samples": str(path), "sample_seconds_per_image": seconds / n}
    try:
        res = evaluate_samples(images, dataset, "fid,kid,is,pr", data_dir=data_dir, progress=False)
    except (FileNotFoundError, ValueError) as e:  # feature network not installed yet
        out["sample_metrics"] = f"not computed: {e}"
        return out
    out["fid"] = res.fid.fid if res.fid else None
    out["kid"] = res.kid.mean if res.kid else None
    out["is"] = res.inception.mean if res.inception else None
    out["precision"] = res.pr.precision if res.pr else None
    out["recall"] = res.pr.recall if res.pr else None
    return out


def run_preset(name: str, minutes: float, steps: int, args: argparse.Namespace) -> dict[str, Any]:
    budget = [f"train.minutes={minutes}", f"train.steps={steps}"]
    cfg = apply_overrides(preset(name), [*budget, f'data.data_dir="{args.data_dir}"'])
    train = load_dataset(cfg.data)
    test = load_dataset(apply_overrides(cfg, ['data.split="test"']).data)
    model = build_vae(cfg.model.vae, train.shape, cfg.family)
    objective = build_objective(cfg.model.vae, cfg.family)
    generative = cfg.family is not VAEKind.AE
    run_dir = Path(args.runs_dir) / name
    trainer = Trainer(model, objective, train, cfg.train, run_dir, cfg, sample_fn if generative else None,
                      resume=True, progress=False)
    result = trainer.fit()
    trainer.ema.copy_to(model)  # evaluate the EMA weights (what `elbolab eval` uses by default)
    model.eval()
    out: dict[str, Any] = {
        "preset": name, "family": cfg.family, "architecture": cfg.model.vae.architecture.value,
        "likelihood": cfg.model.vae.likelihood.value if generative else "l2",
        "latent_dims": list(cfg.model.vae.latent_dims), "params": sum(p.numel() for p in model.parameters()),
        "train_minutes_budget": minutes, "train_steps_budget": steps, "train_steps": result.step,
        "train_epochs": result.epoch, "train_wall_seconds": result.wall_seconds, "run_dir": str(run_dir),
        "load_average_after_training": os.getloadavg()[0],
    }
    logger.info("%s: trained %d steps (%.2f epochs) in %.0f s", name, result.step, result.epoch, result.wall_seconds)
    g = torch.Generator().manual_seed(0)
    if generative:
        with torch.no_grad():
            full = evaluate_likelihood(model, _batches(test, len(test), 500), 1, g, progress=False)
            out["elbo_full_test"] = full.to_dict()
            # IWAE_K: time a first batch, then as many test images as fit in the budget
            t0 = time.perf_counter()
            first = evaluate_likelihood(model, _batches(test, 20, 20), args.iwae_k, g, progress=False)
            per_image = (time.perf_counter() - t0) / 20
            n = int(min(len(test), max(100, args.iwae_minutes * 60 / per_image)))
            n = max(100, (n // 100) * 100)
            rep = evaluate_likelihood(model, _batches(test, n, 100), args.iwae_k, torch.Generator().manual_seed(1),
                                      progress=False)
            out["iwae"] = rep.to_dict()
            out["iwae_seconds_per_image"] = per_image
            del first
        au = active_units(model, _batches(test, len(test), 500), g, num_samples=32)
        out["active_units"] = {"counts": list(au.counts), "dims": list(au.dims)}
        logger.info("%s: %s; active units %s", name, rep.to_text().replace("\n", " |"), au.counts)
    else:
        with torch.no_grad():
            mse = torch.cat([model.reconstruction_error(x) for x in _batches(test, len(test), 500)])
        out["test_mse"] = float(mse.mean())
    f_train, y_train = extract_features(model, _batches(train, len(train), 1000, with_labels=True))
    f_test, y_test = extract_features(model, _batches(test, len(test), 1000, with_labels=True))
    out["probe"] = linear_probe(f_train, y_train, f_test, y_test, num_classes=10).to_dict()
    logger.info("%s: probe test accuracy %.4f", name, out["probe"]["test_accuracy"])
    _figures(model, test, run_dir, generative)
    if generative:
        out.update(_sample_metrics(run_dir, model, "mnist", args.data_dir, args.n_samples))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["vae-mnist-fc", "hvae-mnist", "vae-mnist", "ae-mnist"])
    p.add_argument("--minutes", nargs="*", default=[], help="PRESET=MINUTES training budgets (default: the preset's)")
    p.add_argument("--steps", nargs="*", default=[], help="PRESET=STEPS: train this many steps instead (minutes "
                   "then only caps this call; a rerun resumes the run folder)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    p.add_argument("--data-dir", default="", help="folder holding mnist/ (default: $ELBOLAB_DATA or the cache)")
    p.add_argument("--runs-dir", default="runs/vae")
    p.add_argument("--out", default="benchmarks/results/vae_quality.json")
    p.add_argument("--iwae-k", type=int, default=5000)
    p.add_argument("--iwae-minutes", type=float, default=10.0, help="time budget of the IWAE_K evaluation per preset")
    p.add_argument("--n-samples", type=int, default=10000)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = {k: float(v) for k, v in (item.split("=", 1) for item in args.minutes)}
    step_budgets = {k: int(v) for k, v in (item.split("=", 1) for item in args.steps)}
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "host": host_info(), "presets": {}}
    out = Path(args.out)
    for name in args.presets:
        minutes = budgets.get(name, 0.0 if name in step_budgets else preset(name).train.minutes)
        t0 = time.perf_counter()
        results["presets"][name] = run_preset(name, minutes, step_budgets.get(name, 0), args)
        results["presets"][name]["total_seconds"] = time.perf_counter() - t0
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
        logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
