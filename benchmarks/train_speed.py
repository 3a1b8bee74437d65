"""CPU training and sampling speed of the default MNIST U-Net against diffusers' UNet2DModel, side by side.

    python benchmarks/train_speed.py [--out benchmarks/results/train_speed.json] [--threads 2] [--reps 7]
                                     [--compile] [--parity-steps 150]

What it measures, in one process, with repetitions of the two models interleaved (so that drift of a shared
machine hits both equally):

* training img/s: one optimiser step on a batch of 128 MNIST images (1x28x28): x_t = q_sample(x_0, t, eps)
  with random t in 1..1000 (linear schedule), MSE between eps and the network output, backward, AdamW step;
* sampling ms per image per step: one network forward on a batch of 64 under ``torch.inference_mode``;

for every variant (fp32, bf16 autocast, channels_last, channels_last + bf16, and with ``--compile`` also
torch.compile and torch.compile + bf16), and takes each model at its fastest variant (chosen separately for
training and sampling). It also records parameter counts, GFLOP per image (``FlopCounterMode``), a bf16
convolution ceiling measured in the same run (3x3 conv 64->64 at 28x28, batch 128, forward + backward, best
of NCHW and channels_last) with the achieved GFLOP/s as a fraction of it, and a loss-parity check: both
models trained for the same steps on the same batches, t and noise, then evaluated on the same held-out
batches. The JSON has every median and every raw repetition.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from elbolab.host import cpu_name

from elbolab.nn.config import unet_preset
from elbolab.data import load_embedded
from elbolab.diffusion import GaussianDiffusion, NoiseSchedule
from elbolab.nn import build_unet

CL = torch.channels_last
VARIANTS = ("fp32", "bf16", "channels_last", "channels_last_bf16")
COMPILE_VARIANTS = ("compile", "compile_bf16")


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
class DiffusersUNet(torch.nn.Module):
    """diffusers' UNet2DModel with channels (32, 64, 64), 2 layers per block, attention at the lowest resolution."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        self.net = UNet2DModel(
            sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=2,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t).sample


