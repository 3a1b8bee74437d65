"""The D* = 1/2 check (lecture notes 003; issue 17) of trained GAN runs side by side, with the pixel statistics
that tell a linear model where generated images differ from real ones; a run of any other family is checked on
the same yardstick from its sampler's images (``--sampler``, ``--sampler-steps``: a classifier two-sample test).

    python benchmarks/gan_dstar.py --data-dir ../shared/data/mnist --runs runs/gan_a runs/gan_b \\
        --out benchmarks/results/gan_dstar

Per run and ``--seeds`` seeds (each draws new samples and a new split): a fresh logistic discriminator on 2000
held-out real test images against as many samples (``quality.py``'s :func:`dstar_checks`: raw pixels, pixels
rounded to 8 bits, the shipped MNIST feature network's features), mean and spread; then, on the 8-bit samples of
the first seed, the share of inked pixels (above level 0), of pure-white pixels (level 255), of faint pixels
(levels 1..31) and of images with ink where no real test image has any. Compare with
``benchmarks/results/dstar_floor.json`` (real against real: accuracy 0.550 on pixels, 0.593 on features).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import RunSampler, dstar_checks, read_run  # noqa: E402  (the families table's check, reader, sampler)

from elbolab.config import DataConfig  # noqa: E402
from elbolab.data import load_dataset  # noqa: E402
from elbolab.evaluate.samples import draw_in_batches  # noqa: E402
from elbolab.gan import sample_gan  # noqa: E402
from elbolab.host import host_info  # noqa: E402
from elbolab.io import atomic_write_text  # noqa: E402
from elbolab.runs import load_run  # noqa: E402

logger = logging.getLogger("benchmarks.gan_dstar")
SPACES = ("pixels", "pixels_8bit", "features")


def pixel_stats(levels: torch.Tensor, never_inked: torch.Tensor) -> dict[str, float]:
    """``levels: (N, 1, H, W)`` 8-bit integers; ``never_inked: (H, W)`` pixels at level 0 in every real image."""
    flat = levels.flatten(1)
    return {"inked": float((flat > 0).double().mean()), "white": float((flat == 255).double().mean()),
            "faint": float(((flat > 0) & (flat < 32)).double().mean()),
            "ink_where_real_never": float((levels[:, 0][:, never_inked] > 0).any(1).double().mean())}


class Snapped:
    """A sampler whose ``(B, C, H, W)`` images in [-1, 1] have every pixel below the 8-bit ``level`` set to black."""

    def __init__(self, inner: Any, level: int) -> None:
        self.inner, self.level = inner, level

    @property
    def method(self) -> str:
        return f"{self.inner.method}, levels < {self.level} snapped to 0"

    def __call__(self, b: int, generator: torch.Generator) -> torch.Tensor:
        x = self.inner(b, generator).clamp(-1, 1)
        return torch.where((x + 1) * 127.5 < self.level - 0.5, torch.full_like(x, -1.0), x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default="")
    p.add_argument("--runs", nargs="+", required=True, help="run folders, one row each (GAN or any family)")
    p.add_argument("--sampler", default=None,
                   help="sampler of the runs' family (default: each run's config's; a GAN's is its generator)")
    p.add_argument("--sampler-steps", type=int, default=None, help="steps of that sampler (default: its config's)")
    p.add_argument("--snap-below", type=int, default=0, metavar="LEVEL",
                   help="diagnostic: set the samples' 8-bit levels below LEVEL to black before every check (how much "
                        "of a gap is a faint background haze)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/gan_dstar")
    args = p.parse_args(argv)
    if not 0 <= args.snap_below <= 256:
        p.error(f"--snap-below {args.snap_below}: an 8-bit level in 0..256 (0 = off)")
    if args.seeds < 1:
        p.error(f"--seeds {args.seeds}: must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    test = load_dataset(DataConfig(name=args.dataset, data_dir=args.data_dir, split="test", limit=2000))
    real, _ = test.batch(torch.arange(len(test)))
    real_levels = torch.round((real + 1) * 127.5).to(torch.int64)
    never = (real_levels[:, 0] == 0).all(0)
    rows: list[dict[str, Any]] = [{"run": "real test images", "pixel_stats": pixel_stats(real_levels, never)}]
    for run_dir in args.runs:
        info, run = read_run(Path(run_dir)), load_run(run_dir)
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
        steps = max((r["step"] for r in records if "step" in r), default=None)
        plain_gan = run.config.family == "gan" and args.sampler is None and args.snap_below == 0
        # a plain GAN run keeps gan_dstar_check's own sampling (the random streams of the committed GAN rows)
        sampler = None if plain_gan else RunSampler(run, args.sampler, args.sampler_steps)
        if args.snap_below > 0:
            sampler = Snapped(sampler, args.snap_below)
        checks = [dstar_checks(run, args.dataset, args.data_dir, seed, sampler=sampler) for seed in range(args.seeds)]
        summary = {space: {k: {"mean": statistics.fmean(c[space][k] for c in checks),
                               "stdev": statistics.stdev(c[space][k] for c in checks) if len(checks) > 1 else 0.0}
                           for k in ("d_real", "d_fake", "accuracy")} for space in SPACES}
        with torch.no_grad():
            fake = (sample_gan(run.model.eval(), len(test), torch.Generator().manual_seed(0)).images if sampler is None
                    else draw_in_batches(sampler, len(test), 250, torch.Generator().manual_seed(0)).images)
        levels = torch.round((fake.clamp(-1, 1) + 1) * 127.5).to(torch.int64)
        gan = run.config.model.gan if run.config.family == "gan" else None
        rows.append({"run": str(run_dir), "family": run.config.family,
                     "sampler": "generator" if sampler is None else sampler.method, "steps": steps,
                     "train_minutes": info.train_minutes, "train_img_per_s": info.train_img_per_s,
                     "output_stretch": getattr(gan, "output_stretch", None),
                     "dstar": summary, "checks": checks, "pixel_stats": pixel_stats(levels, never)})
        logger.info("%s: 8-bit accuracy %.3f, features accuracy %.3f", run_dir,
                    summary["pixels_8bit"]["accuracy"]["mean"], summary["features"]["accuracy"]["mean"])
    out = Path(args.out)
    meta = {"dataset": args.dataset, "seeds": args.seeds, "seconds": round(time.perf_counter() - t0, 1),
            "host": host_info(),
            "command": " ".join(["python", "benchmarks/gan_dstar.py", *(argv if argv is not None else sys.argv[1:])])}
    atomic_write_text(out.with_suffix(".json"), json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [f"D* = 1/2 check, {args.seeds} seeds (mean ± sd of the fresh logistic discriminator's held-out "
             "accuracy; floor real vs real: 0.550 pixels, 0.593 features), host "
             f"{meta['host'].get('cpu', '?')}. Pixel shares on 8-bit images.\n",
             "| run | steps | minutes | stretch | acc pixels | acc 8-bit pixels | acc features | inked | white | faint "
             "(1..31) | images inked where real never is |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["pixel_stats"]
        stats = (f"{s['inked']:.3f} | {s['white']:.4f} | {s['faint']:.3f} | {s['ink_where_real_never']:.3f}")
        if "dstar" not in r:
            lines.append(f"| {r['run']} | - | - | - | - | - | - | {stats} |")
            continue
        acc = " | ".join(f"{r['dstar'][k]['accuracy']['mean']:.3f} ± {r['dstar'][k]['accuracy']['stdev']:.3f}"
                         for k in SPACES)
        stretch = "-" if r["output_stretch"] is None else f"{r['output_stretch']:g}"
        lines.append(f"| {r['run']} ({r['family']}, {r['sampler']}) | {r['steps']} | {r['train_minutes']:.1f} | "
                     f"{stretch} | {acc} | {stats} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``main`` with elbolab's errors (a bad sampler name, an unreadable run folder) as one line and exit 2."""
    from elbolab.errors import ElbolabError

    try:
        return main(argv)
    except (ElbolabError, ValueError, OSError) as e:
        logger.error("%s", e)
        print(f"gan_dstar.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(cli())
