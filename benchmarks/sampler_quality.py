"""Sample quality against network evaluations for every diffusion sampler on one trained DDPM run (issue 15).

    python benchmarks/sampler_quality.py RUN [--n 500] [--nfe 10,20,50,200] [--extra-nfe 5,25,100]
        [--samplers ancestral,ddim,euler,heun,dpmpp_2m,dpmpp_2m_sde] [--nll-n 256] [--seed 0]

For every sampler and NFE budget: ``--n`` samples (the same n and the same seeds in every cell) scored with
the shipped MNIST feature network through :func:`elbolab.evaluate.evaluate_samples` - FID, precision and
recall against the run dataset's training split - and the sampling seconds per image. Then the two samplers
with the best FID get the ``--extra-nfe`` budgets too (25 among them, so the "<= 25 NFE" target is read at 25). With ``--nll-n`` > 0, the probability-flow ODE
negative log-likelihood (:func:`elbolab.diffusion.likelihood.bits_per_dim`: uniform dequantisation, one draw
per image, Hutchinson divergence, dopri5 at rtol = atol = ``--nll-rtol`` (1e-3; score_sde's 1e-5
costs ~10x the NFE) in joint solves of ``--nll-batch`` images, t_min = 1) next to the negative ELBO
(discretised decoder, exact sum over t unless ``--elbo-t-samples``), both in bits/dim on the first
``--nll-n`` test images.

A budget of NFE network evaluations means ``steps = NFE`` for every sampler but heun, whose N steps cost
2 N - 1 (``steps = (NFE + 1) // 2``); the NFE actually spent is recorded. Time grids: ancestral and DDIM on
the ``trailing`` integer grid, euler/heun on Karras et al.'s (rho = 7), DPM-Solver++ uniform in log-SNR, all
ending at t = 1 then t = 0 (:mod:`elbolab.diffusion.samplers`).

Writes ``RUN/sampler_quality.json`` and ``benchmarks/results/sampler_quality_<run>.{json,md,png}`` (the table
and the plot of FID against NFE, log axis), atomically. A quick check that it works: ``--n 16 --nfe 5
--extra-nfe "" --nll-n 2 --reference-limit 200``. ``--device auto`` samples on CUDA when available.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from elbolab.apps.chain import run_diffusion
from elbolab.config import DataConfig
from elbolab.data import load_dataset
from elbolab.diffusion import likelihood, samplers
from elbolab.evaluate import evaluate_samples, load_reference
from elbolab.io import atomic_write_text
from elbolab.runs import load_run

logger = logging.getLogger("sampler_quality")

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class SamplerSpec:
    """How a sampler name of the table is called: the library function and its keyword options."""

    fn: Callable[..., samplers.SampleResult]
    options: dict[str, Any]
    steps_for: Callable[[int], int] = lambda nfe: nfe


SPECS: dict[str, SamplerSpec] = {
    "ancestral": SamplerSpec(samplers.ancestral, {"spacing": "trailing"}),
    "ddim": SamplerSpec(samplers.ddim, {"spacing": "trailing", "eta": 0.0}),
    "ddim_eta1": SamplerSpec(samplers.ddim, {"spacing": "trailing", "eta": 1.0}),
    "euler": SamplerSpec(samplers.euler, {"spacing": "karras"}),
    "heun": SamplerSpec(samplers.heun, {"spacing": "karras"}, lambda nfe: max(1, (nfe + 1) // 2)),
    "dpmpp_2m": SamplerSpec(samplers.dpmpp_2m, {"spacing": "logsnr"}),
    "dpmpp_2m_sde": SamplerSpec(samplers.dpmpp_2m_sde, {"spacing": "logsnr"}),
}


#: the table's rows: ddim_eta1 on the trailing grid is the ancestral sampler of the respaced chain (identical
#: cells, measured: benchmarks/results/logs/sq_ddpm60.log), so it is left out unless asked for
DEFAULT_SAMPLERS = [k for k in SPECS if k != "ddim_eta1"]


def two_best(cells: list[dict], names: list[str]) -> list[str]:
    """The two samplers with the lowest FID in any cell; a sampler whose cells equal an already chosen one's
    (the same sampler under two names) is skipped."""
    fids = {name: [c["fid"] for c in cells if c["sampler"] == name] for name in names}
    chosen: list[str] = []
    for name in sorted(names, key=lambda k: min(fids[k])):
        if len(chosen) < 2 and all(fids[name] != fids[c] for c in chosen):
            chosen.append(name)
    return chosen


_CELL_LINE = re.compile(r"^(\w+)\s+NFE\s+(\d+) \(steps\s+(\d+)\): FID\s+([\d.]+)\s+P ([\d.]+)\s+R ([\d.]+)\s+([\d.]+) s/img")


def cells_from_log(text: str, samplers_: list[str], source: str) -> list[dict]:
    """The cells of an earlier run's log (this script's per-cell lines) for the samplers in ``samplers_`` (those
    whose sampler and grid have not changed since), marked ``"reused": source``; FID/precision/recall are the
    logged (rounded) values, seconds per image those of that run's host. Budget = NFE (heun is never reused)."""
    cells, seen = [], set()
    for line in text.splitlines():
        m = _CELL_LINE.match(line.strip())
        if not m or m.group(1) not in samplers_ or (m.group(1), int(m.group(2))) in seen:
            continue
        seen.add((m.group(1), int(m.group(2))))
        cells.append({"sampler": m.group(1), "nfe_budget": int(m.group(2)), "steps": int(m.group(3)),
                      "nfe": int(m.group(2)), "seconds_per_image": float(m.group(7)), "fid": float(m.group(4)),
                      "precision": float(m.group(5)), "recall": float(m.group(6)), "reused": source})
    return cells


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def image_shape(run) -> tuple[int, int, int]:
    """(C, H, W) of the run's U-Net (``[model.unet]``, or ``[unet]`` in older configs)."""
    unet = getattr(getattr(run.config, "model", None), "unet", None) or getattr(run.config, "unet")
    return unet.in_channels, unet.image_size, unet.image_size