def make_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"elbolab": build_unet(unet_preset("mnist")), "diffusers": DiffusersUNet()}


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------------------------------
# One (model, variant) under test
# --------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    x0: torch.Tensor  # (B, 1, 28, 28) in [-1, 1]
    diffusion: GaussianDiffusion
    generator: torch.Generator

    def noisy(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, t, eps)`` for the first n images, fresh random t in 1..T and eps."""
        x0 = self.x0 if n is None else self.x0[:n]
        t = torch.randint(1, self.diffusion.T + 1, (x0.shape[0],), generator=self.generator)
        eps = torch.randn(x0.shape, generator=self.generator)
        return self.diffusion.q_sample(x0, t, eps).float(), t, eps


class Runner:
    """Training step and sampling forward of one model in one variant (own copy of the model and optimiser)."""

    def __init__(self, model: torch.nn.Module, variant: str, lr: float = 2e-4) -> None:
        self.variant = variant
        self.bf16 = variant.endswith("bf16")
        self.channels_last = variant.startswith("channels_last")
        model = copy.deepcopy(model)
        if self.channels_last:
            model = model.to(memory_format=CL)
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr)
        self.fn: Callable[..., torch.Tensor] = torch.compile(model) if variant.startswith("compile") else model

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=CL) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def loss(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            out = self.fn(self._prep(x_t), t)
        return F.mse_loss(out.float(), eps)

    def train_step(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> float:
        loss = self.loss(x_t, t, eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.inference_mode()
    def sample_forward(self, x_t: torch.Tensor, t: torch.Tensor) -> None:
        with self.autocast():
            self.fn(self._prep(x_t), t)


# --------------------------------------------------------------------------------------------------
# FLOPs and the conv ceiling
# --------------------------------------------------------------------------------------------------
def count_flops(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, train: bool) -> float:
    """FLOPs per image of a forward (+ backward when ``train``), counted on the meta device (no compute)."""
    model = copy.deepcopy(model).to("meta")
    x, t = x.to("meta"), t.to("meta")
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            model(x, t).float().pow(2).mean().backward()
        else:
            with torch.no_grad():
                model(x, t)
    return counter.get_total_flops() / x.shape[0]


class ConvCeiling:
    """bf16 3x3 conv 64 -> 64 at 28x28, batch 128, forward + backward; NCHW and channels_last."""

    def __init__(self) -> None:
        self.conv = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.x = {"nchw": torch.randn(128, 64, 28, 28, requires_grad=True)}
        self.x["channels_last"] = self.x["nchw"].detach().contiguous(memory_format=CL).requires_grad_()
        self.conv_cl = copy.deepcopy(self.conv).to(memory_format=CL)
        counter = FlopCounterMode(display=False)
        with counter:
            self._step("nchw")
        self.flops = counter.get_total_flops()

    def _step(self, layout: str) -> None:
        conv = self.conv if layout == "nchw" else self.conv_cl
        x = self.x[layout]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.backward(torch.ones_like(y))
        x.grad = None
        conv.zero_grad(set_to_none=True)

    def measure(self, tries: int = 3) -> dict[str, float]:
        """GFLOP/s per layout: the best of ``tries`` timed steps (a ceiling, not a typical value)."""
        out = {}
        for layout in self.x:
            best = float("inf")
            for _ in range(tries):
                t0 = time.perf_counter()
                self._step(layout)
                best = min(best, time.perf_counter() - t0)
            out[layout] = self.flops / best / 1e9
        return out


# --------------------------------------------------------------------------------------------------
# Loss parity
# --------------------------------------------------------------------------------------------------
def loss_parity(models: dict[str, torch.nn.Module], data: torch.Tensor, held_out: torch.Tensor,
                diffusion: GaussianDiffusion, steps: int, batch: int, lr: float) -> dict:
    """Train each model from its initialisation for ``steps`` AdamW steps (bf16 autocast) on the same batches,
    timesteps and noise; evaluate on the same held-out batches with fixed t and noise."""
    g = torch.Generator().manual_seed(1234)
    plan = []
    for _ in range(steps):
        idx = torch.randint(0, data.shape[0], (batch,), generator=g)
        t = torch.randint(1, diffusion.T + 1, (batch,), generator=g)
        eps = torch.randn((batch, *data.shape[1:]), generator=g)
        plan.append((diffusion.q_sample(data[idx], t, eps).float(), t, eps))
    evals = []
    for i in range(0, held_out.shape[0], batch):
        x0 = held_out[i:i + batch]
        t = torch.randint(1, diffusion.T + 1, (x0.shape[0],), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        evals.append((diffusion.q_sample(x0, t, eps).float(), t, eps))
    out: dict[str, dict] = {}
    for name, model in models.items():
        r = Runner(model, "bf16", lr=lr)
        losses = [r.train_step(*b) for b in plan]
        with torch.no_grad():
            ev = [float(r.loss(*b)) for b in evals]
        out[name] = {
            "first_loss": losses[0],
            "final_train_loss_mean_last10": statistics.fmean(losses[-10:]),
            "held_out_loss": statistics.fmean(ev),
            "train_losses": losses,
        }
    a, b = out["elbolab"]["held_out_loss"], out["diffusers"]["held_out_loss"]
    out["held_out_ratio_elbolab_over_diffusers"] = a / b
    out["settings"] = {"steps": steps, "batch": batch, "lr": lr, "precision": "bf16 autocast",
                       "held_out_images": int(held_out.shape[0]), "data": "mnist-embedded"}
    return out


# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/train_speed.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions per (model, variant)")
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--sample-forwards", type=int, default=3, help="forwards per sampling repetition")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    ap.add_argument("--compile", action="store_true", help="also torch.compile variants (~100 s of compiling)")
    ap.add_argument("--parity-steps", type=int, default=150, help="0 skips the loss-parity check")
    ap.add_argument("--parity-batch", type=int, default=64)
    ap.add_argument("--parity-lr", type=float, default=1e-3)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"--variants: unknown {bad}; choices: {', '.join(VARIANTS)}")
    if args.compile:
        variants += list(COMPILE_VARIANTS)
    started = time.time()
    load_start = os.getloadavg()

    models = make_models()
    params = {k: n_params(m) for k, m in models.items()}
    param_ratio = params["elbolab"] / params["diffusers"]

    train_ds = load_embedded("train")
    test_ds = load_embedded("test")
    data, _ = train_ds.batch(torch.arange(len(train_ds)))
    held_out, _ = test_ds.batch(torch.arange(min(len(test_ds), 256)))
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    batch = Batch(data[: args.train_batch], diffusion, torch.Generator().manual_seed(0))

    x_flop, t_flop, _ = batch.noisy(8)
    gflop = {k: {"train_step": count_flops(m, x_flop, t_flop, True) / 1e9,
                 "forward": count_flops(m, x_flop, t_flop, False) / 1e9} for k, m in models.items()}

    ceiling = ConvCeiling()
    ceiling.measure()  # warm-up: oneDNN compiles its kernels on first use
    ceiling_runs: list[dict[str, float]] = []

    print(f"params: elbolab {params['elbolab']:,}  diffusers {params['diffusers']:,}  ratio {param_ratio:.3f}",
          flush=True)
    runners = {(k, v): Runner(m, v) for k, m in models.items() for v in variants}
    for (k, v), r in runners.items():  # warm-up (and compile)
        t0 = time.perf_counter()
        for _ in range(2):
            r.train_step(*batch.noisy())
            x_t, t, _ = batch.noisy(args.sample_batch)
            r.sample_forward(x_t, t)
        print(f"warm-up {k:9s} {v:20s} {time.perf_counter() - t0:6.1f} s", flush=True)

    train_ips: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    sample_ms: dict[tuple[str, str], list[float]] = {key: [] for key in runners}
    for rep in range(args.reps):
        ceiling_runs.append(ceiling.measure())
        order = list(models) if rep % 2 == 0 else list(models)[::-1]
        for v in variants:
            for k in order:
                r = runners[(k, v)]
                x_t, t, eps = batch.noisy()
                t0 = time.perf_counter()
                r.train_step(x_t, t, eps)
                train_ips[(k, v)].append(args.train_batch / (time.perf_counter() - t0))
                x_t, t, _ = batch.noisy(args.sample_batch)
                t0 = time.perf_counter()
                for _ in range(args.sample_forwards):
                    r.sample_forward(x_t, t)
                dt = (time.perf_counter() - t0) / args.sample_forwards
                sample_ms[(k, v)].append(dt / args.sample_batch * 1e3)
        print(f"rep {rep + 1}/{args.reps} done", flush=True)

    results: dict[str, dict] = {k: {} for k in models}
    for (k, v) in runners:
        results[k][v] = {
            "train_img_per_s": statistics.median(train_ips[(k, v)]),
            "sample_ms_per_img_step": statistics.median(sample_ms[(k, v)]),
            "train_img_per_s_reps": train_ips[(k, v)],
            "sample_ms_per_img_step_reps": sample_ms[(k, v)],
        }
    best = {}
    for k in models:
        bt = max(results[k], key=lambda v: results[k][v]["train_img_per_s"])
        bs = min(results[k], key=lambda v: results[k][v]["sample_ms_per_img_step"])
        best[k] = {"train_variant": bt, "train_img_per_s": results[k][bt]["train_img_per_s"],
                   "sample_variant": bs, "sample_ms_per_img_step": results[k][bs]["sample_ms_per_img_step"]}
    ratio = {
        "train_elbolab_over_diffusers": best["elbolab"]["train_img_per_s"] / best["diffusers"]["train_img_per_s"],
        "sample_speedup_elbolab_over_diffusers":
            best["diffusers"]["sample_ms_per_img_step"] / best["elbolab"]["sample_ms_per_img_step"],
    }
    ceil = {layout: statistics.median(c[layout] for c in ceiling_runs) for layout in ceiling_runs[0]}
    ceil_best = max(ceil.values())
    achieved = {}
    for k in models:
        train_gflops = gflop[k]["train_step"] * best[k]["train_img_per_s"]
        sample_gflops = gflop[k]["forward"] / (best[k]["sample_ms_per_img_step"] * 1e-3)
        achieved[k] = {"train_gflop_per_s": train_gflops, "train_fraction_of_ceiling": train_gflops / ceil_best,
                       "sample_gflop_per_s": sample_gflops, "sample_fraction_of_ceiling": sample_gflops / ceil_best}

    parity = None
    if args.parity_steps > 0:
        print("loss parity ...", flush=True)
        parity = loss_parity(models, data, held_out, diffusion, args.parity_steps, args.parity_batch,
                             args.parity_lr)

    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "wall_s": time.time() - started,
        "env": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                "python": platform.python_version(), "cpu": cpu_name(), "threads": args.threads,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "settings": {"train_batch": args.train_batch, "sample_batch": args.sample_batch, "reps": args.reps,
                     "sample_forwards_per_rep": args.sample_forwards, "variants": variants,
                     "optimizer": "AdamW lr 2e-4", "loss": "MSE(eps, model(x_t, t)), t ~ U{1..1000}, linear betas",
                     "elbolab_config": "unet_preset('mnist')"},
        "params": {**params, "ratio_elbolab_over_diffusers": param_ratio,
                   "within_10_percent": abs(param_ratio - 1) <= 0.10},
        "gflop_per_image": gflop,
        "conv_ceiling_bf16": {"what": "3x3 conv 64->64, 28x28, batch 128, fwd+bwd, bf16 autocast",
                              "gflop_per_s_median": ceil, "best_gflop_per_s": ceil_best, "runs": ceiling_runs},
        "results": results,
        "best": best,
        "ratio": ratio,
        "achieved": achieved,
        "loss_parity": parity,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    print(markdown(report))
    print(f"wrote {out}")
    return 0


def markdown(r: dict) -> str:
    lines = ["| model | variant | train img/s | sample ms/img/step |", "| --- | --- | --- | --- |"]
    for k, per in r["results"].items():
        for v, m in per.items():
            lines.append(f"| {k} | {v} | {m['train_img_per_s']:.1f} | {m['sample_ms_per_img_step']:.2f} |")
    b, ratio, p, g, a = r["best"], r["ratio"], r["params"], r["gflop_per_image"], r["achieved"]
    lines += [
        "",
        f"best: elbolab {b['elbolab']['train_img_per_s']:.1f} img/s ({b['elbolab']['train_variant']}), "
        f"{b['elbolab']['sample_ms_per_img_step']:.2f} ms ({b['elbolab']['sample_variant']}); diffusers "
        f"{b['diffusers']['train_img_per_s']:.1f} img/s ({b['diffusers']['train_variant']}), "
        f"{b['diffusers']['sample_ms_per_img_step']:.2f} ms ({b['diffusers']['sample_variant']})",
        f"ratio elbolab/diffusers: training {ratio['train_elbolab_over_diffusers']:.2f}x, "
        f"sampling {ratio['sample_speedup_elbolab_over_diffusers']:.2f}x",
        f"params: elbolab {p['elbolab']:,}, diffusers {p['diffusers']:,} (ratio {p['ratio_elbolab_over_diffusers']:.3f})",
        f"GFLOP/image (train step / forward): elbolab {g['elbolab']['train_step']:.3f} / {g['elbolab']['forward']:.3f}, "
        f"diffusers {g['diffusers']['train_step']:.3f} / {g['diffusers']['forward']:.3f}",
        f"conv ceiling (bf16 fwd+bwd): {r['conv_ceiling_bf16']['best_gflop_per_s']:.0f} GFLOP/s; achieved in training: "
        f"elbolab {a['elbolab']['train_gflop_per_s']:.0f} ({a['elbolab']['train_fraction_of_ceiling']:.1%}), "
        f"diffusers {a['diffusers']['train_gflop_per_s']:.0f} ({a['diffusers']['train_fraction_of_ceiling']:.1%})",
    ]
    lp = r.get("loss_parity")
    if lp:
        lines.append(
            f"loss parity ({lp['settings']['steps']} steps): held-out loss elbolab {lp['elbolab']['held_out_loss']:.4f}, "
            f"diffusers {lp['diffusers']['held_out_loss']:.4f} (ratio {lp['held_out_ratio_elbolab_over_diffusers']:.3f}); "
            f"final train loss {lp['elbolab']['final_train_loss_mean_last10']:.4f} vs "
            f"{lp['diffusers']['final_train_loss_mean_last10']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
