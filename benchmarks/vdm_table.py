"""The bits/dim table of the VDM issue: one row per trained run (DDPM, VDM fixed-linear, VDM learned + Fourier,
flow matching), every bound on the same footing.

    row | family | steps | train min | recon | prior | denoising | ELBO +- se | ODE NLL +- se | FID (sampler, NFE)

- ELBO: the family's own bound (``bound_fn``: the DDPM's discretised-decoder ELBO of Ho et al. 2020 at T = 1000,
  Monte Carlo over t; the VDM's continuous-time bound L_inf with its softmax decoder, Kingma et al. 2021) on the
  first ``--elbo-n`` MNIST test images, in bits/dim with the standard error over images.
- ODE NLL: the probability-flow ODE (``elbolab.report.ode_nll.ode_nll_run``: dopri5, Hutchinson trace, uniform
  dequantisation, 1 draw per image, t_min = 1 on the T = 1000 grid) on the first ``--nll-n`` test images.
- FID: ``--fid-n`` samples of each candidate sampler (NFE <= 25) against the MNIST training set in the shipped
  feature space, with precision and recall; the row reports the best candidate.

Usage (from the repository root; one row per ``--row LABEL=RUN=SAMPLER:STEPS[,SAMPLER:STEPS...]``)::

    python benchmarks/vdm_table.py --data-dir ../shared/data/mnist \\
        --row "DDPM=benchmarks/reference-runs/ddpm60=dpmpp-2m:20,ddim:20" \\
        --row "VDM learned=benchmarks/reference-runs/vdm60-learned=dpmpp-2m:25" \\
        --out benchmarks/results/vdm_bpd

Writes ``OUT.json`` and ``OUT.md`` (atomically) after every row, so a killed run keeps the rows it finished;
``--plots`` also writes ``OUT_snr.png`` (the learned schedule's SNR against the fixed ones) and
``OUT_variance.png`` (the estimator's variance over training) from the first VDM run with a learned schedule.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from elbolab.evaluate import EvalSettings, Metric, evaluate_bpd, evaluate_samples, generate_samples
from elbolab.families import SampleRequest
from elbolab.io import atomic_write_json, atomic_write_text
from elbolab.report.ode_nll import ode_nll_run
from elbolab.host import cpu_name
from elbolab.runs import load_run

logger = logging.getLogger("benchmarks.vdm_table")


def parse_row(text: str) -> tuple[str, Path, list[tuple[str, int]]]:
    parts = text.split("=")
    if len(parts) != 3:
        raise SystemExit(f"--row {text!r}: expected LABEL=RUN=SAMPLER:STEPS[,SAMPLER:STEPS...]")
    label, run, samplers = parts
    cands = []
    for item in samplers.split(","):
        name, _, steps = item.partition(":")
        if not steps.isdigit():
            raise SystemExit(f"--row {text!r}: sampler {item!r} needs SAMPLER:STEPS")
        cands.append((name, int(steps)))
    return label, Path(run), cands


def training_figures(run_dir: Path) -> dict[str, Any]:
    """Steps, minutes and img/s of a run from its metrics.jsonl (the last record with them)."""
    path = run_dir / "metrics.jsonl"
    last: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in rec:
                last = rec
                records.append(rec)
    rates = [r["img/s"] for r in records if isinstance(r.get("img/s"), (int, float))]
    return {"steps": last.get("step"), "train_minutes": (last.get("time") or 0) / 60 or None,
            "train_img_per_s": sum(rates) / len(rates) if rates else None}  # the run's mean, not its last window


def elbo_row(run, dataset: str, data_dir: str, n: int, seed: int) -> dict[str, Any]:
    bound = run.family.bound_fn(run.config, run.model, False)
    t0 = time.perf_counter()
    res = evaluate_bpd(bound, dataset, run.family.bpd_method or "none", data_dir=data_dir, n=n, seed=seed,
                       progress=False, device=run.device, data_config=run.config.data)
    return {**res.to_dict(), "seconds": time.perf_counter() - t0}


def fid_cell(run, dataset: str, data_dir: str, sampler: str, steps: int, n: int, seed: int) -> dict[str, Any]:
    request = SampleRequest(n=min(n, 250), sampler=sampler, options={"steps": steps}, seed=seed)
    nfe: list[int] = []

    def sample_fn(b: int, generator: torch.Generator) -> torch.Tensor:
        batch = run.family.sample(run.config, run.model, b, generator, request)
        nfe.append(int(batch.nfe))
        return batch

    samples = generate_samples(sample_fn, n, batch_size=250, generator=torch.Generator(run.device).manual_seed(seed),
                               progress=False)
    res = evaluate_samples(samples, dataset, [Metric.FID, Metric.PR], data_dir=data_dir, settings=EvalSettings(),
                           progress=False)
    out = {"sampler": sampler, "steps": steps, "nfe": max(nfe) if nfe else None, "n": n,
           "seconds_per_image": samples.seconds / n}
    out.update({"fid": res.fid.fid, "precision": res.pr.precision, "recall": res.pr.recall})
    return out


def fmt(v: Any, se: Any = None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    s = f"{v:.{digits}f}"
    return s + (f" ± {se:.{digits}f}" if se is not None and math.isfinite(se) else "")


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Bits/dim on MNIST: DDPM, VDM and flow matching on the same footing ({report['cpu']})", "",
             f"ELBO on {report['elbo_n']} test images (standard error over images); probability-flow ODE NLL on "
             f"{report['nll_n']} (dopri5 rtol = atol = {report['nll_rtol']:g}, Hutchinson, uniform dequantisation, "
             f"1 draw, joint solves of {report['nll_batch']}); FID of {report['fid_n']} samples against the training "
             "set (shipped MNIST features) at the best candidate sampler with <= 25 NFE.", "",
             "| row | steps | train min | img/s | recon | prior | denoising | ELBO | ODE NLL | FID (sampler, NFE) | "
             "precision | recall |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        e, o, f = r.get("elbo") or {}, r.get("nll_ode") or {}, r.get("best_fid") or {}
        t = e.get("terms", {})
        fid = f"{fmt(f.get('fid'), digits=2)} ({f.get('sampler')}, {f.get('nfe')})" if f else "-"
        lines.append(f"| {r['label']} | {r.get('steps') or '-'} | {fmt(r.get('train_minutes'), digits=1)} | "
                     f"{fmt(r.get('train_img_per_s'), digits=1)} | {fmt(t.get('reconstruction'))} | "
                     f"{fmt(t.get('prior'), digits=4)} | {fmt(t.get('denoising'))} | "
                     f"{fmt(e.get('value'), e.get('stderr'))} | {fmt(o.get('value'), o.get('stderr'))} | {fid} | "
                     f"{fmt(f.get('precision'))} | {fmt(f.get('recall'))} |")
    checks = [r for r in report["rows"] if r.get("nll_ode_check")]
    if checks:
        lines += ["", "The ODE solver's tolerance: the same first test images at both tolerances (bits/dim, NFE of "
                  "the whole subset):", "", "| row | n | rtol (table) | NLL | NFE | rtol (tight) | NLL | NFE |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in checks:
            c = r["nll_ode_check"]
            lines.append(f"| {r['label']} | {c['n']} | {report['nll_rtol']:g} | {fmt(c['value_at_table_rtol'])} | "
                         f"{c['nfe_at_table_rtol']} | {c['rtol']:g} | {fmt(c['value'], c.get('stderr'))} | {c['nfe']} |")
    lines += ["", "Every FID candidate:", "", "| row | sampler | steps | NFE | FID | precision | recall | s/img |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        for c in r.get("fid", []):
            lines.append(f"| {r['label']} | {c['sampler']} | {c['steps']} | {c['nfe']} | {fmt(c.get('fid'), digits=2)} | "
                         f"{fmt(c.get('precision'))} | {fmt(c.get('recall'))} | {fmt(c['seconds_per_image'], digits=4)} |")
    lines += ["", f"Made by `{report['command']}`.", ""]
    return "\n".join(lines)


def plots(rows: list[tuple[str, Path, Any]], out: Path) -> list[str]:
    """The learned SNR curve (first VDM run with a learned schedule) against the fixed ones, and the estimator's
    variance over training of every VDM run on one axis."""
    from elbolab.vdm.plots import plot_estimator_variance, plot_snr_curves

    written, curves = [], {}
    for label, run_dir, _ in rows:
        run = load_run(run_dir, device="cpu")
        if run.config.family != "vdm":
            continue
        records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        curves[label] = [r for r in records if "denoising_var" in r]
        if str(getattr(run.config.model.vdm.schedule, "value", run.config.model.vdm.schedule)) == "learned" \
                and not written:
            plot_snr_curves(run.model.schedule, out.with_name(out.name + "_snr.png"), title=f"{label}: learned SNR")
            written.append(out.name + "_snr.png")
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        plot_estimator_variance(curves, out.with_name(out.name + "_variance.png"),
                                title="variance of the bound's one-sample estimator (batch of 64) over training")
        written.append(out.name + "_variance.png")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", action="append", default=[], help="LABEL=RUN=SAMPLER:STEPS[,SAMPLER:STEPS...]")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default="")
    p.add_argument("--elbo-n", type=int, default=1000)
    p.add_argument("--nll-n", type=int, default=256)
    p.add_argument("--nll-batch", type=int, default=32)
    p.add_argument("--nll-rtol", type=float, default=1e-5)
    p.add_argument("--nll-check-n", type=int, default=0,
                   help="also the ODE NLL of the first N test images at --nll-check-rtol (the tolerance's bias)")
    p.add_argument("--nll-check-rtol", type=float, default=1e-5)
    p.add_argument("--fid-n", type=int, default=1000)
    p.add_argument("--merge", nargs="*", default=None,
                   help="instead of evaluating: the rows of these JSON reports (in order) into OUT")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: elbo,nll,fid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plots", action="store_true")
    p.add_argument("--out", default="benchmarks/results/vdm_bpd")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.merge:
        parts = [json.loads(Path(m).read_text()) for m in args.merge if Path(m).exists()]
        if not parts:
            raise SystemExit(f"--merge: none of {args.merge} exists yet")
        merged: dict[str, dict[str, Any]] = {}  # rows of one label from several reports (e.g. elbo+fid, nll) join
        for part in parts:
            for r in part["rows"]:
                row = merged.setdefault(r["label"], {})
                fids = row.get("fid", []) + r.get("fid", [])
                row.update({k: v for k, v in r.items() if v is not None})
                if fids:  # every candidate of every part, the best of them all
                    row["fid"], row["best_fid"] = fids, min(fids, key=lambda c: c.get("fid", math.inf))
        for row in merged.values():  # training figures read again from the run folders
            if Path(row.get("run", "")).is_dir():
                row.update(training_figures(Path(row["run"])))
        report = {**parts[0], "rows": list(merged.values()),
                  "command": " + ".join(part["command"] for part in parts)}
        for key in ("elbo_n", "nll_n", "nll_batch", "nll_rtol", "fid_n"):  # the settings of the parts that used them
            report[key] = next((part[key] for part in parts if any(k in r for r in part["rows"]
                                for k in {"elbo_n": ["elbo"], "nll_n": ["nll_ode"], "nll_batch": ["nll_ode"],
                                          "nll_rtol": ["nll_ode"], "fid_n": ["fid"]}[key])), report[key])
        atomic_write_json(Path(args.out).with_suffix(".json"), report)
        atomic_write_text(Path(args.out).with_suffix(".md"), markdown(report))
        if args.plots:
            report["plots"] = plots([(r["label"], Path(r["run"]), None) for r in report["rows"]], Path(args.out))
            atomic_write_json(Path(args.out).with_suffix(".json"), report)
        return 0
    if not args.row:
        p.error("give at least one --row (or --merge)")
    rows = [parse_row(r) for r in args.row]
    skip = {s for s in args.skip.split(",") if s}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "elbo_n": args.elbo_n,
                              "nll_n": args.nll_n, "nll_batch": args.nll_batch, "nll_rtol": args.nll_rtol,
                              "fid_n": args.fid_n, "command": "python " + " ".join(sys.argv), "rows": []}
    for label, run_dir, cands in rows:
        run = load_run(run_dir, device="cpu")
        row: dict[str, Any] = {"label": label, "run": str(run_dir), "family": run.config.family,
                               **training_figures(run_dir)}
        if "elbo" not in skip:
            row["elbo"] = elbo_row(run, args.dataset, args.data_dir, args.elbo_n, args.seed)
            logger.info("%s: ELBO %s", label, row["elbo"])
        if "nll" not in skip:
            row["nll_ode"] = ode_nll_run(run, n=args.nll_n, seed=args.seed, rtol=args.nll_rtol,
                                         batch_size=args.nll_batch).to_dict()
            row["nll_ode"].pop("per_image", None)
            logger.info("%s: ODE NLL %s", label, row["nll_ode"])
        if args.nll_check_n:  # runs with --skip nll too (a check on its own)
            check = ode_nll_run(run, n=args.nll_check_n, seed=args.seed, rtol=args.nll_check_rtol,
                                batch_size=min(args.nll_batch, args.nll_check_n)).to_dict()
            same = ode_nll_run(run, n=args.nll_check_n, seed=args.seed, rtol=args.nll_rtol,
                               batch_size=min(args.nll_batch, args.nll_check_n)).to_dict()
            row["nll_ode_check"] = {"n": args.nll_check_n, "rtol": args.nll_check_rtol,
                                    "value": check["value"], "stderr": check["stderr"], "nfe": check["nfe"],
                                    "seconds": check["seconds"], "value_at_table_rtol": same["value"],
                                    "nfe_at_table_rtol": same["nfe"]}
            logger.info("%s: ODE NLL check %s", label, row["nll_ode_check"])
        if "fid" not in skip:
            row["fid"] = [fid_cell(run, args.dataset, args.data_dir, s, k, args.fid_n, args.seed) for s, k in cands]
            row["best_fid"] = min(row["fid"], key=lambda c: c.get("fid", math.inf))
            logger.info("%s: FID %s", label, row["fid"])
        report["rows"].append(row)
        atomic_write_json(out.with_suffix(".json"), report)
        atomic_write_text(out.with_suffix(".md"), markdown(report))
    if args.plots:
        report["plots"] = plots(rows, out)
        atomic_write_json(out.with_suffix(".json"), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
