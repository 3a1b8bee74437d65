"""The quality table: one row per trained run (model family), the first row real test data against real
training data, the floor no model can beat.

    family | params | train minutes | train img/s | test bits/dim | FID | KID | IS | precision | recall |
    sample s/img | NFE

Usage (from the repository root):

    # the floor row only (real MNIST test vs real MNIST train)
    python benchmarks/quality.py --data-dir ../shared/data/mnist
    # plus trained runs (run folders of DESIGN.md: config.toml, model.safetensors, ema.safetensors, ...)
    python benchmarks/quality.py --data-dir ../shared/data/mnist --runs runs/demo runs/ddpm-60min \
        --n 2000 --sampler ddim --steps 50 --bpd-n 256
    # reuse samples instead of drawing them: RUN=SAMPLES.npz
    python benchmarks/quality.py --runs runs/gan --samples runs/gan=runs/gan/samples/eval_2000.npz

    # the one table across families (issue 17): train every family's full-MNIST preset for the same budget
    # (one thread each, two at a time; a finished run folder is reused, a killed one resumed), then score them
    python benchmarks/quality.py --all-presets --minutes 30 --data-dir ../shared/data/mnist \
        --runs-dir runs/families --reuse ddpm=benchmarks/reference-runs/ddpm60 --out benchmarks/results/families

Writes ``benchmarks/results/quality.json`` and ``quality.md`` (atomically). Samples of a run are drawn through
a generic ``sample_fn(batch, generator) -> (B, C, H, W) in [-1, 1]`` (:class:`RunSampler`, any family that
``elbolab.runs.load_run`` opens) and saved to ``RUN/samples/eval_<n>.npz`` for reuse; bits/dim come from the
family's ``bound_fn`` (Monte Carlo over t unless ``--exact``; families without a bound show '-').
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open

from elbolab.config import DataConfig, RunConfig, load_toml
from elbolab.host import host_info
from elbolab.io import atomic_write_text
from elbolab.data import load_dataset
from elbolab.evaluate import (EvalSettings, Metric, evaluate_bpd, evaluate_samples, generate_samples, load_reference,
                              load_samples_npz, save_samples_npz)
from elbolab.evaluate.report import QualityRow, format_quality_table, quality_rows_to_json
from elbolab.evaluate.samples import SampleSet
from elbolab.families import SampleRequest
from elbolab.runs import Run, load_run

logger = logging.getLogger("benchmarks.quality")

SAMPLE_METRICS = {Metric.FID, Metric.KID, Metric.IS, Metric.PR}


@dataclass
class RunInfo:
    """What a run folder says about its training: family, parameter count, minutes and images per second."""

    family: str
    params: int | None
    train_minutes: float | None
    train_img_per_s: float | None
    config: RunConfig


def count_params(path: Path) -> int | None:
    """Number of weights in a safetensors file (without loading them)."""
    if not path.exists():
        return None
    n = 0
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            size = 1
            for s in shape:
                size *= s
            n += size
    return n


def read_run(run_dir: Path) -> RunInfo:
    """Family and training figures of a run from config.toml, model.safetensors and metrics.jsonl."""
    cfg = load_toml(run_dir / "config.toml", RunConfig)
    minutes = img_s = None
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        times = [r["time"] for r in records if "time" in r]
        rates = [r["img/s"] for r in records if "img/s" in r]
        minutes = max(times) / 60.0 if times else None
        img_s = sum(rates) / len(rates) if rates else None
    return RunInfo(family=cfg.family, params=count_params(run_dir / "model.safetensors"),
                   train_minutes=minutes, train_img_per_s=img_s, config=cfg)


class RunSampler:
    """``sample_fn(batch, generator)`` over a loaded run (any family, through ``elbolab.runs``); remembers the
    network evaluations per sample of the last batch in ``nfe``."""

    def __init__(self, run: Run, sampler: str | None, steps: int | None, **options: Any) -> None:
        self.run, self.nfe, self.method = run, 0, ""
        opts = {k: v for k, v in {"steps": steps, **options}.items() if v is not None}
        self.request = SampleRequest(n=1, sampler=sampler, options=opts)

    def __call__(self, b: int, generator: torch.Generator) -> torch.Tensor:
        batch = self.run.family.sample(self.run.config, self.run.model, b, generator, self.request)
        self.nfe, self.method = batch.nfe, batch.method
        return batch.images


def floor_row(dataset: str, data_dir: str, n: int, settings: EvalSettings) -> tuple[QualityRow, dict[str, Any]]:
    """Real test images (first ``n``) against the real training split: the floor of every metric."""
    test = load_dataset(DataConfig(name=dataset, data_dir=data_dir, split="test", limit=n))
    t0 = time.perf_counter()
    result = evaluate_samples(test.images, dataset, SAMPLE_METRICS, reference_split="train", data_dir=data_dir,
                              settings=settings)
    logger.info("floor row in %.0f s", time.perf_counter() - t0)
    row = QualityRow.from_eval("real test vs real train", result, note=f"n={result.n_samples}")
    return row, {"family": row.family, "n": result.n_samples, "reference": result.reference,
                 "fid": result.fid.fid if result.fid else None}


def run_row(run_dir: Path, dataset: str, data_dir: str, n: int, settings: EvalSettings, samples: Path | None,
            sampler: str | None, steps: int | None, bpd_n: int, exact: bool, seed: int,
            options: dict[str, Any] | None = None) -> QualityRow:
    """One row: draw (or reuse) ``n`` samples of the run, score them, and bits/dim on ``bpd_n`` test images."""
    info = read_run(run_dir)
    run = load_run(run_dir)
    if samples is not None:
        sample_set: SampleSet = load_samples_npz(samples)
        sample_set.images = sample_set.images[:n]
        nfe = sample_set.meta.get("nfe")
        s_per_img = sample_set.meta.get("sample_s_per_img", sample_set.meta.get("seconds_per_image"))
    else:
        sample_fn = RunSampler(run, sampler, steps, **(options or {}))
        sample_set = generate_samples(sample_fn, n, batch_size=min(250, n), generator=torch.Generator().manual_seed(seed))
        s_per_img, nfe = sample_set.seconds / n, sample_fn.nfe
        save_samples_npz(run_dir / "samples" / f"eval_{n}.npz", sample_set.images,
                         meta={"sampler": sampler or info.config.sample.sampler.value, "steps": steps, "nfe": nfe,
                               "seed": seed, "sample_s_per_img": s_per_img, "options": options or {}})
    result = evaluate_samples(sample_set, dataset, SAMPLE_METRICS, reference_split="train", data_dir=data_dir,
                              settings=settings)
    bound_fn = run.family.bound_fn(run.config, run.model, exact)
    if bound_fn is not None and bpd_n:
        result.bpd = evaluate_bpd(bound_fn, dataset, run.family.bpd_method, data_dir=data_dir, n=bpd_n, seed=seed)
    return QualityRow.from_eval(info.family, result, params=info.params, train_minutes=info.train_minutes,
                                train_img_per_s=info.train_img_per_s, sample_s_per_img=s_per_img, nfe=nfe,
                                note=run_dir.name + "".join(f", {k}={v}" for k, v in (options or {}).items()))


# --------------------------------------------------------------------------------------------------
# --all-presets: one row per family, each trained from its full-MNIST preset for the same budget
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilyPreset:
    """A family's row of the table: its preset, the samples behind its sample metrics, and its likelihood
    (``nll``: "ELBO" = the family's bound, "IWAE-5000" = the VAE diagnostics, "exact" = PixelCNN, "" = none)."""

    family: str
    preset: str
    n: int = 1000
    nll: str = ""
    overrides: tuple[str, ...] = ()
    #: the sampler and its options (None / (): the run's own ``[sample]``); ``row``: the row's name (the family)
    sampler: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    row: str = ""

    @property
    def name(self) -> str:
        return self.row or self.family


#: DDPM and VDM at their best sampler with <= 25 NFE (benchmarks/results/sampler_quality_*.md, vdm_bpd.md); NCSN
#: twice: annealed Langevin (its preset's sampler) and DDIM eta = 1 on the VE form of its levels
_FAST = (("steps", 25), ("spacing", "trailing"), ("eta", 1.0))
FAMILY_PRESETS = (
    # unconditional like every other row (the preset is the demo's class-conditional model)
    FamilyPreset("ddpm", "ddpm-mnist", nll="ELBO", sampler="ddim", options=_FAST,
                 overrides=("unet.num_classes=0", "sample.guidance=-1")),
    FamilyPreset("vdm", "vdm-mnist-full", nll="ELBO", sampler="ancestral", options=(("steps", 25),)),
    FamilyPreset("ncsn", "ncsn-mnist"),
    # the VE levels on the angle grid (the preset's own; 3.19 against 3.55 on the trailing grid, session 11)
    FamilyPreset("ncsn", "ncsn-mnist", sampler="ddim", options=(("steps", 25), ("spacing", "angle"), ("eta", 1.0)),
                 row="ncsn (VE ddim)"),
    FamilyPreset("gan", "gan-sn-hinge-mnist"),
    # 8-bit MNIST: the Burda et al. architectures with the discretised decoder, so bits/dim compare across rows
    FamilyPreset("vae", "vae-burda-mnist", nll="IWAE-5000", overrides=("vae.likelihood=discretized",)),
    FamilyPreset("hvae", "hvae-burda-mnist", nll="IWAE-5000", overrides=("vae.likelihood=discretized",)),
    FamilyPreset("pixelcnn", "pixelcnn-mnist", n=256, nll="exact"),
)


def _run_finished(run_dir: Path, minutes: float) -> bool:
    """A run folder whose last checkpoint was written after ``minutes`` of training: the trainer state's share of
    the minutes budget is 1 (else, for older folders, the last metrics.jsonl time is >= 98 % of the budget)."""
    try:
        state = json.loads((run_dir / "trainer_state.json").read_text())["state"]
        if (run_dir / "checkpoint.json").exists() and float(state.get("time_progress", 0.0)) >= 0.999:
            return True
    except (OSError, KeyError, TypeError, ValueError):
        pass
    try:
        last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()][-1]
    except (OSError, IndexError, json.JSONDecodeError):
        return False
    return (run_dir / "checkpoint.json").exists() and float(last.get("time", 0.0)) >= 60.0 * minutes * 0.98


