"""The ``elbolab`` command: parse, build a config, call the library. Nothing else lives here.

Every verb has ``--help`` with an example. Library code logs through ``logging``; this module is the only
place that prints (tables and the paths of what was written).
"""

from __future__ import annotations

import argparse
import os
import signal
import traceback
import logging
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

from elbolab import errors

log = logging.getLogger("elbolab")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _sub(subparsers, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=help_,
        description=help_,
        epilog="example:\n" + textwrap.indent(example.strip(), "  "),
        formatter_class=_Formatter,
    )


def _seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the torch.Generator that draws all randomness")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="where the network runs: auto (CUDA when available), cpu, "
                                                    "cuda, cuda:N")


def _sampler_args(p: argparse.ArgumentParser, sampler_help: str) -> None:
    p.add_argument("--sampler", default=None, help=f"sampler of the run's family (default: the run's config): "
                                                   f"{sampler_help}")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (= --option steps=N; default: the run's [sample.<sampler>])")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a sampler option, e.g. --option eta=0.5 (the run's family lists its samplers' options)")


# --------------------------------------------------------------------------------------------------
# verbs
# --------------------------------------------------------------------------------------------------
def cmd_data_info(args: argparse.Namespace) -> int:
    from elbolab.data import dataset_info

    info = dataset_info(args.name, data_dir=args.data_dir, download=args.download)
    print(info.to_text())
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from elbolab.data import dataset_names

    print("\n".join(dataset_names()))
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from elbolab.data.registry import download_dataset

    for f in download_dataset(args.name, data_dir=args.data_dir, mirrors=args.mirror or None):
        print(f"ok {f.path}")
    return 0


def _run_config_from_args(args: argparse.Namespace):
    from elbolab.config import apply_overrides, load_run_config

    cfg = load_run_config(args.config)
    overrides = list(args.set or [])
    if args.data:
        overrides.append(f'data.name="{args.data}"')
    if args.data_dir:
        overrides.append(f'data.data_dir="{args.data_dir}"')
    for flag, key in (("steps", "train.steps"), ("epochs", "train.epochs"), ("minutes", "train.minutes"),
                      ("seed", "train.seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    return apply_overrides(cfg, overrides) if overrides else cfg


def cmd_train(args: argparse.Namespace) -> int:
    from elbolab.runs import train_run

    cfg = _run_config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    result = train_run(cfg, out, resume=args.resume)
    if result.is_main_process:
        print(f"run written to {out}/ ({result.summary()})")
    from elbolab.errors import ExitCode

    return int(ExitCode.INTERRUPTED) if result.interrupted else 0


def _sampler_options(args: argparse.Namespace) -> dict:
    """``--steps``, ``--eta`` and every ``--option key=value`` as sampler options (checked by the run's family)."""
    from elbolab.config import parse_options

    options = {"steps": getattr(args, "steps", None), "eta": getattr(args, "eta", None),
               **parse_options(getattr(args, "option", None))}
    return {k: v for k, v in options.items() if v is not None}


def _load(args: argparse.Namespace):
    from elbolab.runs import load_run

    return load_run(args.run, use_ema=not getattr(args, "no_ema", False), device=args.device)


def cmd_sample(args: argparse.Namespace) -> int:
    from elbolab.runs import SampleRequest, sample_run

    run = _load(args)
    if args.guidance_sweep is not None:
        from elbolab.apps.guidance_sweep import guidance_sweep

        sweep = guidance_sweep(run, args.guidance_sweep, Path(args.out), n=args.n, seed=args.seed,
                               sampler=args.sampler, options=_sampler_options(args))
        print(sweep.to_text())
        return 0
    request = SampleRequest(n=args.n, sampler=args.sampler, options=_sampler_options(args), seed=args.seed,
                            label=args.label, guidance=args.guidance, labels=args.labels)
    written = sample_run(run, request, Path(args.out))
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from elbolab.families import DiagnosticsRequest
    from elbolab.runs import DIAGNOSTICS_FILE, EvalRequest, diagnose_run, evaluate_run

    run = _load(args)
    if args.iwae or args.active_units or args.probe:
        diag = diagnose_run(run, DiagnosticsRequest(iwae=args.iwae, n=args.iwae_n, active_units=args.active_units,
                                                    probe=args.probe, seed=args.seed))
        print(diag.to_text())
        print(f"wrote {run.folder / DIAGNOSTICS_FILE}")
        if not (args.metrics or args.bpd):
            return 0
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else []
    if args.bpd and "bpd" not in metrics:
        metrics.append("bpd")
    nll = _eval_nll(args, run)
    if nll is not None and not metrics:
        return 0
    request = EvalRequest(metrics=metrics or ["bpd"], n=args.n, bpd_n=args.bpd_n, sampler=args.sampler,
                          options=_sampler_options(args), seed=args.seed, samples=args.samples, exact=args.exact)
    from elbolab.report.ode_nll import NLL_KEY, read_metrics, write_nll_metrics

    kept = nll or read_metrics(run.folder).get(NLL_KEY)  # metrics.json is rewritten: keep the ODE NLL in it
    report = evaluate_run(run, request)
    write_nll_metrics(run.folder, kept)
    print(report.to_text())
    print(f"wrote {report.path}")
    return 0


def _eval_nll(args: argparse.Namespace, run) -> dict | None:
    """``eval --nll ode``: the probability-flow ODE NLL in bits/dim, printed and written into metrics.json as
    ``nll_ode``; returns that entry (None without --nll)."""
    if not getattr(args, "nll", None):
        return None
    from elbolab.report.ode_nll import ode_nll_run, write_nll_metrics

    res = ode_nll_run(run, n=args.nll_n, n_dequant=args.n_dequant, seed=args.seed, rtol=args.nll_rtol,
                      batch_size=args.nll_batch)
    print(res.to_text())
    path = write_nll_metrics(run.folder, res.to_dict())
    print(f"wrote {path} (nll_ode)")
    return res.to_dict()


def cmd_import_diffusers(args: argparse.Namespace) -> int:
    from elbolab.bridges.diffusers import import_diffusers_run

    result = import_diffusers_run(args.folder, args.out, data=args.data, data_dir=args.data_dir)
    print(result.to_text())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from elbolab.bridges.diffusers import export_run

    if args.format != "diffusers":
        raise ValueError(f"--format {args.format!r} is not supported; choices: diffusers")
    folder = export_run(_load(args), args.out)
    print(f"wrote {folder}/ (load it with diffusers.DDPMPipeline.from_pretrained({str(folder)!r}))")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from elbolab.demo import run_demo

    report = run_demo(Path(args.out), minutes=args.minutes, seed=args.seed)
    print(report.to_text())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from elbolab.report import build_report

    result = build_report([Path(r) for r in args.runs], Path(args.out), per_timestep_images=args.per_t,
                          max_grids=args.max_grids)
    print(result.to_text())
    return 0


def cmd_inpaint(args: argparse.Namespace) -> int:
    from elbolab.apps.inpainting import InpaintRequest, inpaint_run

    request = InpaintRequest(out_dir=args.out, image=args.image, indices=args.index, mask=args.mask,
                             mask_kind=args.mask_kind, samples=args.samples, steps=args.steps,
                             jump_length=args.jump_length, resample=args.resample, seed=args.seed)
    print(inpaint_run(_load(args), request).to_text())
    return 0


def cmd_progressive(args: argparse.Namespace) -> int:
    from elbolab.apps.progressive import ProgressiveRequest, progressive_run

    request = ProgressiveRequest(out_dir=args.out, n=args.n, frames=args.frames, steps=args.steps,
                                 sampler=args.sampler, seed=args.seed)
    print(progressive_run(_load(args), request).to_text())
    return 0


def cmd_shared_latent(args: argparse.Namespace) -> int:
    from elbolab.apps.shared_latent import SharedLatentRequest, shared_latent_run

    request = SharedLatentRequest(out_dir=args.out, image=args.image, index=args.index, times=args.times, n=args.n,
                                  steps=args.steps, seed=args.seed)
    print(shared_latent_run(_load(args), request).to_text())
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from elbolab.apps.interpolation import InterpolateRequest, interpolate_run

    request = InterpolateRequest(out_dir=args.out, a=args.a, b=args.b, index_a=args.index_a, index_b=args.index_b,
                                 num=args.num, kind=args.kind, times=args.times, steps=args.steps,
                                 ddim_steps=args.ddim_steps, seed=args.seed)
    print(interpolate_run(_load(args), request).to_text())
    return 0


def cmd_toy(args: argparse.Namespace) -> int:
    from elbolab.apps.toy import ToyRequest, run_toy

    request = ToyRequest(out_dir=args.out, distribution=args.distribution, train_steps=args.train_steps,
                         particles=args.particles, steps=args.steps, frames=args.frames, seed=args.seed)
    print(run_toy(request).to_text())
    return 0


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from elbolab.config import preset_names
    from elbolab.diffusion.guidance import LABEL_DRAWS
    from elbolab.errors import EXIT_CODES_HELP
    from elbolab.families import all_families

    sampler_help = "; ".join(f"{f.name}: {', '.join(f.samplers)}" for f in all_families() if f.samplers)

    parser = argparse.ArgumentParser(
        prog="elbolab",
        description="Train, sample and evaluate the ELBO family of generative models.",
        formatter_class=_Formatter,
        epilog="examples:\n  elbolab demo\n  elbolab train ddpm-mnist --minutes 10\n"
               "  elbolab sample runs/ddpm-mnist --n 64 --out grid.png\n\n" + EXIT_CODES_HELP,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also ELBOLAB_DEBUG=1)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    # data
    p = _sub(sub, "data", "inspect datasets", "elbolab data info mnist --data-dir ../shared/data/mnist")
    dsub = p.add_subparsers(dest="data_verb", metavar="ACTION")
    dsub.required = True
    q = _sub(dsub, "info", "count, shape, value range, per-class counts and checksum status of a dataset",
             "elbolab data info mnist --data-dir ../shared/data/mnist")
    q.add_argument("name", help="mnist-embedded, mnist, fashion-mnist, cifar10, imagefolder:PATH")
    q.add_argument("--data-dir", default=None, help="folder with the dataset files (default: $ELBOLAB_DATA or cache)")
    q.add_argument("--download", action="store_true", help="download missing files into the cache first")
    q.set_defaults(func=cmd_data_info)
    q = _sub(dsub, "list", "the dataset names elbolab accepts", "elbolab data list")
    q.set_defaults(func=cmd_data_list)
    q = _sub(dsub, "download", "download and MD5-verify a dataset's files into the cache (or --data-dir)",
             "elbolab data download fashion-mnist\nelbolab data download mnist --mirror http://127.0.0.1:8000/")
    q.add_argument("name", help="mnist, fashion-mnist, cifar10")
    q.add_argument("--data-dir", default=None, help="folder to look in first (default: $ELBOLAB_DATA or cache)")
    q.add_argument("--mirror", action="append", help="base URL to download from (repeatable; default: canonical)")
    q.set_defaults(func=cmd_data_download)

    # train
    p = _sub(sub, "train", "train a model from a preset or a TOML config",
             "elbolab train ddpm-mnist --minutes 10 --out runs/mnist\n"
             "elbolab train configs/ddpm-mnist.toml --set train.lr=1e-3 --set model.unet.base_channels=64\n"
             "torchrun --nproc_per_node=2 -m elbolab train ddpm-mnist --steps 2000")
    p.add_argument("config", help=f"preset ({', '.join(preset_names())}) or path to a .toml config")
    p.add_argument("--data", default=None, help="dataset name (overrides data.name)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--out", default=None, help="run folder (default runs/<config name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.lr=1e-3")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--epochs", type=float, default=None, help="stop after this many epochs")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--seed", type=int, default=None, help="training seed (overrides train.seed)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=cmd_train)

    # sample
    p = _sub(sub, "sample", "draw samples from a trained run",
             "elbolab sample runs/demo --n 64 --sampler ddim --steps 50 --seed 1 --out grid.png\n"
             "elbolab sample runs/ddpm-cfg-mnist --label 3 --guidance 2.0 --out threes.png\n"
             "elbolab sample runs/ddpm-cfg-mnist --guidance-sweep -1,-0.2,0,1,2 --n 500 --out sweep.png")
    p.add_argument("run", help="run folder")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    _sampler_args(p, sampler_help)
    p.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (= --option eta=...)")
    p.add_argument("--label", type=int, default=None, help="class label for conditional models")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w")
    p.add_argument("--labels", default="cycle", choices=list(LABEL_DRAWS),
                   help="labels of a conditional model's samples without --label: cycle 0..K-1 (a grid row per "
                        "class) or prior (i.i.d. uniform draws: samples of p(x), what FID should score)")
    p.add_argument("--guidance-sweep", default=None, metavar="W,W,...",
                   help="one row of samples per guidance weight (e.g. -1,-0.2,0,1,2), with classifier accuracy, "
                        "FID and precision/recall of --n samples per w; writes --out and a .json table")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--out", default="samples.png", help="output PNG grid (an .npz of raw samples is written beside)")
    _seed_arg(p)
    _device_arg(p)
    p.set_defaults(func=cmd_sample)

    # eval
    p = _sub(sub, "eval", "evaluate a trained run (ELBO terms in bits/dim, FID, KID, IS, precision/recall)",
             "elbolab eval runs/demo --bpd\nelbolab eval runs/demo --metrics fid,kid,is,pr,bpd --n 10000\n"
             "elbolab eval runs/vae-mnist-fc --iwae 5000 --iwae-n 500 --active-units --probe\n"
             "elbolab eval runs/demo --nll ode --nll-n 256 --n-dequant 1")
    p.add_argument("run", help="run folder")
    p.add_argument("--bpd", action="store_true", help="ELBO terms in bits/dim on the test split")
    p.add_argument("--metrics", default=None, help="comma-separated subset of fid,kid,is,pr,bpd")
    p.add_argument("--n", type=int, default=10000, help="number of generated samples for sample metrics")
    p.add_argument("--bpd-n", type=int, default=256, help="number of test images for bits/dim")
    p.add_argument("--exact", action="store_true", help="bits/dim with all T denoising terms (default: Monte Carlo)")
    _sampler_args(p, sampler_help)
    p.add_argument("--samples", default=None, help="reuse samples from this .npz instead of generating")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--iwae", type=int, default=0, metavar="K",
                   help="VAE/HVAE runs: ELBO and IWAE_K negative log-likelihood on the first --iwae-n test images")
    p.add_argument("--iwae-n", type=int, default=1000, help="test images for --iwae (0 = all)")
    p.add_argument("--active-units", action="store_true", help="VAE/HVAE runs: active latent units per layer")
    p.add_argument("--probe", action="store_true", help="VAE/HVAE/AE runs: linear probe of the encoder's code")
    p.add_argument("--nll", default=None, choices=["ode"],
                   help="diffusion runs: the probability-flow ODE negative log-likelihood in bits/dim (uniform "
                        "dequantisation), written into RUN/metrics.json as nll_ode")
    p.add_argument("--nll-n", type=int, default=256, help="test images for --nll (one ODE solve each)")
    p.add_argument("--n-dequant", type=int, default=1, help="dequantisation draws per image for --nll")
    p.add_argument("--nll-batch", type=int, default=1,
                   help="images per joint ODE solve for --nll (1 = each image on its own; larger is faster on a "
                        "CPU, per-image values then move with the batch by up to ~20x rtol)")
    p.add_argument("--nll-rtol", type=float, default=1e-5, help="dopri5 tolerance (rtol = atol) for --nll")
    _seed_arg(p)
    _device_arg(p)
    p.set_defaults(func=cmd_eval)

    # bridges (elbolab.bridges, optional extra diffusers)
    p = _sub(sub, "import-diffusers", "make an elbolab run from a diffusers save_pretrained folder (UNet2DModel + "
             "DDPMScheduler/DDIMScheduler, safetensors weights); then sample, eval, inpaint it like any run",
             "elbolab import-diffusers ddpm-cifar10-32/ --out runs/ddpm-cifar10-32\n"
             "elbolab import-diffusers my_pipeline/ --out runs/mine --data imagefolder:faces/")
    p.add_argument("folder", help="folder with unet/ and scheduler/ (e.g. a download of google/ddpm-cifar10-32)")
    p.add_argument("--out", required=True, help="the run folder to create")
    p.add_argument("--data", default=None, help="dataset of the run's eval/FID/inpaint (default: mnist-embedded "
                                                "for 1 channel, cifar10 for 3)")
    p.add_argument("--data-dir", default="", help="folder with the dataset files")
    p.set_defaults(func=cmd_import_diffusers)

    p = _sub(sub, "export", "export a DDPM run whose network is diffusers' UNet2DModel (model.network = "
             "\"diffusers\") as a folder DDPMPipeline.from_pretrained loads",
             "elbolab export runs/ddpm-diffusers --format diffusers --out exported/")
    p.add_argument("run", help="run folder (family ddpm, model.network = \"diffusers\")")
    p.add_argument("--format", default="diffusers", help="diffusers (the only format)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    _device_arg(p)
    p.set_defaults(func=cmd_export)

    # demo
    p = _sub(sub, "demo", "train ddpm-mnist on the embedded MNIST, sample an 8x8 DDIM grid, report the ELBO terms",
             "elbolab demo\nelbolab demo --minutes 3 --out runs/quick")
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--minutes", type=float, default=None, help="a training budget in wall minutes instead of the preset's fixed train.steps (then the result depends on the host's speed)")
    _seed_arg(p)
    p.set_defaults(func=cmd_demo)

    # report
    p = _sub(sub, "report", "one self-contained HTML report of runs (config, curves, grids, ELBO terms, metrics)",
             "elbolab report runs/demo --out report.html\nelbolab report runs/a runs/b --out compare.html --per-t 4")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", default="report.html", help="the HTML file to write")
    p.add_argument("--per-t", type=int, default=0,
                   help="compute L_t at every t on this many test images (diffusion runs; T evaluations each)")
    p.add_argument("--max-grids", type=int, default=12, help="sample grids shown per run, evenly spaced")
    p.set_defaults(func=cmd_report)

    # applications (elbolab.apps)
    p = _sub(sub, "inpaint", "fill in masked pixels with RePaint (diffusion runs); mask: 1/white = keep",
             "elbolab inpaint runs/ddpm-mnist --index 0 1 2 3 --mask-kind center --out inpaint/\n"
             "elbolab inpaint runs/ddpm-mnist --image in.png --mask mask.png --samples 8")
    p.add_argument("run", help="run folder (family ddpm)")
    p.add_argument("--image", default=None, help="image file to inpaint (default: test images --index)")
    p.add_argument("--index", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 7],
                   help="test-split images of the run's dataset")
    p.add_argument("--mask", default=None, help="mask image: white = keep, black = fill in (default: --mask-kind)")
    p.add_argument("--mask-kind", default="center", choices=["center", "left-half", "random-pixels"],
                   help="built-in mask, named after the missing region")
    p.add_argument("--samples", type=int, default=4, help="completions per image")
    p.add_argument("--steps", type=int, default=100, help="timesteps of the (respaced) reverse chain")
    p.add_argument("--jump-length", type=int, default=10, help="RePaint jump length j")
    p.add_argument("--resample", type=int, default=5, help="RePaint resamplings r (1 = plain replacement)")
    p.add_argument("--out", default="inpaint", help="output folder")
    _seed_arg(p)
    _device_arg(p)
    p.set_defaults(func=cmd_inpaint)

    p = _sub(sub, "progressive", "progressive generation: x0_hat along the reverse chain (DDPM Fig. 6)",
             "elbolab progressive runs/ddpm-mnist --n 8 --frames 10 --out progressive/")
    p.add_argument("run", help="run folder (family ddpm)")
    p.add_argument("--n", type=int, default=8, help="number of chains (rows)")
    p.add_argument("--frames", type=int, default=10, help="time columns")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: every timestep)")
    p.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim"])
    p.add_argument("--out", default="progressive", help="output folder")
    _seed_arg(p)
    _device_arg(p)
    p.set_defaults(func=cmd_progressive)

    p = _sub(sub, "shared-latent", "several samples of p(x0 | x_t) from one x_t, for several t (DDPM Fig. 7)",
             "elbolab shared-latent runs/ddpm-mnist --index 3 --times 250 500 750 1000 --n 6 --out shared/")
    p.add_argument("run", help="run folder (family ddpm)")
    p.add_argument("--image", default=None, help="source image file (default: test image --index)")
    p.add_argument("--index", type=int, default=0, help="test-split image of the run's dataset")
    p.add_argument("--times", type=int, nargs="+", default=None, help="times t (default: T/5, 2T/5, ..., T)")
    p.add_argument("--n", type=int, default=6, help="samples per t")
    p.add_argument("--steps", type=int, default=None, help="reverse-chain steps from t (default: all)")
    p.add_argument("--out", default="shared_latent", help="output folder")
    _seed_arg(p)
    _device_arg(p)
    p.set_defaults(func=cmd_shared_latent)

    p = _sub(sub, "interpolate", "interpolate two images: diffusion runs through q(x_t|x0) codes (coarse-to-fine "
             "over t, DDPM Figs. 8-9) and DDIM inversion; VAE runs in latent space, with attribute editing",
             "elbolab interpolate runs/ddpm-mnist --a a.png --b b.png --out interp/\n"
             "elbolab interpolate runs/ddpm-mnist --index-a 0 --index-b 1 --kind slerp --times 0 250 500 1000\n"
             "elbolab interpolate runs/vae-mnist --index-a 0 --index-b 1")
    p.add_argument("run", help="run folder (family ddpm, vae, hvae or ae)")
    p.add_argument("--a", default=None, help="first image file (with --b; default: test images --index-a/-b)")
    p.add_argument("--b", default=None, help="second image file")
    p.add_argument("--index-a", type=int, default=0, help="test-split image used as a")
    p.add_argument("--index-b", type=int, default=1, help="test-split image used as b")
    p.add_argument("--num", type=int, default=9, help="interpolation points, end points included")
    p.add_argument("--kind", default="linear", choices=["linear", "slerp"], help="how the codes are mixed")
    p.add_argument("--times", type=int, nargs="+", default=None,
                   help="diffusion steps before mixing, one row each (default: 0, T/10, T/4, T/2, 3T/4, T)")
    p.add_argument("--steps", type=int, default=100, help="reverse-chain steps per row (at most t)")
    p.add_argument("--ddim-steps", type=int, default=50, help="steps of the DDIM inversion and decoding")
    p.add_argument("--out", default="interpolate", help="output folder")
    _seed_arg(p)
    _device_arg(p)
    p.set_defaults(func=cmd_interpolate)

    p = _sub(sub, "toy", "the lecture's toy pictures: inverse-CDF sampling in 1-D; a 2-D density diffused and "
             "reversed (toy MLP trained for seconds, and the exact oracle) as particles and flow fields, PNG + GIF",
             "elbolab toy --out toy/\nelbolab toy --distribution checkerboard --train-steps 5000")
    p.add_argument("--distribution", default="gaussian-mixture",
                   choices=["gaussian-mixture", "two-moons", "swiss-roll", "checkerboard"],
                   help="2-D data (gaussian-mixture also has the exact reverse process)")
    p.add_argument("--train-steps", type=int, default=3000, help="Adam steps of the toy eps-model")
    p.add_argument("--particles", type=int, default=2000, help="particles drawn")
    p.add_argument("--steps", type=int, default=250, help="reverse-chain steps (of T = 1000)")
    p.add_argument("--frames", type=int, default=30, help="frames per GIF (0: no GIF)")
    p.add_argument("--out", default="toy", help="output folder")
    _seed_arg(p)
    p.set_defaults(func=cmd_toy)
    return parser


