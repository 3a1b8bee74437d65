"""Operations on a run folder, the same for every family: train, load, sample, evaluate, diagnose.

A run is a folder (DESIGN.md, :mod:`elbolab.run_format`): ``config.toml``, ``model.safetensors``,
``ema.safetensors``, ``trainer_state.*``, ``metrics.jsonl``, ``samples/``, ``run.json``. These functions glue a
:class:`RunConfig` to the data layer, the family's network, objective and samplers (:mod:`elbolab.families`),
the Trainer and the evaluation; they hold no family-specific code. Randomness is a seeded ``torch.Generator``
on the run's device everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from elbolab.config import RunConfig, load_toml
from elbolab.data import ImageDataset, load_dataset
from elbolab.evaluate.samples import draw_in_batches
from elbolab.families import DiagnosticsRequest, ModelFamily, SampleBatch, SampleRequest, get_family
from elbolab.io import atomic_write_json
from elbolab.errors import RunFolderError
from elbolab.run_format import CONFIG_FILE, run_format
from elbolab.runlock import RunLock

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    """CUDA when available, else the CPU (the default of ``--device``)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` = :func:`default_device`; otherwise a device torch knows and this machine has."""
    if device is None or device == "auto":
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


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
    stopped_by: Any  # elbolab.train.StopReason
    is_main_process: bool

    @property
    def interrupted(self) -> bool:
        from elbolab.train import StopReason

        return self.stopped_by is StopReason.INTERRUPTED

    def summary(self) -> str:
        return (f"step {self.step}, {self.wall_seconds / 60:.1f} min, {self.images_per_second:.0f} img/s, "
                f"loss {self.final_loss:.4g}, stopped by {self.stopped_by.value}")


def prepare_config(cfg: RunConfig, data: ImageDataset) -> RunConfig:
    """``cfg`` with the network's input shape set from ``data``."""
    shape = (data.channels, data.image_size, data.image_size)
    return get_family(cfg.family).adapt_to_data(cfg, shape, data.num_classes)


def train_run(cfg: RunConfig, out_dir: str | os.PathLike[str], *, resume: bool = False,
              progress: bool = True, on_step: Callable[[Any], None] | None = None) -> TrainRunResult:
    """Train ``cfg`` into ``out_dir`` (resume its checkpoint when ``resume``); works under ``torchrun``.
    ``on_step(trainer)``: :class:`elbolab.train.Trainer`'s per-step callback.

    The run folder is locked for the whole call (:class:`elbolab.runlock.RunLock`, rank 0 only): a second
    writer is refused with the PID and command of the first."""
    with RunLock(out_dir):
        return _train_run(cfg, Path(out_dir), resume=resume, progress=progress, on_step=on_step)


def _train_run(cfg: RunConfig, out_dir: Path, *, resume: bool, progress: bool,
               on_step: Callable[[Any], None] | None = None) -> TrainRunResult:
    from elbolab.train import Trainer, shutdown_distributed

    if resume and (out_dir / CONFIG_FILE).exists():
        run_format(out_dir)  # a newer format is an error before anything is written
        saved = load_toml(out_dir / CONFIG_FILE, RunConfig)
        if saved.family != cfg.family:
            raise RunFolderError(f"{out_dir} holds a {saved.family!r} run, not {cfg.family!r}: resume it with its "
                                 f"own config (elbolab train {out_dir}/{CONFIG_FILE} --out {out_dir} --resume) or "
                                 "choose another --out")
        requested = prepare_config(cfg, load_dataset(cfg.data))
        differ = [f.name for f in dataclasses.fields(RunConfig)
                  if f.name != "train" and getattr(saved, f.name) != getattr(requested, f.name)]
        if differ:
            logger.warning("resuming %s with a config whose %s differ from its config.toml; the run continues "
                           "with config.toml's (only [train] may change on resume)", out_dir,
                           ", ".join(f"[{d}]" for d in differ))
        cfg = dataclasses.replace(saved, train=cfg.train)
    data = load_dataset(cfg.data)
    cfg = prepare_config(cfg, data)
    family = get_family(cfg.family)
    torch.manual_seed(cfg.train.seed)  # network initialisation
    model = family.build_model(cfg)
    objective = family.build_objective(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("%s: %s on %s (%d images, %dx%dx%d), %.2f M parameters", out_dir, cfg.family, data.name,
                len(data), data.channels, data.image_size, data.image_size, n_params / 1e6)

    def sample_fn(m: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
        return family.sample(cfg, m, n, generator, SampleRequest(n=n)).images

    # a family without samplers (an autoencoder) has no sample grids
    trainer = Trainer(model, objective, data, cfg.train, out_dir, run_config=cfg,
                      sample_fn=sample_fn if family.capabilities.sample else None,
                      resume=resume, progress=progress, on_step=on_step)
    try:
        result = trainer.fit()
    finally:
        shutdown_distributed()
    return TrainRunResult(
        out_dir=out_dir, config=cfg, step=result.step, wall_seconds=result.wall_seconds,
        images_per_second=result.images_per_second,
        final_loss=result.losses[-1] if result.losses else float("nan"),
        stopped_by=result.stopped_by, is_main_process=trainer.dist.is_main,
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
    family: ModelFamily = field(repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_run(folder: str | os.PathLike[str], *, use_ema: bool = True,
             device: str | torch.device | None = "cpu") -> Run:
    """Open a run folder on ``device`` (``None``/``"auto"``: CUDA when available); a missing folder, config or
    checkpoint, or a folder of a newer run format, is a clear error."""
    from elbolab.train import load_weights

    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"run folder {folder} does not exist (train one with: elbolab train PRESET --out "
                             f"{folder})")
    if not (folder / CONFIG_FILE).exists():
        raise RunFolderError(f"{folder} has no {CONFIG_FILE}: not an elbolab run folder")
    run_format(folder)
    cfg = load_toml(folder / CONFIG_FILE, RunConfig)
    family = get_family(cfg.family)
    model = family.build_model(cfg)
    step = load_weights(folder, model, ema=use_ema)
    model.to(parse_device(device)).eval()
    return Run(folder=folder, config=cfg, model=model, step=step, family=family)


def draw_samples(run: Run, request: SampleRequest, *, progress: bool = False) -> SampleBatch:
    """``request.n`` samples in batches of ``request.batch_size`` from one generator seeded ``request.seed`` on
    the run's device (the batching loop is :func:`elbolab.evaluate.samples.draw_in_batches`)."""
    gen = torch.Generator(run.device).manual_seed(request.seed)

    def batch_fn(b: int, generator: torch.Generator) -> SampleBatch:
        return run.family.sample(run.config, run.model, b, generator, request)

    return draw_in_batches(batch_fn, request.n, request.batch_size, gen, progress=progress)


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
            "method": batch.method, "seconds_per_image": seconds / request.n}
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
    for bits/dim (``exact``: the tight version of the family's bound, e.g. all T denoising terms);
    ``sampler`` / ``options``: as in :class:`SampleRequest`."""

    metrics: list[str]
    n: int = 10000
    bpd_n: int = 256
    sampler: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
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
    """Evaluate ``run`` (writes ``<run>/metrics.json``) with :func:`elbolab.evaluate.evaluate_folder`."""
    from elbolab.evaluate import evaluate_folder, format_eval_table, parse_metrics

    metrics = parse_metrics(request.metrics)
    # a conditional model's labels are drawn from its class prior: FID and precision/recall score samples of p(x)
    sample_request = SampleRequest(n=min(request.n, 256), sampler=request.sampler, options=request.options,
                                   seed=request.seed, labels="prior")

    def sample_fn(n: int, generator: torch.Generator) -> SampleBatch:
        return run.family.sample(run.config, run.model, n, generator, sample_request)

    bound_fn = run.family.bound_fn(run.config, run.model, request.exact)
    if "bpd" in {m.value for m in metrics} and bound_fn is None:
        raise ValueError(f"family {run.config.family!r} has no likelihood bound: drop 'bpd' from --metrics")
    with RunLock(run.folder):  # it writes metrics.json and samples/ into the run
        result = evaluate_folder(
            run.folder, metrics, n=request.n, sample_fn=sample_fn, samples_path=request.samples, bound_fn=bound_fn,
            bpd_method=run.family.bpd_method or "none", bpd_n=request.bpd_n, seed=request.seed, device=run.device,
        )
    return EvalReport(path=run.folder / "metrics.json", text=format_eval_table(result))


DIAGNOSTICS_FILE = "diagnostics.json"


def diagnose_run(run: Run, request: DiagnosticsRequest) -> Any:
    """The family's diagnostics of ``run`` (``elbolab eval --iwae/--active-units/--probe``), also written to
    ``<run>/diagnostics.json``; the result has ``to_text()`` and ``to_dict()``."""
    out = run.family.diagnostics(run, request)
    with RunLock(run.folder):
        atomic_write_json(run.folder / DIAGNOSTICS_FILE, {"step": run.step, "family": run.config.family,
                                                          **out.to_dict()})
    return out


def image_batches(ds: ImageDataset, n: int, batch: int, with_labels: bool = False,
                  device: torch.device | str = "cpu"):
    """The first ``n`` images of ``ds`` in order, ``batch`` at a time, on ``device``: ``x: (B, C, H, W)`` or
    ``(x, y: (B,))``."""
    for i in range(0, n, batch):
        x, y = ds.batch(torch.arange(i, min(n, i + batch)))
        x = x.to(device)
        yield (x, y.to(device) if y is not None else None) if with_labels else x


__all__ = ["EvalReport", "EvalRequest", "Run", "SampleRequest", "TrainRunResult", "default_device",
           "diagnose_run", "draw_samples", "evaluate_run", "image_batches", "load_run", "parse_device",
           "prepare_config", "sample_run", "train_run"]