def train_presets(presets: list[FamilyPreset], runs_dir: Path, minutes: float, data_dir: str,
                  parallel: int) -> dict[str, Path]:
    """Train each preset into ``runs_dir/<preset>`` with ``elbolab train`` (a subprocess, one thread each,
    ``parallel`` at a time); reuse finished folders and resume killed ones. Returns family -> run folder."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    todo, out = [], {}
    for fp in presets:
        run_dir = runs_dir / fp.preset
        if fp.family in out:  # a second row of the same run
            continue
        out[fp.family] = run_dir
        if _run_finished(run_dir, minutes):
            logger.info("%s: reusing the finished run %s", fp.family, run_dir)
            continue
        cmd = [sys.executable, "-m", "elbolab", "train", fp.preset, "--data", "mnist", "--minutes", str(minutes),
               "--out", str(run_dir)]
        cmd += ["--data-dir", data_dir] if data_dir else []
        cmd += [x for o in fp.overrides for x in ("--set", o)]
        cmd += ["--resume"] if (run_dir / "checkpoint.json").exists() else []
        todo.append((fp.family, cmd, run_dir))
    running: list[tuple[str, subprocess.Popen, Any]] = []
    while todo or running:
        while todo and len(running) < parallel:
            family, cmd, run_dir = todo.pop(0)
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(run_dir.parent / f"{run_dir.name}.log", "a")
            logger.info("training %s: %s", family, " ".join(cmd))
            running.append((family, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(5)
        for item in list(running):
            family, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                if proc.returncode != 0:
                    raise RuntimeError(f"training {family} failed (exit {proc.returncode}); see its .log")
    return out


def family_row(fp: FamilyPreset, run_dir: Path, dataset: str, data_dir: str, settings: EvalSettings, bpd_n: int,
               iwae_n: int, seed: int) -> tuple[QualityRow, torch.Tensor, dict[str, Any]]:
    """Score one family's run: ``fp.n`` samples (its default sampler), the likelihood of ``fp.nll``; returns the
    row, its first 64 samples (for the grid) and the extra figures (nll standard error, n of the likelihood)."""
    info = read_run(run_dir)
    run = load_run(run_dir)
    opts = dict(fp.options)
    sample_fn = RunSampler(run, fp.sampler, opts.pop("steps", None), **opts)
    sample_set = generate_samples(sample_fn, fp.n, batch_size=min(250, fp.n),
                                  generator=torch.Generator().manual_seed(seed))
    result = evaluate_samples(sample_set, dataset, SAMPLE_METRICS | {Metric.CONF}, reference_split="train",
                              data_dir=data_dir, settings=settings)
    extra: dict[str, Any] = {"row": fp.name, "preset": fp.preset, "run": str(run_dir), "n": fp.n,
                             "sampler": fp.sampler or run.config.sample.sampler, "options": dict(fp.options)}
    conf = result.confidence
    extra.update(confident=conf.fraction, class_share=[round(c / conf.n, 4) for c in conf.class_counts])
    if fp.family == "gan":
        extra["dstar"] = dstar_checks(run, dataset, data_dir, seed)
    nll = None
    if fp.nll == "IWAE-5000":
        from elbolab.families.base import DiagnosticsRequest
        from elbolab.runs import diagnose_run

        lik = diagnose_run(run, DiagnosticsRequest(iwae=5000, n=iwae_n, seed=seed, progress=False)).likelihood
        nll = lik.iwae_bpd
        extra.update(nll_stderr=lik.iwae_bpd_stderr, nll_n=lik.num_examples, iwae_nats=lik.iwae_nll,
                     elbo_bpd=lik.elbo_bpd, likelihood=lik.likelihood)
    elif fp.nll:
        bound_fn = run.family.bound_fn(run.config, run.model, fp.nll == "exact")
        bpd = evaluate_bpd(bound_fn, dataset, run.family.bpd_method, data_dir=data_dir, n=bpd_n, seed=seed,
                           data_config=run.config.data, progress=False)
        nll = bpd.value
        extra.update(nll_stderr=bpd.stderr, nll_n=bpd.n, nll_terms=bpd.terms)
    row = QualityRow.from_eval(fp.name, result, params=info.params, train_minutes=info.train_minutes,
                               train_img_per_s=info.train_img_per_s, sample_s_per_img=sample_set.seconds / fp.n,
                               nfe=sample_fn.nfe, note=f"{fp.preset}, {sample_fn.method}", nll_kind=fp.nll, n_samples=fp.n)
    row.test_bpd = nll
    images = sample_set.images[:64].float() / 127.5 - 1.0
    return row, images, extra


def cached_family_row(fp: FamilyPreset, run_dir: Path, dataset: str, data_dir: str, settings: EvalSettings,
                      bpd_n: int, iwae_n: int, seed: int) -> tuple[QualityRow, torch.Tensor, dict[str, Any]]:
    """:func:`family_row`, kept in ``run_dir/families_rows/<row>.{json,safetensors}`` and reused while the run's
    checkpoint, the row's settings and the evaluation sizes are the same (a rerun of the table re-scores only
    what changed)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from elbolab.io import atomic_write_bytes

    key = {"row": dataclasses.asdict(fp), "checkpoint": (run_dir / "checkpoint.json").read_text(),
           "dataset": dataset, "bpd_n": bpd_n, "iwae_n": iwae_n, "seed": seed,
           "settings": repr(settings)}
    slug = "".join(ch if ch.isalnum() else "_" for ch in fp.name)
    cache = run_dir / "families_rows"
    meta, grid = cache / f"{slug}.json", cache / f"{slug}.safetensors"
    try:
        saved = json.loads(meta.read_text())
        if saved["key"] == json.loads(json.dumps(key)):
            logger.info("%s: reusing the scored row %s", fp.name, meta)
            return QualityRow(**saved["row"]), load_file(grid)["images"], saved["extra"]
    except (OSError, KeyError, ValueError, TypeError, SafetensorError):  # absent or unreadable: score again
        pass
    row, images, extra = family_row(fp, run_dir, dataset, data_dir, settings, bpd_n, iwae_n, seed)
    cache.mkdir(exist_ok=True)
    tmp = grid.with_suffix(".tmp")
    save_file({"images": images.contiguous()}, str(tmp))
    atomic_write_bytes(grid, tmp.read_bytes())
    tmp.unlink()
    atomic_write_text(meta, json.dumps({"key": key, "row": dataclasses.asdict(row), "extra": extra}, indent=2))
    return row, images, extra


