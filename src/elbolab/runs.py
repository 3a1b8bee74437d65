"""Operations on a run folder, the same for every family: train, load, sample, evaluate, and the demo.

A run is a folder (DESIGN.md): ``config.toml``, ``model.safetensors``, ``ema.safetensors``,
``trainer_state.*``, ``metrics.jsonl``, ``samples/``. These functions glue a :class:`RunConfig` to the data
layer, the family's network and objective (:mod:`elbolab.families`), the Trainer and the evaluation; the
CLI calls them and nothing else. Randomness is a seeded ``torch.Generator`` everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from elbolab.config import Family, RunConfig, SamplerKind, apply_overrides, load_toml, preset, save_toml
from elbolab.data import ImageDataset, load_dataset
from elbolab.families import FamilySpec, SampleBatch, SampleRequest, family_spec

if TYPE_CHECKING:
    from elbolab.vae import ActiveUnits, LikelihoodReport, ProbeResult

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"


# --------------------------------------------------------------------------------------------------
# Train
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainRunResult:
    """``out_dir``: the run folder; ``config``: the config as written (adapted to the data); ``step``,
    ``wall_seconds``, ``images_per_second``, ``final_loss`` of this call; ``stopped_by``: the rule that fired;
    ``is_main_process``: False on non-zero ranks of a torchrun job."""

    out_dir: Path
    config: RunConfig
    step: int
    wall_seconds: float
    images_per_second: float
    final_loss: float
    stopped_by: str
    is_main_process: bool

    def summary(self) -> str:
        return (f"step {self.step}, {self.wall_seconds / 60:.1f} min, {self.images_per_second:.0f} img/s, "
                f"loss {self.final_loss:.4g}, stopped by {self.stopped_by}")


def prepare_config(cfg: RunConfig, data: ImageDataset) -> RunConfig:
    """``cfg`` with the network's input shape set from ``data``."""
    shape = (data.channels, data.image_size, data.image_size)
    return family_spec(cfg.family).adapt_to_data(cfg, shape, data.num_classes)


