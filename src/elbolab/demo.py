"""``elbolab demo``: train the ``ddpm-mnist`` preset on the embedded MNIST, sample it, score the samples with the
shipped MNIST classifier and feature network, and report the ELBO terms on held-out test images."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from elbolab.config import apply_overrides, preset
from elbolab.data import load_dataset
from elbolab.io import atomic_write_text
from elbolab.runs import Run, SampleRequest, TrainRunResult, draw_samples, load_run, train_run

logger = logging.getLogger(__name__)

DEMO_PRESET = "ddpm-mnist"


@dataclass
class DemoReport:
    """What ``elbolab demo`` did and where it wrote it."""

    out_dir: Path
    train: TrainRunResult
    grid: Path
    elbo: dict[str, float]
    elbo_images: int
    confident_fraction: float
    confidence_n: int
    sample_seconds_per_image: float
    fidelity: dict[str, float]
    total_seconds: float
    sampler: str = ""
    conditioning: str = ""  # "" = unconditional; else how the class-conditional model was sampled
    report: Path | None = None  # RUN/report.html (elbolab.report.build_report)
    report_bytes: int = 0

    def to_text(self) -> str:
        e = self.elbo
        lines = [
            f"demo run: {self.out_dir}/ ({self.train.summary()})",
            f"samples : {self.grid} (8x8, {self.sampler}{', ' + self.conditioning if self.conditioning else ''}, "
            f"{self.sample_seconds_per_image:.3f} s/img)",
            f"quality : {100 * self.confident_fraction:.1f}% of {self.confidence_n} samples labelled with "
            "confidence >= 0.9 by the shipped MNIST classifier (real test images: ~98%)",
            f"          FID {self.fidelity['fid']:.1f}, precision {self.fidelity['precision']:.3f}, recall "
            f"{self.fidelity['recall']:.3f} against the training images (the same for {self.confidence_n} real "
            f"held-out images: FID {self.fidelity['real_fid']:.1f}, precision {self.fidelity['real_precision']:.3f}, "
            f"recall {self.fidelity['real_recall']:.3f})",
            f"ELBO on {self.elbo_images} held-out test images (bits/dim, Monte Carlo over t, +- stderr):",
            f"  reconstruction  -log p(x0|x1)        {e['reconstruction']:.4f} +- {e['reconstruction_stderr']:.4f}",
            f"  prior matching  KL(q(xT|x0)||p(xT))  {e['prior']:.6f}",
            f"  denoising       sum_t KL terms       {e['denoising']:.4f} +- {e['denoising_stderr']:.4f}",
            *([f"  class prior     -log p(y), uniform   {e['class_prior']:.4f} (the model is conditioned on the "
               "label; the total bounds -log p(x))"] if e.get("class_prior") else []),
            f"  total (negative ELBO)                {e['total']:.4f} +- {e['total_stderr']:.4f}",
            *([f"  with the calibrated decoder         {e['total_calibrated']:.4f} (reconstruction "
               f"{e['reconstruction_calibrated']:.4f} +- {e['reconstruction_calibrated_stderr']:.4f}: sigma_1 per "
               "bucket of the predicted mean, fitted on training images)"] if "total_calibrated" in e else []),
            f"total wall time {self.total_seconds / 60:.1f} min; metrics in {self.out_dir / 'demo.json'}",
        ]
        if self.report is not None:
            lines.append(f"report  : {self.report} ({self.report_bytes / 1024:.0f} KiB, self-contained HTML: open it "
                         "in a browser)")
        return "\n".join(lines)


def demo_fidelity(run: Run, samples: torch.Tensor, seed: int) -> dict[str, float]:
    """FID and precision/recall of ``samples: (N, 1, 28, 28)`` against the run's training images, next to the
    same figures for N real held-out images (the floor at this N: FID is biased upwards at small N). The
    classifier-confidence figure alone can be high for smooth blobs; these two catch that."""
    from elbolab.evaluate import Metric, evaluate_samples, load_reference

    metrics = {Metric.FID, Metric.PR}
    ref = load_reference(run.config.data.name, "train", data_dir=run.config.data.data_dir, feature_dataset="mnist",
                         progress=False)
    held_out = load_dataset(dataclasses.replace(run.config.data, split="test", limit=0))
    pick = torch.randperm(len(held_out), generator=torch.Generator().manual_seed(seed))[: samples.shape[0]]
    real, _ = held_out.batch(pick)
    fake_r = evaluate_samples(samples, "mnist", metrics, reference=ref, progress=False)
    real_r = evaluate_samples(real, "mnist", metrics, reference=ref, progress=False)
    if not (fake_r.fid and fake_r.pr and real_r.fid and real_r.pr):  # evaluate_samples fills what was asked
        raise RuntimeError("evaluate_samples returned no FID or precision/recall for the demo samples")
    return {"fid": fake_r.fid.fid, "precision": fake_r.pr.precision, "recall": fake_r.pr.recall,
            "real_fid": real_r.fid.fid, "real_precision": real_r.pr.precision, "real_recall": real_r.pr.recall,
            "n": int(samples.shape[0]), "n_reference": ref.n}


def run_demo(out_dir: str | os.PathLike[str] = "runs/demo", *, minutes: float | None = None, seed: int = 0,
             elbo_images: int = 128, confidence_samples: int = 1000, per_t_images: int = 2,
             calibration_images: int = 512,
             overrides: list[str] | None = None,
             progress: bool = True) -> DemoReport:
    """Train ``ddpm-mnist`` on the embedded MNIST, sample with DDIM (an 8x8 grid of the first 64), score the
    samples with the shipped MNIST classifier (fraction labelled with confidence >= 0.9), compute the ELBO
    terms on held-out test images, and write ``RUN/report.html`` (:func:`elbolab.report.build_report`) with the
    per-timestep terms L_{t-1} of ``per_t_images`` test images (all T of them, saved as ``elbo_per_t.json``;
    0 = none). The ELBO is reported twice: with Ho et al.'s fixed decoder sigma_1 (``total``) and with the
    decoder calibrated on ``calibration_images`` training images (``total_calibrated``,
    :mod:`elbolab.diffusion.decoder`); both bound -log p(x).

    A previous demo in ``out_dir`` is moved to ``<out_dir>.prev`` (one generation kept).
    """
    from elbolab.diffusion import elbo_terms
    from elbolab.diffusion.decoder import calibrate_decoder, calibrated_reconstruction
    from elbolab.math import mean_and_stderr
    from elbolab.evaluate import save_samples_npz
    from elbolab.evaluate.pipeline import classifier_confidence
    from elbolab.families.ddpm import guidance_weight
    from elbolab.host import host_info
    from elbolab.viz.grid import save_image_grid

    if calibration_images <= 0:
        raise ValueError(f"calibration_images = {calibration_images}: need >= 1 training image to fit the decoder")
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists():
        prev = out_dir.with_name(out_dir.name + ".prev")
        if prev.exists():
            shutil.rmtree(prev)
        out_dir.rename(prev)
        logger.info("moved the previous demo to %s", prev)
    extra = overrides or []  # --set items after the demo's own (tests shrink the sampler with them)
    overrides = [f"train.seed={seed}"]
    if minutes is not None:  # a time budget instead of the preset's fixed steps
        overrides += [f"train.minutes={minutes}", "train.steps=0"]
    cfg = apply_overrides(preset(DEMO_PRESET), overrides + list(extra))
    trained = train_run(cfg, out_dir, progress=progress)
    run = load_run(out_dir)

    grid = out_dir / "samples" / "demo_grid.png"
    # the preset's own sampler and options; a conditional model's labels i.i.d. from its uniform class prior, so
    # the samples are draws of p(x) (a class-cycled set is stratified and flatters FID)
    request = SampleRequest(n=confidence_samples, seed=seed, labels="prior")
    t_sample = time.perf_counter()
    batch = draw_samples(run, request)
    sample_seconds = time.perf_counter() - t_sample
    save_image_grid(batch.images[:64], grid, nrow=8)
    save_samples_npz(out_dir / "samples" / "demo_samples.npz", batch.images, meta={"method": batch.method})
    confidence = classifier_confidence(batch.images, "mnist")
    fidelity = demo_fidelity(run, batch.images, seed)

    held_out = load_dataset(dataclasses.replace(run.config.data, split="test", limit=elbo_images))
    x0, y = held_out.batch(torch.arange(len(held_out)))
    num_classes = run.family.num_classes(run.config)
    terms = elbo_terms(run.family.diffusion(run.config), run.model, x0, y=y if num_classes else None,
                       generator=torch.Generator().manual_seed(seed), t_samples=16, progress=progress)
    elbo = {k: float(getattr(terms, k)) for k in ("reconstruction", "prior", "denoising", "total",
                                                  "reconstruction_stderr", "denoising_stderr", "total_stderr")}
    # a class-conditional model bounds -log p(x | y); with the uniform class prior p(y) = 1/K of its sampling,
    # -log p(x) <= -log p(y) - log p(x | y), so log2(K) / D on top keeps `total` a bound on -log p(x)
    elbo["class_prior"] = math.log2(num_classes) / x0[0].numel() if num_classes else 0.0
    elbo["total"] += elbo["class_prior"]
    # the same bound with the calibrated decoder (elbolab.diffusion.decoder): sigma_1 per bucket of the predicted
    # mean, fitted on training images, L_0 measured on the held-out ones
    fit = load_dataset(dataclasses.replace(run.config.data, split="train", limit=calibration_images))
    x_fit, y_fit = fit.batch(torch.arange(len(fit)))
    diffusion = run.family.diffusion(run.config)
    calibration = calibrate_decoder(diffusion, run.model, x_fit, y=y_fit if num_classes else None,
                                    generator=torch.Generator().manual_seed(seed + 1))
    rec = calibrated_reconstruction(diffusion, run.model, x0, calibration, y=y if num_classes else None,
                                    generator=torch.Generator().manual_seed(seed + 2))
    rec_ms = mean_and_stderr(rec)
    elbo["reconstruction_calibrated"] = rec_ms.mean
    elbo["reconstruction_calibrated_stderr"] = rec_ms.stderr
    elbo["total_calibrated"] = elbo["total"] - elbo["reconstruction"] + rec_ms.mean
    conditioning = ""
    if num_classes:
        w = guidance_weight(run.config, request)
        conditioning = ("class-conditional model sampled from its null class (unconditional)" if w is None else
                        f"class-conditional, labels i.i.d. uniform over 0..{num_classes - 1} (the class prior), "
                        f"guidance w = {w:g}")
    report = DemoReport(out_dir=out_dir, train=trained, grid=grid, elbo=elbo, elbo_images=len(held_out),
                        confident_fraction=confidence.fraction, confidence_n=confidence.n,
                        sample_seconds_per_image=sample_seconds / confidence.n, fidelity=fidelity,
                        total_seconds=time.perf_counter() - t_start, sampler=batch.method,
                        conditioning=conditioning)
    atomic_write_text(out_dir / "demo.json", json.dumps({
        "train": {"step": trained.step, "minutes": trained.wall_seconds / 60, "img_per_s": trained.images_per_second,
                  "final_loss": trained.final_loss}, "elbo_bpd": elbo, "elbo_images": len(held_out),
        "decoder_calibration": calibration.to_dict(),
        "confident_fraction": confidence.fraction, "confidence_n": confidence.n,
        "confidence_class_counts": confidence.class_counts, "fidelity": fidelity,
        "sample_seconds_per_image": report.sample_seconds_per_image, "sampler": batch.method,
        "conditioning": conditioning,
        "grid": str(grid), "total_minutes": report.total_seconds / 60, "host": host_info()}, indent=2) + "\n")
    html = _write_report(out_dir, per_t_images, seed)
    return dataclasses.replace(report, report=html.path, report_bytes=html.size_bytes,
                               total_seconds=time.perf_counter() - t_start)


def _write_report(out_dir: Path, per_t_images: int, seed: int):
    """``out_dir/elbo_per_t.json`` (the exact per-timestep terms of ``per_t_images`` test images) and
    ``out_dir/report.html``; returns the :class:`elbolab.report.ReportResult`."""
    from elbolab.report import PER_T_FILE, build_report, compute_per_timestep

    if per_t_images > 0:
        pt = compute_per_timestep(out_dir, per_t_images, seed=seed)
        if pt is not None:
            atomic_write_text(out_dir / PER_T_FILE, json.dumps({"t": pt.t, "bpd": pt.bpd,
                                                               "n_images": pt.n_images}) + "\n")
    result = build_report([out_dir], out_dir / "report.html", title="elbolab demo")
    logger.info("%s", result.to_text())
    return result



__all__ = ["DEMO_PRESET", "DemoReport", "demo_fidelity", "run_demo"]
