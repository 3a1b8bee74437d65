"""Time to quality (issue 19): elbolab's demo recipe against diffusers' own unconditional training example, FID
against wall-clock minutes, side by side on the same data and the same (quiet) machine.

    python benchmarks/time_to_quality.py --data-dir ../shared/data/mnist [--minutes 12] [--every 2]
        [--fid-n 500] [--diffusers-batch 64] [--threads 2] [--out benchmarks/results/time_to_quality]

Two arms, one after the other, each for ``--minutes`` of wall time (data loading included), with an EMA
snapshot every ``--every`` minutes (kept in memory; taking it costs milliseconds):

- **elbolab**: the ``ddpm-mnist`` preset (the demo's recipe: its U-Net, v-prediction on the cosine schedule,
  AdamW lr 2e-3 with the cosine decay over the budget, EMA 0.995, batch 64, bf16) through the library's own
  ``train_run`` with ``train.minutes`` = the budget;
- **diffusers**: ``UNet2DModel`` with the same channels (32, 64, 64; :class:`train_speed.DiffusersUNet`),
  ``DDPMScheduler`` (linear betas, 1000 steps, epsilon prediction) and the settings of diffusers'
  ``examples/unconditional_image_generation/train_unconditional.py``: AdamW lr 1e-4, betas (0.95, 0.999),
  weight decay 1e-6, eps 1e-8, cosine schedule with 500 warm-up steps, ``EMAModel`` with max decay 0.9999,
  inv_gamma 1, power 3/4, MSE on the noise, bf16 autocast (its fastest CPU variant, ``train_speed.py``). The
  example's cosine horizon is its number of epochs; here it is the wall-clock budget. Its random horizontal
  flip is left out (digits are not mirror-symmetric).

Then every snapshot is scored: ``--fid-n`` samples, FID / precision / recall against the MNIST training images
(shipped feature network). Each arm gets its own best sampler with <= 50 NFE, chosen on its last snapshot among
ancestral 50 (trailing), DDIM eta = 0 50 (trailing), DDIM eta = 1 25 (trailing) and DPM-Solver++(2M) 25
(log-SNR); the diffusers model is sampled by elbolab's samplers through the diffusers bridge (parity with
diffusers' schedulers is tested in ``tests/bridges``). Target: elbolab reaches diffusers' final FID in <= 1/3 of
the minutes. Writes ``OUT.json``, ``OUT.md`` and ``OUT.png`` (FID against minutes) atomically. A quick check:
``--minutes 0.3 --every 0.1 --fid-n 20 --reference-limit 500``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from elbolab.bridges.diffusers import DiffusersUNet as BridgeUNet, scheduler_to_diffusion
from elbolab.config import DataConfig, apply_overrides, preset
from elbolab.host import cpu_name
from elbolab.data import load_dataset
from elbolab.diffusion import GaussianDiffusion, samplers
from elbolab.evaluate import evaluate_samples, load_reference
from elbolab.io import atomic_write_bytes, atomic_write_text
from elbolab.runs import load_run, train_run
from train_speed import DiffusersUNet

logger = logging.getLogger("time_to_quality")

#: (name, sampler function, steps, options): the candidates with <= 50 NFE
CANDIDATES: list[tuple[str, Callable[..., samplers.SampleResult], int, dict[str, Any]]] = [
    ("ancestral-50", samplers.ancestral, 50, {"spacing": "trailing"}),
    ("ddim-eta0-50", samplers.ddim, 50, {"spacing": "trailing", "eta": 0.0}),
    ("ddim-eta1-25", samplers.ddim, 25, {"spacing": "trailing", "eta": 1.0}),
    ("dpmpp-2m-25", samplers.dpmpp_2m, 25, {"spacing": "logsnr"}),
]


class Snapshots:
    """EMA weights every ``every`` seconds of wall time since ``t0`` until shortly before ``budget`` seconds:
    ``items = [(seconds, step, images, state)]``."""

    def __init__(self, every: float, t0: float, budget: float) -> None:
        self.every, self.t0, self.budget, self.items = every, t0, budget, []
        self.next = every

    def maybe(self, step: int, images: int, state: Callable[[], dict[str, torch.Tensor]]) -> None:
        now = time.monotonic() - self.t0
        if now >= self.next and now < self.budget - 0.25 * self.every:  # the end-of-budget point is added apart
            self.items.append((now, step, images, {k: v.detach().clone() for k, v in state().items()}))
            self.next += self.every


def train_elbolab(data_dir: str, minutes: float, every: float, out_dir: Path) -> tuple[Snapshots, Any]:
    # unconditional, as diffusers' arm (the preset is the demo's class-conditional model)
    cfg = apply_overrides(preset("ddpm-mnist"), ["unet.num_classes=0", "sample.guidance=-1",
                                                  f"data.data_dir={data_dir}", "data.name=mnist", "train.steps=0",
                                                  f"train.minutes={minutes}", "train.checkpoint_every=1000000",
                                                  "train.sample_every=0"])
    snaps = Snapshots(60.0 * every, time.monotonic(), 60.0 * minutes)
    train_run(cfg, out_dir, progress=False,
              on_step=lambda tr: snaps.maybe(tr.step, tr.images_seen, lambda: tr.ema.shadow))
    run = load_run(out_dir)
    final = {k: v.clone() for k, v in run.model.state_dict().items()}
    # the end of the budget: the run's saved EMA weights
    snaps.items.append((60.0 * minutes, run.step, run.step * cfg.train.batch_size, final))
    return snaps, run


def train_diffusers(data_dir: str, minutes: float, every: float, batch: int, seed: int = 0):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    t0 = time.monotonic()
    data = load_dataset(DataConfig(name="mnist", data_dir=data_dir, split="train"))
    model = DiffusersUNet()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    budget = 60.0 * minutes
    snaps = Snapshots(60.0 * every, t0, budget)
    g = torch.Generator().manual_seed(seed)
    ema_model = copy.deepcopy(model)

    def ema_state() -> dict[str, torch.Tensor]:
        ema.copy_to(ema_model.parameters())
        return ema_model.state_dict()

    step, images, order, pos = 0, 0, torch.randperm(len(data), generator=g), 0
    model.train()
    while time.monotonic() - t0 < budget:
        if pos + batch > len(data):
            order, pos = torch.randperm(len(data), generator=g), 0
        x, _ = data.batch(order[pos:pos + batch])
        pos += batch
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(0, 1000, (x.shape[0],), generator=g)
        x_t = sched.add_noise(x, noise, t)
        # diffusers' get_cosine_schedule_with_warmup, with its horizon in wall time
        progress = min((time.monotonic() - t0) / budget, 1.0)
        lr_factor = min(1.0, (step + 1) / 500) * 0.5 * (1.0 + math.cos(math.pi * progress))
        for group in opt.param_groups:
            group["lr"] = 1e-4 * lr_factor
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = model(x_t, t)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the example's max_grad_norm = 1 (accelerate)
        opt.step()
        ema.step(model.parameters())
        step, images = step + 1, images + x.shape[0]
        snaps.maybe(step, images, ema_state)
    snaps.items.append((time.monotonic() - t0, step, images, {k: v.clone() for k, v in ema_state().items()}))
    # the model as an elbolab eps-model of the linear schedule (t = diffusers' index + 1)
    bridge = BridgeUNet(ema_model.net).eval()
    diffusion = scheduler_to_diffusion(dict(sched.config)).diffusion
    return snaps, ema_model, bridge, diffusion, step


class Autocast(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x, t, y=None):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x, t, y).float()


def score(model: torch.nn.Module, diffusion: GaussianDiffusion, candidate, n: int, reference, seed: int) -> dict:
    name, fn, steps, opts = candidate
    out, t0 = [], time.perf_counter()
    with torch.inference_mode():
        for b, start in enumerate(range(0, n, 250)):
            g = torch.Generator().manual_seed(seed * 1009 + b)
            res = fn(Autocast(model), (min(250, n - start), 1, 28, 28), diffusion, steps=steps, generator=g,
                     clip_x0=True, **opts)
            out.append(res.sample.clamp(-1, 1))
    seconds = time.perf_counter() - t0
    r = evaluate_samples(torch.cat(out), "mnist", {"fid", "pr"}, reference=reference, progress=False)
    return {"sampler": name, "nfe": res.nfe, "fid": float(r.fid.fid), "precision": float(r.pr.precision),
            "recall": float(r.pr.recall), "seconds_per_image": seconds / n}


def evaluate_arm(name: str, snaps: Snapshots, model: torch.nn.Module, load: Callable[[dict], None],
                 diffusion: GaussianDiffusion, n: int, reference, seed: int) -> dict:
    load(snaps.items[-1][3])
    tried = [score(model, diffusion, c, n, reference, seed) for c in CANDIDATES]
    for t in tried:
        logger.info("%s final: %-13s FID %.2f", name, t["sampler"], t["fid"])
    best = min(tried, key=lambda t: t["fid"])
    cand = next(c for c in CANDIDATES if c[0] == best["sampler"])
    points = []
    for seconds, step, images, state in snaps.items[:-1]:
        load(state)
        s = score(model, diffusion, cand, n, reference, seed)
        points.append({"minutes": seconds / 60.0, "step": step, "images": images, **s})
        logger.info("%s at %.1f min (step %d): FID %.2f", name, seconds / 60.0, step, s["fid"])
    seconds, step, images, _ = snaps.items[-1]
    points.append({"minutes": seconds / 60.0, "step": step, "images": images, **best})
    return {"candidates_at_end": tried, "sampler": best["sampler"], "points": points}


def minutes_to_reach(points: list[dict], fid: float) -> float | None:
    """The first time the FID curve (linear between snapshots, from the first snapshot on) is <= ``fid``."""
    prev = None
    for p in points:
        if p["fid"] <= fid:
            if prev is None:
                return p["minutes"]
            a, b = prev, p
            w = (a["fid"] - fid) / max(a["fid"] - b["fid"], 1e-12)
            return a["minutes"] + w * (b["minutes"] - a["minutes"])
        prev = p
    return None


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for name, arm in report["arms"].items():
        ax.plot([p["minutes"] for p in arm["points"]], [p["fid"] for p in arm["points"]], "o-",
                label=f"{name} ({arm['sampler']})")
    ax.set_yscale("log")
    ax.set_xlabel("training minutes (wall)")
    ax.set_ylabel(f"FID ({report['fid_n']} samples vs MNIST train)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


def markdown(report: dict) -> str:
    lines = [f"Time to quality on {report['cpu']} ({report['threads']} threads), {report['minutes']:g} minutes per "
             f"arm, FID of {report['fid_n']} samples against the MNIST training images at each arm's best sampler "
             "(<= 50 NFE, chosen at the end).", "",
             "| arm | minutes | step | FID | precision | recall | sampler |", "|---|---|---|---|---|---|---|"]
    for name, arm in report["arms"].items():
        for p in arm["points"]:
            lines.append(f"| {name} | {p['minutes']:.1f} | {p['step']} | {p['fid']:.2f} | {p['precision']:.3f} | "
                         f"{p['recall']:.3f} | {p['sampler']} ({p['nfe']} NFE) |")
    lines += ["", report["target"]["text"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="", help="folder with the MNIST IDX files (default: download/cache)")
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--every", type=float, default=2.0, help="minutes between snapshots")
    ap.add_argument("--fid-n", type=int, default=500)
    ap.add_argument("--diffusers-batch", type=int, default=64, choices=[16, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference-limit", type=int, default=0, help="first N training images (0 = all)")
    ap.add_argument("--runs-dir", default="runs/time_to_quality")
    ap.add_argument("--out", default="benchmarks/results/time_to_quality")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    runs = Path(args.runs_dir)
    if (runs / "elbolab").exists():
        raise SystemExit(f"{runs / 'elbolab'} exists: remove it or give another --runs-dir")
    reference = load_reference("mnist", "train", data_dir=args.data_dir, limit=args.reference_limit)
    t_start = time.time()

    snaps_e, run = train_elbolab(args.data_dir, args.minutes, args.every, runs / "elbolab")
    from elbolab.apps.chain import run_diffusion

    e_diffusion = run_diffusion(run)
    snaps_d, d_model, bridge, d_diffusion, d_steps = train_diffusers(args.data_dir, args.minutes, args.every,
                                                                     args.diffusers_batch, args.seed)
    arms = {
        "elbolab": evaluate_arm("elbolab", snaps_e, run.model,
                                lambda s: run.model.load_state_dict(s, strict=False), e_diffusion, args.fid_n,
                                reference, args.seed),
        "diffusers": evaluate_arm("diffusers", snaps_d, bridge, lambda s: d_model.load_state_dict(s),
                                  d_diffusion, args.fid_n, reference, args.seed),
    }
    final_d = arms["diffusers"]["points"][-1]["fid"]
    reach = minutes_to_reach(arms["elbolab"]["points"], final_d)
    ok = reach is not None and reach <= args.minutes / 3
    report = {
        "cpu": cpu_name(), "threads": args.threads, "minutes": args.minutes, "every": args.every,
        "fid_n": args.fid_n, "diffusers_batch": args.diffusers_batch, "seed": args.seed, "arms": arms,
        "target": {"diffusers_final_fid": final_d, "elbolab_minutes_to_reach": reach, "met": ok,
                   "text": f"diffusers' final FID {final_d:.2f}; elbolab reaches it after "
                           f"{'never' if reach is None else f'{reach:.1f} min'} (target <= {args.minutes / 3:.1f} "
                           f"min: {'met' if ok else 'missed'})."},
        "seconds": round(time.time() - t_start, 1),
        "command": " ".join(["python", "benchmarks/time_to_quality.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    plot(report, out.with_suffix(".png"))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