def rows_detail(extras: list[dict[str, Any]]) -> str:
    """The second table of --all-presets: each row's sampler, samples, classifier confidence, the share of the
    rarest and the commonest digit class (the classifier's labels), its NLL's n and standard error, and for
    the GAN the fresh logistic discriminator of the D* = 1/2 check."""
    lines = ["| row | preset, sampler | n | confident (p >= 0.9) | class share min / max | NLL (n, stderr) | "
             "D* check: D(real) / D(fake) / accuracy (pixels; 8-bit pixels; features) |", "|---|---|---|---|---|---|---|"]
    for e in extras:
        share = e.get("class_share") or [float("nan")]
        nll = f"{e['nll_n']}, {e['nll_stderr']:.4f}" if e.get("nll_n") else "-"
        d = e.get("dstar")
        dstar = "; ".join(f"{d[k]['d_real']:.3f} / {d[k]['d_fake']:.3f} / {d[k]['accuracy']:.3f}"
                          for k in ("pixels", "pixels_8bit", "features") if k in d) if d else "-"
        opts = ", ".join(f"{k}={v}" for k, v in e.get("options", {}).items())
        lines.append(f"| {e.get('row', '')} | {e.get('preset', '')}, {e.get('sampler', '')}"
                     f"{' (' + opts + ')' if opts else ''} | {e.get('n', '')} | {e.get('confident', float('nan')):.3f} | "
                     f"{min(share):.3f} / {max(share):.3f} | {nll} | {dstar} |")
    return "\n".join(lines)