def _attach_list_values(argv: list[str]) -> list[str]:
    """``--guidance-sweep -1,-0.2`` -> ``--guidance-sweep=-1,-0.2``: argparse would read a value that starts
    with '-' (and is not a single number) as another option."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "--guidance-sweep" and out[i + 1].startswith("-"):
            out[i : i + 2] = [f"{out[i]}={out[i + 1]}"]
            break
    return out


def run_cli(func: Callable[[Any], int | None], args: Any, verb: str) -> int:
    """Run one CLI verb, ``func(args)``, and turn what it raises into a message on stderr and an exit code.

    A user/environment error prints ``elbolab VERB: error: MESSAGE`` (one line; the traceback before it
    only with ``args.debug`` or ``ELBOLAB_DEBUG=1``) and returns its :class:`ExitCode`; a programming error
    propagates with its traceback (exit 1). SIGTERM raises ``KeyboardInterrupt`` outside code that handles
    it itself (the Trainer saves a checkpoint on SIGINT/SIGTERM and returns), so both end as "interrupted"
    (130). Output piped into a closed reader (``| head``) is not an error.
    """
    debug = errors.debug_enabled(getattr(args, "debug", False))
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, errors.sigterm_as_interrupt)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM
        previous = None
    try:
        return int(func(args) or 0)
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        described = errors.describe(exc)
        if described is None:
            raise  # a bug: keep the traceback
        message, code = described
        if debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        print(f"elbolab {verb}: error: {message}", file=sys.stderr)
        return code
    finally:
        if previous is not None:
            try:
                signal.signal(signal.SIGTERM, previous)
            except (ValueError, OSError):
                pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_list_values(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return run_cli(args.func, args, args.verb)


if __name__ == "__main__":
    raise SystemExit(main())
