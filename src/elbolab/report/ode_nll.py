"""``elbolab eval RUN --nll ode``: the negative log-likelihood of a diffusion run through its probability-flow
ODE (Song et al. 2021, Sec. 4.3 and Appendix D.2), in bits/dim with uniform dequantisation, written into
``RUN/metrics.json`` as ``"nll_ode"`` next to the ELBO (``"bpd"``) and shown by the report with its kind "ODE".

The ELBO of ``eval --bpd`` is a bound on the *discrete* likelihood with the discretised Gaussian decoder of Ho
et al. 2020; this figure is the continuous density of the probability-flow ODE model at t_min = 1 evaluated at
dequantised images x~ = 2 (k + u) / 256 - 1, u ~ U[0, 1)^D, which upper-bounds the discrete NLL too
(:func:`elbolab.diffusion.likelihood.bits_per_dim`). The two are different estimators: state which one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from elbolab.io import atomic_write_json

logger = logging.getLogger(__name__)

NLL_KEY = "nll_ode"
METRICS_FILE = "metrics.json"
KIND = "ODE"


@dataclass(frozen=True)
class ODENLLResult:
    """``mean`` bits/dim over ``n`` test images with its standard error over images ``stderr`` (NaN for n = 1),
    ``n_dequant`` dequantisation draws per image, ``nfe`` network evaluations in total, ``per_image: (n,)``."""

    mean: float
    stderr: float
    n: int
    n_dequant: int
    nfe: int
    seconds: float
    step: int
    exact_trace: bool
    per_image: tuple[float, ...]
    rtol: float = 1e-5
    batch_size: int = 1

    @property
    def note(self) -> str:
        trace = "exact trace" if self.exact_trace else "Hutchinson trace estimator"
        solve = "one solve per image" if self.batch_size == 1 else f"solved in joint batches of {self.batch_size}"
        return (f"probability-flow ODE NLL (dopri5, rtol = atol = {self.rtol:g}, {trace}, {solve}) with uniform "
                f"dequantisation, {self.n_dequant} draw(s) per image: an upper bound on the discrete NLL, not the ELBO")

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.mean, "stderr": None if not math.isfinite(self.stderr) else self.stderr,
                "kind": KIND, "n": self.n, "n_dequant": self.n_dequant, "nfe": self.nfe, "t_min": 1.0,
                "rtol": self.rtol, "batch_size": self.batch_size, "exact_trace": self.exact_trace, "seconds": self.seconds, "step": self.step, "note": self.note}

    def to_text(self) -> str:
        se = f"{self.stderr:.4f}" if math.isfinite(self.stderr) else "n/a (n = 1)"
        return (f"NLL (ODE) {self.mean:.4f} +- {se} bits/dim on {self.n} test images, step {self.step}, "
                f"{self.nfe} network evaluations, {self.seconds:.1f} s\n  {self.note}")


def ode_nll_run(run: Any, *, n: int = 256, n_dequant: int = 1, seed: int = 0,
                exact_trace: bool = False, rtol: float = 1e-5, batch_size: int = 1) -> ODENLLResult:
    """Bits/dim of the first ``n`` test images of ``run`` (:class:`elbolab.runs.Run`, its loaded weights) by
    :func:`elbolab.diffusion.likelihood.bits_per_dim`, all randomness (dequantisation, Hutchinson probes) from
    one generator seeded ``seed`` on the run's device. Unconditional (a conditional network gets its null
    class). ``rtol``: dopri5's relative and absolute tolerance (1e-5 as score_sde; looser is faster and less
    accurate). ``batch_size``: 1 solves every image on its own (its value does not depend on the others); B > 1
    solves chunks of B images jointly (``per_image=False`` of :func:`~elbolab.diffusion.likelihood.bits_per_dim`:
    several times faster on a CPU, per-image values then move with the chunk by up to ~20 x rtol).
    ValueError for a family without a probability-flow ODE."""
    from elbolab.data import load_dataset
    from elbolab.diffusion.likelihood import bits_per_dim

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--nll-n = {n!r} must be an integer >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--nll-batch = {batch_size!r} must be an integer >= 1 (1 = one ODE solve per image)")
    flow = run.family.probability_flow(run.config, run.model)
    if flow is None:
        raise ValueError(f"family {run.config.family!r} has no probability-flow ODE: --nll ode needs a diffusion "
                         f"run (ddpm, vdm)")
    network, diffusion = flow
    data = load_dataset(dataclasses.replace(run.config.data, split="test", limit=n))
    x, _ = data.batch(torch.arange(len(data)))  # (n, C, H, W) in [-1, 1], 8-bit values
    gen = torch.Generator(run.device).manual_seed(seed)
    t0 = time.perf_counter()
    x = x.to(run.device)
    if batch_size == 1:
        res = bits_per_dim(network, x, diffusion, generator=gen, n_dequant=n_dequant,
                           exact_trace=exact_trace, rtol=rtol, atol=rtol)
        per, total_nfe = res.per_image, res.nfe
    else:
        chunks = [bits_per_dim(network, x[i:i + batch_size], diffusion, generator=gen, n_dequant=n_dequant,
                               exact_trace=exact_trace, rtol=rtol, atol=rtol, per_image=False)
                  for i in range(0, x.shape[0], batch_size)]
        per, total_nfe = torch.cat([c.per_image for c in chunks]), sum(c.nfe for c in chunks)
    mean = float(per.mean())
    stderr = float(per.std() / math.sqrt(per.numel())) if per.numel() > 1 else math.nan
    seconds = time.perf_counter() - t0
    logger.info("ODE NLL of %s: %.4f bits/dim on %d images (%d NFE, %.1f s)", run.folder, mean, len(data),
                total_nfe, seconds)
    return ODENLLResult(mean=mean, stderr=stderr, n=len(data), n_dequant=n_dequant, nfe=total_nfe,
                        seconds=seconds, step=int(run.step), exact_trace=exact_trace,
                        per_image=tuple(float(v) for v in per.tolist()), rtol=rtol, batch_size=batch_size)


def read_metrics(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``folder/metrics.json`` as a dict ({} when absent or not a JSON object)."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable: it will be replaced", path)
        return {}
    return raw if isinstance(raw, dict) else {}


def write_nll_metrics(folder: str | os.PathLike[str], entry: dict[str, Any] | None) -> Path:
    """Set (``entry`` None: leave) the ``"nll_ode"`` entry of ``folder/metrics.json``, keeping everything else
    in it (atomic write, under the run folder's :class:`~elbolab.runlock.RunLock`: a read-modify-write that a
    second writer could otherwise undo); returns the path."""
    from elbolab.runlock import RunLock

    path = Path(folder) / METRICS_FILE
    if entry is None:
        return path
    with RunLock(folder):
        metrics = read_metrics(folder)
        metrics[NLL_KEY] = entry
        atomic_write_json(path, metrics)
    return path


__all__ = ["KIND", "NLL_KEY", "ODENLLResult", "ode_nll_run", "read_metrics", "write_nll_metrics"]