def dstar_checks(run: Run | None, dataset: str, data_dir: str, seed: int, n: int = 2000,
                 sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> dict[str, Any]:
    """The D* = 1/2 check of lecture notes 003: a fresh logistic discriminator fitted on half of ``n`` held-out
    real test images against as many generated ones, read on the other half, on pixels, on pixels rounded to 8
    bits and on the shipped feature network's features. For a GAN run (``sampler`` None) the generator draws the
    samples (:func:`elbolab.gan.gan_dstar_check`); for any other family ``sampler`` does (the same check read as a
    classifier two-sample test, Lopez-Paz & Oquab 2017, so that every family is measured on the GAN's yardstick):
    ``sampler(b, generator)`` returns ``(b, C, H, W)`` float images in [-1, 1] (e.g. a :class:`RunSampler`).
    Returns ``{"pixels" | "pixels_8bit" | "features": FreshDiscriminatorCheck as a dict}``."""
    if sampler is None and (run is None or run.config.family != "gan"):
        raise ValueError("dstar_checks needs a sampler for a run that is not a GAN (got run = "
                         f"{None if run is None else run.config.family!r} and no sampler)")
    import dataclasses as dc

    from elbolab.evaluate import extract_features
    from elbolab.evaluate.features import load_feature_network
    from elbolab.evaluate.samples import draw_in_batches
    from elbolab.gan import fresh_discriminator_check, gan_dstar_check

    test = load_dataset(DataConfig(name=dataset, data_dir=data_dir, split="test", limit=n))
    real, _ = test.batch(torch.arange(len(test)))
    net = load_feature_network(dataset)
    features = lambda x: torch.from_numpy(extract_features(net, x).features).double()  # noqa: E731
    out = {}
    # generated images rounded to the 8-bit levels the real ones have (the raw tanh output never reaches the
    # exact -1 of an MNIST background, which a linear model on raw pixels picks up at once)
    to_8bit = lambda x: torch.round((x.clamp(-1, 1) + 1.0) * 127.5) / 127.5 - 1.0  # noqa: E731
    fake = None
    if sampler is not None:  # one sample set for every space; the split continues the sampling generator's stream
        g = torch.Generator().manual_seed(seed)
        fake = draw_in_batches(sampler, len(real), 250, g).images.to(real.dtype)  # floats, not 8-bit
        state = g.get_state()
    for name, fn in (("pixels", None), ("pixels_8bit", to_8bit), ("features", features)):
        if fake is None:
            check = gan_dstar_check(run.model, real, torch.Generator().manual_seed(seed), feature_fn=fn)
        else:
            g.set_state(state)
            with torch.no_grad():
                r, f = (real, fake) if fn is None else (fn(real), fn(fake))
            check = fresh_discriminator_check(r, f, g)
        out[name] = dc.asdict(check)
        logger.info("D* check on %s: D(real) %.3f, D(fake) %.3f, accuracy %.3f", name, check.d_real, check.d_fake,
                    check.accuracy)
    return out


def grids_png(grids: dict[str, torch.Tensor], path: Path) -> None:
    """One 8x8 grid per family, side by side, titled."""
    import io

    from matplotlib.figure import Figure

    from elbolab.io import atomic_write_bytes
    from elbolab.viz.grid import make_grid

    fig = Figure(figsize=(2.4 * len(grids), 2.7))
    for i, (name, images) in enumerate(grids.items()):
        ax = fig.add_subplot(1, len(grids), i + 1)
        arr = make_grid(images, nrow=8)
        ax.imshow(arr[:, :, 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def split_panels(path: Path) -> list[Any]:
    """The titled panels of a :func:`grids_png` figure, left to right, as (H, W, 3) uint8 arrays: the maximal runs
    of columns that are not all white (gaps under 3 columns, e.g. between title letters, do not split), each
    cropped to its non-white rows."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    ink = (rgb < 245).any(axis=2)
    cols = ink.any(axis=0)
    spans, start, gap = [], None, 0
    for x, c in enumerate([*cols, False, False, False]):
        if c:
            start, gap = (x if start is None else start), 0
        elif start is not None:
            gap += 1
            if gap == 3:
                spans.append((start, x - 2))
                start = None
    panels = []
    for a, b in spans:
        rows = np.flatnonzero(ink[:, a:b].any(axis=1))
        panels.append(rgb[rows[0]:rows[-1] + 1, a:b])
    return panels


def merge_grids_png(base: tuple[Path, list[str]], part: tuple[Path, list[str]], names: list[str], out: Path) -> bool:
    """The merged table's grids figure: the panel of each row in ``names`` from the part figure when the part
    scored it, else from the base figure (``(png, row names in panel order)`` each), side by side on white.
    Returns False (and writes nothing) when a figure is missing or its panel count does not match its rows."""
    import io

    import numpy as np
    from PIL import Image

    from elbolab.io import atomic_write_bytes

    found: dict[str, Any] = {}
    for png, rows in (base, part):
        if not png.is_file():
            logger.warning("merge: no grids figure %s; %s not written", png, out)
            return False
        panels = split_panels(png)
        if len(panels) != len(rows):
            logger.warning("merge: %s has %d panels for %d rows %s; %s not written", png, len(panels), len(rows),
                           rows, out)
            return False
        found.update(zip(rows, panels))
    chosen = [found[n] for n in names if n in found]
    pad = 16
    height = max(p.shape[0] for p in chosen) + 2 * pad
    canvas = np.full((height, sum(p.shape[1] for p in chosen) + pad * (len(chosen) + 1), 3), 255, dtype=np.uint8)
    x = pad
    for p in chosen:
        canvas[pad:pad + p.shape[0], x:x + p.shape[1]] = p
        x += p.shape[1] + pad
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return True


def families_header(minutes: float) -> str:
    """The paragraph above the families table (``--all-presets`` and ``--merge``)."""
    return (f"Every family on full MNIST, {minutes:g} training minutes each (one thread, two at a time); "
            "FID/KID/IS/precision/recall of n samples against the training set in the shipped MNIST feature "
            "space; NLL in bits/dim on 8-bit test images with its kind (ELBO: the family's bound; IWAE-5000: "
            "the importance-weighted bound, discretised decoder; exact: PixelCNN).\n\n")


def all_presets(args: argparse.Namespace, settings: EvalSettings, argv: list[str] | None) -> int:
    wanted = [f for f in args.families.split(",") if f] if args.families else [fp.family for fp in FAMILY_PRESETS]
    unknown = sorted(set(wanted) - {fp.family for fp in FAMILY_PRESETS})
    if unknown:
        raise SystemExit(f"--families: unknown {unknown}; choices: {', '.join(fp.family for fp in FAMILY_PRESETS)}")
    reuse = {}
    for item in args.reuse:
        family, _, run = item.partition("=")
        reuse[family] = Path(run)
    presets = [fp for fp in FAMILY_PRESETS if fp.family in wanted]
    runs = train_presets([fp for fp in presets if fp.family not in reuse], Path(args.runs_dir), args.minutes,
                         args.data_dir, args.parallel)
    runs.update(reuse)
    out = Path(args.out)
    t0 = time.perf_counter()
    floor, meta = floor_row(args.dataset, args.data_dir, 1000, settings)
    floor.n_samples = 1000
    rows, grids, extras = [floor], {}, [meta]
    for fp in presets:
        if args.row_n:
            fp = dataclasses.replace(fp, n=args.row_n)
        row, images, extra = cached_family_row(fp, runs[fp.family], args.dataset, args.data_dir, settings,
                                               args.bpd_n, args.iwae_n, args.seed)
        rows.append(row)
        grids[fp.name] = images
        extras.append(extra)
        header = families_header(args.minutes)
        atomic_write_text(out.with_suffix(".md"), header + format_quality_table(rows) + "\n\n" +
                          rows_detail(extras[1:]) + "\n")
        atomic_write_text(out.with_suffix(".json"), json.dumps(
            {"dataset": args.dataset, "minutes": args.minutes, "seconds": round(time.perf_counter() - t0, 1),
             "host": host_info(),
             "command": " ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
             "rows": quality_rows_to_json(rows), "extra": extras}, indent=2) + "\n")
    grids_png(grids, out.with_suffix(".png"))
    return 0


def merge_tables(base_path: Path, part_path: Path, out: Path, argv: list[str] | None) -> int:
    """The families table ``base_path`` (JSON of ``--all-presets``) with the rows that ``part_path`` (another
    ``--all-presets --families ...`` JSON) scored put in their place, matched by row name; the floor row and
    every other row stay as they were. Writes ``out.{md,json}``; the JSON keeps both tables' commands and hosts
    as ``sources`` and names the replaced rows, and ``out.png`` with each row's grid from the figure of the table
    that scored it (:func:`merge_grids_png`)."""
    tables = []
    for path in (base_path, part_path):
        try:
            table = json.loads(path.read_text())
            if not (table["rows"] and len(table["rows"]) == len(table["extra"]) and "minutes" in table):
                raise KeyError("rows / extra / minutes")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--merge: {path} is not a readable --all-presets JSON ({e})") from None
        tables.append(table)
    base, part = tables
    names = [e.get("row") for e in part["extra"][1:]]
    new = dict(zip(names, zip(part["rows"][1:], part["extra"][1:])))
    rows, extras, replaced = [base["rows"][0]], [base["extra"][0]], []
    for row, extra in zip(base["rows"][1:], base["extra"][1:]):
        if extra.get("row") in new:
            row, extra = new.pop(extra["row"])
            replaced.append(extra["row"])
        rows.append(row)
        extras.append(extra)
    for row, extra in new.values():  # rows the base table did not have
        rows.append(row)
        extras.append(extra)
        replaced.append(extra.get("row"))
    sources = base.get("sources") or [{k: base.get(k) for k in ("command", "host", "minutes")}]
    sources = [src for src in sources if src.get("command") != part.get("command")]  # a re-merge replaces its own
    sources = [*sources, {"command": part.get("command"), "host": part.get("host"), "minutes": part.get("minutes"),
                          "rows": replaced, "grids": str(part_path.with_suffix(".png"))}]
    row_names = lambda t: [e.get("row") for e in t["extra"][1:]]  # noqa: E731
    merged_png = merge_grids_png((base_path.with_suffix(".png"), row_names(base)),
                                 (part_path.with_suffix(".png"), row_names(part)), row_names({"extra": extras}),
                                 out.with_suffix(".png"))
    header = families_header(base["minutes"]) + "".join(
        f"Rows {', '.join(src['rows'])} retrained and scored by `{src.get('command')}` on "
        f"{(src.get('host') or {}).get('cpu', 'an unnamed host')}"
        f"{' (grids: `' + src['grids'] + '`)' if src.get('grids') else ''}.\n"
        for src in sources if src.get("rows")) + (
        f"The rest by the commands in the JSON's `sources`. Grids of every row: `{out.with_suffix('.png')}`.\n\n"
        if merged_png else "The rest by the commands in the JSON's `sources`.\n\n")
    table = [QualityRow(**r) for r in rows]
    atomic_write_text(out.with_suffix(".md"), header + format_quality_table(table) + "\n\n" +
                      rows_detail(extras[1:]) + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"dataset": base["dataset"], "minutes": base["minutes"], "sources": sources,
         "command": " ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
         "rows": rows, "extra": extras}, indent=2) + "\n")
    logger.info("merged %s into %s: %s", part_path, out, ", ".join(replaced))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", help="dataset of the feature network and the real data")
    p.add_argument("--data-dir", default="", help="folder with the dataset's files (e.g. ../shared/data/mnist)")
    p.add_argument("--runs", nargs="*", default=[], help="trained run folders, one row each")
    p.add_argument("--samples", nargs="*", default=[], metavar="RUN=NPZ", help="reuse samples for a run")
    p.add_argument("--n", type=int, default=10000, help="samples per run (and real test images of the floor row)")
    p.add_argument("--sampler", default=None, choices=["ddim", "ancestral"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option for --runs, e.g. --option spacing=angle (repeatable)")
    p.add_argument("--bpd-n", type=int, default=256, help="test images for bits/dim (0 = skip)")
    p.add_argument("--exact", action="store_true", help="exact bits/dim (all T terms) instead of Monte Carlo over t")
    p.add_argument("--kid-subset", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results/quality", help="output path without extension")
    p.add_argument("--all-presets", action="store_true",
                   help="train every family's full-MNIST preset for --minutes and write the one table + PNG")
    p.add_argument("--minutes", type=float, default=30.0, help="--all-presets: training budget per family")
    p.add_argument("--runs-dir", default="runs/families", help="--all-presets: where the runs are trained")
    p.add_argument("--reuse", nargs="*", default=[], metavar="FAMILY=RUN", help="--all-presets: use this run")
    p.add_argument("--families", default="", help="--all-presets: comma-separated subset of the families")
    p.add_argument("--parallel", type=int, default=2, help="--all-presets: trainings at a time")
    p.add_argument("--iwae-n", type=int, default=1000, help="--all-presets: test images for IWAE-5000")
    p.add_argument("--merge", nargs=2, default=None, metavar=("BASE_JSON", "PART_JSON"),
                   help="put the rows of one --all-presets table (PART) into another (BASE), write --out, and stop")
    p.add_argument("--row-n", type=int, default=0, help="--all-presets: samples per row (0 = each row's own n)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.merge:
        return merge_tables(Path(args.merge[0]), Path(args.merge[1]), Path(args.out), argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    samples: dict[str, Path] = {}
    for item in args.samples:
        if "=" not in item:
            raise ValueError(f"--samples {item!r}: expected RUN=SAMPLES.npz")
        run, path = item.split("=", 1)
        samples[str(Path(run))] = Path(path)
    settings = EvalSettings(kid_subset_size=args.kid_subset, seed=args.seed)
    if args.all_presets:
        return all_presets(args, settings, argv)

    from elbolab.config import ConfigError, parse_options

    try:
        options = parse_options(args.option)
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    rows, floor_meta = [], []
    t0 = time.perf_counter()
    row, meta = floor_row(args.dataset, args.data_dir, args.n, settings)
    rows.append(row)
    floor_meta.append(meta)
    for run in args.runs:
        rows.append(run_row(Path(run), args.dataset, args.data_dir, args.n, settings, samples.get(str(Path(run))),
                            args.sampler, args.steps, args.bpd_n, args.exact, args.seed, options))
    table = format_quality_table(rows)
    ref = load_reference(args.dataset, "train", data_dir=args.data_dir, progress=False)
    header = (f"Quality on {args.dataset} (features: elbolab {args.dataset} classifier, sha256 {ref.sha256[:12]}; "
              f"reference: {args.dataset}/train, n={ref.n}; KID ± standard error)\n\n")
    out = Path(args.out)
    atomic_write_text(out.with_suffix(".md"), header + table + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"dataset": args.dataset, "feature_sha256": ref.sha256, "reference_n": ref.n, "n": args.n, "host": host_info(),
         "command": " ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
         "seconds": round(time.perf_counter() - t0, 1), "rows": quality_rows_to_json(rows)}, indent=2) + "\n")
    sys.stdout.write(header + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