def sample_cell(run, diffusion, name: str, nfe: int, n: int, batch: int, seed: int) -> tuple[torch.Tensor, dict]:
    """``n`` samples of sampler ``name`` at budget ``nfe``; every cell uses the same seeds."""
    spec = SPECS[name]
    steps = min(spec.steps_for(nfe), diffusion.T) if spec.options.get("spacing") == "trailing" \
        else spec.steps_for(nfe)
    shape = image_shape(run)
    device = run.device
    out, spent, seconds = [], 0, 0.0
    for b, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        g = torch.Generator(device).manual_seed(seed * 100003 + b)
        t0 = time.perf_counter()
        res = spec.fn(run.model, (size, *shape), diffusion, steps=steps, generator=g, clip_x0=True, **spec.options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - t0
        spent = res.nfe
        out.append(res.sample.clamp(-1, 1).cpu())
    return torch.cat(out), {"steps": steps, "nfe": spent, "seconds_per_image": seconds / n}


def nll_rows(run, diffusion, dataset: str, data_dir: str, n: int, seed: int, elbo_t_samples: int | None,
             rtol: float = 1e-3, batch: int = 32) -> dict:
    """ODE NLL and negative ELBO in bits/dim on the first ``n`` test images; the ODE solved by dopri5 at
    rtol = atol = ``rtol`` in joint chunks of ``batch`` images (1: every image on its own)."""
    test = load_dataset(DataConfig(name=dataset, data_dir=data_dir, split="test", limit=n))
    x = test.images[:n]
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
    x = x.to(run.device)
    t0 = time.perf_counter()
    g = torch.Generator(run.device).manual_seed(seed)
    parts = [likelihood.bits_per_dim(run.model, x[i:i + batch], diffusion, generator=g, n_dequant=1, rtol=rtol,
                                     atol=rtol, per_image=batch == 1) for i in range(0, x.shape[0], batch)]
    per_image = torch.cat([p.per_image for p in parts])
    nfe = sum(p.nfe for p in parts)
    ode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        elbo = diffusion.elbo_terms(run.model, x, generator=torch.Generator(run.device).manual_seed(seed),
                                    t_samples=elbo_t_samples)
    return {"n": int(x.shape[0]), "ode_bpd": float(per_image.mean()),
            "ode_bpd_stderr": float(per_image.std() / math.sqrt(per_image.numel())), "ode_n_dequant": 1,
            "ode_nfe": nfe, "ode_rtol": rtol, "ode_batch": batch, "ode_seconds": ode_s,
            "elbo_bpd": elbo.total, "elbo_bpd_stderr": elbo.total_stderr,
            "elbo_t_samples": elbo.t_samples, "elbo_seconds": time.perf_counter() - t0,
            "settings": "ODE: uniform dequantisation, 1 draw/image, Hutchinson (Rademacher), dopri5 "
                        f"rtol=atol={rtol:g}, joint solves of {batch}, t_min=1; ELBO: discretised decoder"}


def markdown(report: dict) -> str:
    cells = report["cells"]
    nfes = sorted({c["nfe_budget"] for c in cells})
    names = list(dict.fromkeys(c["sampler"] for c in cells))
    lines = [f"Run `{report['run']}`, n = {report['n']} samples per cell, FID / precision / recall against "
             f"{report['reference']} (shipped features); seconds per image on {report['device']}.", "",
             "| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
             "| --- | " + " | ".join("---" for _ in nfes) + " |"]
    for name in names:
        row = []
        for k in nfes:
            c = next((c for c in cells if c["sampler"] == name and c["nfe_budget"] == k), None)
            row.append("" if c is None else f"{c['fid']:.2f} ({c['precision']:.2f}/{c['recall']:.2f}, "
                                             f"{c['seconds_per_image']:.3f} s){'*' if c.get('reused') else ''}")
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    lines += ["", "Cells: FID (precision/recall, seconds per image). " + report["targets"]["text"]]
    reused = sorted({c["reused"] for c in cells if c.get("reused")})
    if reused:
        lines += ["", f"\\* reused from {', '.join(reused)} (same run, n, seeds and sampler; its seconds per image "
                      "were measured on that run's host)."]
    if report.get("nll"):
        r = report["nll"]
        lines += ["", f"NLL on {r['n']} test images: probability-flow ODE {r['ode_bpd']:.3f} ± "
                      f"{r['ode_bpd_stderr']:.3f} bits/dim vs negative ELBO {r['elbo_bpd']:.3f} ± "
                      f"{r['elbo_bpd_stderr']:.3f} bits/dim ({r['settings']})."]
    return "\n".join(lines) + "\n"


def targets(cells: list[dict]) -> dict:
    """The issue's targets: best FID at <= 25 NFE within 15 % of the best at <= 200; at 10 NFE within 2x."""
    best = min((c["fid"] for c in cells if c["nfe"] <= 200), default=math.nan)
    b25 = min((c["fid"] for c in cells if c["nfe"] <= 25), default=math.nan)
    b10 = min((c["fid"] for c in cells if c["nfe"] <= 10), default=math.nan)
    ok25, ok10 = b25 <= 1.15 * best, b10 <= 2.0 * best
    return {"best_fid_200": best, "best_fid_25": b25, "best_fid_10": b10, "within_15pct_at_25": ok25,
            "within_2x_at_10": ok10,
            "text": f"Best FID with <= 200 NFE {best:.2f}; at <= 25 NFE {b25:.2f} (target <= {1.15 * best:.2f}: "
                    f"{'met' if ok25 else 'missed'}); at <= 10 NFE {b10:.2f} (target <= {2 * best:.2f}: "
                    f"{'met' if ok10 else 'missed'})."}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(c["sampler"] for c in report["cells"]):
        pts = sorted((c["nfe"], c["fid"]) for c in report["cells"] if c["sampler"] == name)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("FID (shipped MNIST features)")
    ax.set_title(f"{Path(report['run']).name}: n = {report['n']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=500, help="samples per cell (the same in every cell)")
    ap.add_argument("--nfe", default="10,20,50,200", help="NFE budgets for every sampler")
    ap.add_argument("--extra-nfe", default="5,25,100", help="further budgets for the two best samplers")
    ap.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS), help=f"subset of {', '.join(SPECS)}")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default=None, help="default: the run's dataset")
    ap.add_argument("--data-dir", default=None, help="default: the run's data_dir")
    ap.add_argument("--reference-limit", type=int, default=0, help="first N training images (0 = all)")
    ap.add_argument("--nll-n", type=int, default=256, help="test images for ODE NLL vs ELBO (0 = skip)")
    ap.add_argument("--nll-rtol", type=float, default=1e-3, help="dopri5 rtol = atol of the ODE NLL")
    ap.add_argument("--nll-batch", type=int, default=32, help="images per joint ODE solve (1 = per image)")
    ap.add_argument("--elbo-t-samples", type=int, default=0, help="0: exact sum over t; k: k draws of t per image")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--results-dir", default=str(RESULTS))
    ap.add_argument("--reuse-log", default="", help="an earlier run's log of this script: keep its cells of ...")
    ap.add_argument("--reuse-samplers", default="", help="... these samplers (unchanged since), comma-separated")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [s for s in args.samplers.split(",") if s]
    bad = [s for s in names if s not in SPECS]
    if bad:
        raise SystemExit(f"unknown sampler(s) {bad}; choose from {', '.join(SPECS)}")
    if args.n < 2:
        raise SystemExit("--n must be at least 2 (FID needs a covariance)")
    run = load_run(args.run, device=None if args.device == "auto" else args.device)
    diffusion = run_diffusion(run)
    dataset = args.dataset or run.config.data.name
    data_dir = args.data_dir if args.data_dir is not None else run.config.data.data_dir
    reference = load_reference(dataset, "train", data_dir=data_dir, limit=args.reference_limit)

    cells: list[dict] = []
    if args.reuse_log:
        keep = [x for x in args.reuse_samplers.split(",") if x]
        if "heun" in keep:
            raise SystemExit("--reuse-samplers: heun's budget is not its NFE in the log; rerun it")
        cells = [c for c in cells_from_log(Path(args.reuse_log).read_text(), keep, args.reuse_log)
                 if c["sampler"] in names]
        logger.info("reusing %d cells of %s (%s)", len(cells), args.reuse_log, ", ".join(keep))

    def cell(name: str, nfe: int) -> None:
        if any(c["sampler"] == name and c["nfe_budget"] == nfe for c in cells):
            return
        images, info = sample_cell(run, diffusion, name, nfe, args.n, args.batch, args.seed)
        result = evaluate_samples(images, dataset, {"fid", "pr"}, reference=reference, progress=False)
        c = {"sampler": name, "nfe_budget": nfe, **info, "fid": float(result.fid.fid),
             "precision": float(result.pr.precision), "recall": float(result.pr.recall)}
        cells.append(c)
        logger.info("%-13s NFE %4d (steps %4d): FID %7.2f  P %.3f  R %.3f  %.4f s/img", name, info["nfe"],
                    info["steps"], c["fid"], c["precision"], c["recall"], info["seconds_per_image"])

    for name in names:
        for nfe in _ints(args.nfe):
            cell(name, nfe)
    extra = _ints(args.extra_nfe)
    best_two = two_best(cells, names)
    for name in best_two:
        for nfe in extra:
            if not any(c["sampler"] == name and c["nfe_budget"] == nfe for c in cells):
                cell(name, nfe)

    report: dict[str, Any] = {
        "run": str(Path(args.run).resolve()), "n": args.n, "seed": args.seed, "device": str(run.device),
        "reference": f"{dataset}/train" + (f"[:{args.reference_limit}]" if args.reference_limit else ""),
        "samplers": {k: {"function": SPECS[k].fn.__name__, **SPECS[k].options} for k in names},
        "two_best": best_two, "cells": cells, "targets": targets(cells),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    if args.nll_n > 0:
        report["nll"] = nll_rows(run, diffusion, dataset, data_dir, args.nll_n, args.seed,
                                 args.elbo_t_samples or None, args.nll_rtol, args.nll_batch)
    text = json.dumps(report, indent=2) + "\n"
    atomic_write_text(Path(args.run) / "sampler_quality.json", text)
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sampler_quality_{Path(args.run).resolve().name}"
    atomic_write_text(out / f"{stem}.json", text)
    table = markdown(report)
    atomic_write_text(out / f"{stem}.md", table)
    plot(report, out / f"{stem}.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