def train_run(cfg: RunConfig, out_dir: str | os.PathLike[str], *, resume: bool = False,
              progress: bool = True) -> TrainRunResult:
    """Train ``cfg`` into ``out_dir`` (resume its checkpoint when ``resume``); works under ``torchrun``."""
    from elbolab.train import Trainer, shutdown_distributed

    out_dir = Path(out_dir)
    if resume and (out_dir / CONFIG_FILE).exists():
        saved = load_toml(out_dir / CONFIG_FILE, RunConfig)
        if dataclasses.replace(saved, train=cfg.train) != dataclasses.replace(cfg, train=saved.train):
            logger.warning("resuming %s with a config that differs from its config.toml in more than [train]; "
                           "the model is built from config.toml", out_dir)
        cfg = dataclasses.replace(saved, train=cfg.train)
    data = load_dataset(cfg.data)
    cfg = prepare_config(cfg, data)
    spec = family_spec(cfg.family)
    torch.manual_seed(cfg.train.seed)  # network initialisation
    model = spec.build_model(cfg)
    objective = spec.build_objective(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("%s: %s on %s (%d images, %dx%dx%d), %.2f M parameters", out_dir, cfg.family.value, data.name,
                len(data), data.channels, data.image_size, data.image_size, n_params / 1e6)

    def sample_fn(m: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        return spec.sample(cfg, m, n, generator, SampleRequest(n=n)).images

    # an autoencoder has no prior: no sample grids (its reconstructions are what `elbolab interpolate` shows)
    can_sample = not (cfg.family is Family.AE)
    trainer = Trainer(model, objective, data, cfg.train, out_dir, run_config=cfg,
                      sample_fn=sample_fn if can_sample else None,
                      resume=resume, progress=progress)
    try:
        result = trainer.fit()
    finally:
        shutdown_distributed()
    return TrainRunResult(
        out_dir=out_dir, config=cfg, step=result.step, wall_seconds=result.wall_seconds,
        images_per_second=result.images_per_second,
        final_loss=result.losses[-1] if result.losses else float("nan"),
        stopped_by=result.stopped_by.value, is_main_process=trainer.dist.is_main,
    )


# --------------------------------------------------------------------------------------------------
# Load and sample
# --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A trained run loaded for use: ``model`` (EMA weights unless asked otherwise, eval mode) at ``step``."""

    folder: Path
    config: RunConfig
    model: nn.Module
    step: int
    spec: FamilySpec = field(repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_run(folder: str | os.PathLike[str], *, use_ema: bool = True, device: str | torch.device = "cpu") -> Run:
    """Open a run folder; a missing folder, config or checkpoint is a clear error."""
    from elbolab.train import load_weights

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist (train one with: elbolab train PRESET --out "
                                f"{folder})")
    if not (folder / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}: not an elbolab run folder")
    cfg = load_toml(folder / CONFIG_FILE, RunConfig)
    spec = family_spec(cfg.family)
    model = spec.build_model(cfg)
    step = load_weights(folder, model, ema=use_ema)
    model.to(device).eval()
    return Run(folder=folder, config=cfg, model=model, step=step, spec=spec)


def draw_samples(run: Run, request: SampleRequest) -> SampleBatch:
    """``request.n`` samples in batches of ``request.batch_size`` from one generator seeded ``request.seed``."""
    gen = torch.Generator(run.device).manual_seed(request.seed)
    images, labels, nfe, method = [], [], 0, ""
    done = 0
    while done < request.n:
        b = min(request.batch_size, request.n - done)
        batch = run.spec.sample(run.config, run.model, b, gen, request)
        images.append(batch.images.float().cpu())
        if batch.labels is not None:
            labels.append(batch.labels.cpu())
        nfe, method = batch.nfe, batch.method
        done += b
    return SampleBatch(images=torch.cat(images), labels=torch.cat(labels) if labels else None, nfe=nfe,
                       method=method)


def sample_run(run: Run, request: SampleRequest, out: str | os.PathLike[str]) -> list[Path]:
    """Sample ``run`` and write a PNG grid at ``out`` and the raw samples beside it (``.npz``)."""
    from elbolab.evaluate import save_samples_npz
    from elbolab.viz.grid import save_image_grid

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: expected a .png path (the .npz is written beside it)")
    t0 = time.perf_counter()
    batch = draw_samples(run, request)
    seconds = time.perf_counter() - t0
    save_image_grid(batch.images, out, nrow=max(1, int(round(request.n ** 0.5))))
    npz = out.with_suffix(".npz")
    meta = {"run": str(run.folder), "step": run.step, "seed": request.seed, "nfe": batch.nfe,
            "method": batch.method,
            "seconds_per_image": seconds / request.n}
    save_samples_npz(npz, batch.images, labels=batch.labels, meta=meta)
    logger.info("%d samples in %.1f s (%.3f s/img, %d network evaluations each)", request.n, seconds,
                seconds / request.n, batch.nfe)
    return [out, npz]


# --------------------------------------------------------------------------------------------------
# Evaluate
# --------------------------------------------------------------------------------------------------
@dataclass
class EvalRequest:
    """``metrics``: subset of fid, kid, is, pr, bpd; ``n`` samples for sample metrics; ``bpd_n`` test images
    for bits/dim (``exact``: all T denoising terms, else a Monte Carlo estimate over t)."""

    metrics: list[str]
    n: int = 10000
    bpd_n: int = 256
    sampler: str | None = None
    steps: int | None = None
    seed: int = 0
    samples: str | None = None
    exact: bool = False


@dataclass
class EvalReport:
    path: Path
    text: str

    def to_text(self) -> str:
        return self.text


def evaluate_run(run: Run, request: EvalRequest) -> EvalReport:
    """Evaluate ``run`` (writes ``<run>/metrics.json``)."""
    from elbolab.evaluate import format_eval_table, parse_metrics
    from elbolab.evaluate import evaluate_run as evaluate_folder

    metrics = parse_metrics(request.metrics)
    sample_request = SampleRequest(n=min(request.n, 256), sampler=request.sampler, steps=request.steps,
                                   seed=request.seed)

    def sample_fn(n: int, generator: torch.Generator) -> torch.Tensor:
        return run.spec.sample(run.config, run.model, n, generator, sample_request).images

    bound_fn = run.spec.bound_fn(run.config, run.model, request.exact)
    if "bpd" in {m.value for m in metrics} and bound_fn is None:
        raise ValueError(f"family {run.config.family.value!r} has no likelihood bound: drop 'bpd' from --metrics")
    result = evaluate_folder(
        run.folder, metrics, n=request.n, sample_fn=sample_fn, samples_path=request.samples, bound_fn=bound_fn,
        bpd_method=run.spec.bpd_method or "none", bpd_n=request.bpd_n, seed=request.seed,
    )
    return EvalReport(path=run.folder / "metrics.json", text=format_eval_table(result))


@dataclass
class VAEDiagnostics:
    """What ``elbolab eval --iwae K / --active-units / --probe`` measured on a VAE-family run (None: not asked)."""

    likelihood: LikelihoodReport | None = None  # on the first ``n`` test images
    active_units: ActiveUnits | None = None  # on the test split
    probe: ProbeResult | None = None  # linear probe, train split -> test split

    def to_text(self) -> str:
        lines = []
        if self.likelihood is not None:
            lines.append(self.likelihood.to_text())
        if self.active_units is not None:
            au = self.active_units
            lines.append("active units per layer: " + ", ".join(f"{c}/{d}" for c, d in zip(au.counts, au.dims)))
        if self.probe is not None:
            lines.append(f"linear probe on the encoder's code: test accuracy {self.probe.test_accuracy:.4f} "
                         f"(train {self.probe.train_accuracy:.4f}, {self.probe.num_features} features)")
        return "\n".join(lines)


def image_batches(ds: ImageDataset, n: int, batch: int, with_labels: bool = False):
    """The first ``n`` images of ``ds`` in order, ``batch`` at a time: ``x: (B, C, H, W)`` or ``(x, y: (B,))``."""
    for i in range(0, n, batch):
        x, y = ds.batch(torch.arange(i, min(n, i + batch)))
        yield (x, y) if with_labels else x


def vae_diagnostics(run: Run, *, iwae: int = 0, n: int = 1000, active: bool = False, probe: bool = False,
                    seed: int = 0, progress: bool = True) -> VAEDiagnostics:
    """ELBO and IWAE_``iwae`` NLL on the first ``n`` test images (0 = all), active units (Burda et al. 2016) and
    a linear probe of the encoder's code, for a ``vae``/``hvae``/``ae`` run; writes ``<run>/vae_metrics.json``.
    An autoencoder has no likelihood and no stochastic code: only ``probe`` applies to it."""
    from elbolab.config import atomic_write_text
    from elbolab.vae import active_units, evaluate_likelihood, extract_features, linear_probe

    family = run.config.family
    if family not in (Family.VAE, Family.HVAE, Family.AE):
        raise ValueError(f"--iwae/--active-units/--probe are for vae, hvae and ae runs; {run.folder} is "
                         f"{family.value!r}")
    if family is Family.AE and (iwae or active):
        raise ValueError("an autoencoder (family 'ae') has no likelihood or posterior: only --probe applies")
    if iwae < 0 or n < 0:
        raise ValueError(f"iwae = {iwae} and n = {n} must be >= 0")
    test = load_dataset(dataclasses.replace(run.config.data, split="test"))
    gen = torch.Generator().manual_seed(seed)
    out = VAEDiagnostics()
    model = run.model
    if iwae:
        m = len(test) if n == 0 else min(n, len(test))
        out.likelihood = evaluate_likelihood(model, image_batches(test, m, 100), iwae, gen, progress=progress)
    if active:
        out.active_units = active_units(model, image_batches(test, len(test), 500), gen)
    if probe:
        train = load_dataset(dataclasses.replace(run.config.data, split="train"))
        f_tr, y_tr = extract_features(model, image_batches(train, len(train), 1000, with_labels=True))
        f_te, y_te = extract_features(model, image_batches(test, len(test), 1000, with_labels=True))
        out.probe = linear_probe(f_tr, y_tr, f_te, y_te)
    record = {"step": run.step,
              "likelihood": out.likelihood.to_dict() if out.likelihood is not None else None,
              "active_units": out.active_units.to_dict() if out.active_units is not None else None,
              "probe": out.probe.to_dict() if out.probe is not None else None}
    atomic_write_text(run.folder / "vae_metrics.json", json.dumps(record, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------------
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

    def to_text(self) -> str:
        e = self.elbo
        lines = [
            f"demo run: {self.out_dir}/ ({self.train.summary()})",
            f"samples : {self.grid} (8x8, DDIM eta = {self.train.config.sample.eta:g}, "
            f"{self.train.config.sample.steps} steps, "
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
            f"  total (negative ELBO)                {e['total']:.4f} +- {e['total_stderr']:.4f}",
            f"total wall time {self.total_seconds / 60:.1f} min; metrics in {self.out_dir / 'demo.json'}",
        ]
        return "\n".join(lines)


def _demo_fidelity(run: Run, samples: torch.Tensor, seed: int) -> dict[str, float]:
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
             elbo_images: int = 128, confidence_samples: int = 256, progress: bool = True) -> DemoReport:
    """Train ``ddpm-mnist`` on the embedded MNIST, sample with DDIM (an 8x8 grid of the first 64), score the
    samples with the shipped MNIST classifier (fraction labelled with confidence >= 0.9) and compute the ELBO
    terms on held-out test images.

    A previous demo in ``out_dir`` is moved to ``<out_dir>.prev`` (one generation kept).
    """
    from elbolab.diffusion import build_diffusion, elbo_terms
    from elbolab.evaluate import save_samples_npz
    from elbolab.evaluate.pipeline import classifier_confidence
    from elbolab.viz.grid import save_image_grid

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists():
        prev = out_dir.with_name(out_dir.name + ".prev")
        if prev.exists():
            shutil.rmtree(prev)
        out_dir.rename(prev)
        logger.info("moved the previous demo to %s", prev)
    overrides = [f"train.seed={seed}"]
    if minutes is not None:
        overrides.append(f"train.minutes={minutes}")
    cfg = apply_overrides(preset("ddpm-mnist"), overrides)
    trained = train_run(cfg, out_dir, progress=progress)
    run = load_run(out_dir)

    grid = out_dir / "samples" / "demo_grid.png"
    request = SampleRequest(n=confidence_samples, sampler=SamplerKind.DDIM, steps=cfg.sample.steps, seed=seed)
    t_sample = time.perf_counter()
    batch = draw_samples(run, request)
    sample_seconds = time.perf_counter() - t_sample
    save_image_grid(batch.images[:64], grid, nrow=8)
    save_samples_npz(out_dir / "samples" / "demo_samples.npz", batch.images, meta={"method": batch.method})
    confidence = classifier_confidence(batch.images, "mnist")
    fidelity = _demo_fidelity(run, batch.images, seed)

    held_out = load_dataset(dataclasses.replace(run.config.data, split="test", limit=elbo_images))
    x0, _ = held_out.batch(torch.arange(len(held_out)))
    terms = elbo_terms(build_diffusion(run.config.diffusion), run.model, x0,
                       generator=torch.Generator().manual_seed(seed), t_samples=16, progress=progress)
    elbo = {k: float(getattr(terms, k)) for k in ("reconstruction", "prior", "denoising", "total",
                                                  "reconstruction_stderr", "denoising_stderr", "total_stderr")}
    report = DemoReport(out_dir=out_dir, train=trained, grid=grid, elbo=elbo, elbo_images=len(held_out),
                        confident_fraction=confidence.fraction, confidence_n=confidence.n,
                        sample_seconds_per_image=sample_seconds / confidence.n, fidelity=fidelity,
                        total_seconds=time.perf_counter() - t_start)
    from elbolab.config import atomic_write_text

    atomic_write_text(out_dir / "demo.json", json.dumps({
        "train": {"step": trained.step, "minutes": trained.wall_seconds / 60, "img_per_s": trained.images_per_second,
                  "final_loss": trained.final_loss}, "elbo_bpd": elbo, "elbo_images": len(held_out),
        "confident_fraction": confidence.fraction, "confidence_n": confidence.n,
        "confidence_class_counts": confidence.class_counts, "fidelity": fidelity,
        "sample_seconds_per_image": report.sample_seconds_per_image, "sampler": batch.method,
        "grid": str(grid), "total_minutes": report.total_seconds / 60}, indent=2) + "\n")
    return report


__all__ = ["DemoReport", "EvalReport", "EvalRequest", "Run", "SampleRequest", "TrainRunResult",
           "VAEDiagnostics", "draw_samples", "evaluate_run", "image_batches", "load_run", "prepare_config", "run_demo", "sample_run",
           "train_run", "vae_diagnostics"]
