"""The classifier-free guidance figure of the lecture notes (001): one row of samples per guidance weight w
(the notes show w = -1, -0.2, 0, 1, 2), and per w the evaluation classifier's accuracy on the samples (does
the sample show the class it was conditioned on?), FID and improved precision/recall against the training
data (quality and diversity: guidance trades recall for precision and accuracy, Ho & Salimans 2022, Fig. 1).

Every w uses the same seed, hence the same initial noise and labels 0, 1, ..., K-1, 0, ...: the rows differ only
by w. ``elbolab sample RUN --guidance-sweep=-1,-0.2,0,1,2`` calls :func:`guidance_sweep`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from elbolab.io import atomic_write_bytes, atomic_write_text
from elbolab.families import SampleRequest

logger = logging.getLogger(__name__)

__all__ = ["GuidanceRow", "GuidanceSweep", "guidance_sweep", "parse_guidance_weights"]

#: the guidance weights of the lecture notes' figure
NOTES_WEIGHTS = (-1.0, -0.2, 0.0, 1.0, 2.0)


@dataclass(frozen=True)
class GuidanceRow:
    """Metrics of the ``n`` samples drawn with guidance weight ``w``: ``accuracy`` = fraction whose
    classifier label (argmax of the dataset's feature network) equals the conditioning label; ``fid``;
    ``precision`` / ``recall`` (improved precision and recall, k = 3)."""

    w: float
    accuracy: float
    fid: float
    precision: float
    recall: float


@dataclass(frozen=True)
class GuidanceSweep:
    """The sweep: ``rows`` (one per w, in the order given), the ``png`` figure and ``json`` table written,
    ``n`` samples per w, the ``sampler`` / ``steps`` used, network evaluations per sample ``nfe`` (at the last
    w; guided rows cost two per step), the ``run`` folder and its training ``step``, total ``seconds``."""

    rows: list[GuidanceRow]
    png: Path
    json: Path
    n: int
    sampler: str
    steps: int
    nfe: int
    run: str
    step: int
    seconds: float

    def to_text(self) -> str:
        lines = [
            f"classifier-free guidance sweep of {self.run} (step {self.step}): {self.n} samples per w, "
            f"{self.sampler} {self.steps} steps",
            "| w | classifier accuracy | FID | precision | recall |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [f"| {r.w:g} | {r.accuracy:.3f} | {r.fid:.2f} | {r.precision:.3f} | {r.recall:.3f} |"
                  for r in self.rows]
        lines.append(f"figure: {self.png}; table: {self.json}")
        return "\n".join(lines)


def parse_guidance_weights(text: str | Sequence[float]) -> list[float]:
    """``"-1,-0.2,0,1,2"`` (or a sequence of numbers) -> ``[-1.0, -0.2, 0.0, 1.0, 2.0]``; ValueError naming the
    bad entry otherwise."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            w = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"guidance weight {item!r} is not a number; expected a comma-separated list such as "
                             "-1,-0.2,0,1,2") from None
        if not math.isfinite(w):
            raise ValueError(f"guidance weight {item!r} must be finite")
        out.append(w)
    if not out:
        raise ValueError("no guidance weights given; expected e.g. -1,-0.2,0,1,2")
    return out


def _figure(rows: list[torch.Tensor], ws: list[float], path: Path) -> None:
    """One labelled row per w: ``rows[i]: (columns, C, H, W)`` in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elbolab.viz.grid import make_grid

    columns = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.75 * columns + 0.9, 0.8 * len(rows)), squeeze=False)
    for ax, row, w in zip(axes[:, 0], rows, ws):
        img = make_grid(row, nrow=columns)
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"w = {w:g}", rotation=0, ha="right", va="center")
        for side in ax.spines.values():
            side.set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def guidance_sweep(run: object, ws: Sequence[float] | str = NOTES_WEIGHTS, out: str | os.PathLike[str] =
                   "guidance_sweep.png", *, n: int = 500, seed: int = 0, sampler: str | None = None,
                   options: dict | None = None, batch_size: int = 250, columns: int | None = None,
                   data_dir: str | None = None, reference_limit: int = 0, progress: bool = True) -> GuidanceSweep:
    """Sample a class-conditional ``run`` (an :class:`elbolab.runs.Run`) with classifier-free guidance at every
    weight in ``ws`` and measure each set: classifier accuracy, FID and precision/recall against the training
    split of the run's dataset. Writes the figure at ``out`` (.png, the first ``columns`` samples of each w,
    default one per class) and the table beside it (.json).

    ``n`` samples per w (labels cycle through the classes: a grid column per class and balanced accuracy; the
    class-stratified set flatters FID against an i.i.d. draw, so compare its FIDs across w, not with unconditional
    models - ``SampleRequest(labels="prior")`` draws i.i.d. labels); ``sampler`` / ``options`` (e.g. ``{"steps": 50}``)
    default to the run's config;
    ``reference_limit``: compare with the first that many training images (0 = all; features cached).
    """
    from elbolab.evaluate import evaluate_samples, extract_features, load_feature_network
    from elbolab.evaluate.samples import as_uint8_images
    from elbolab.runs import draw_samples

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out = {out}: expected a .png path (the .json table is written beside it)")
    weights = parse_guidance_weights(ws)
    cfg = run.config
    K = run.family.num_classes(cfg)
    if not K:
        raise ValueError(f"{run.folder} is unconditional (num_classes = 0): a guidance sweep needs a "
                         "class-conditional run trained with label dropout, e.g. the preset ddpm-cfg-mnist")
    if n < max(K, 2):
        raise ValueError(f"n = {n}: need at least {max(K, 2)} samples per w (one per class)")
    columns = K if columns is None else columns
    if not 1 <= columns <= n:
        raise ValueError(f"columns = {columns} must be in 1..n = {n}")
    dataset = cfg.data.name
    data_dir = cfg.data.data_dir if data_dir is None else data_dir
    net = load_feature_network(dataset)
    t0 = time.perf_counter()
    rows, figure_rows, nfe = [], [], 0
    for w in weights:
        logger.info("guidance sweep: w = %g (%d samples)", w, n)
        request = SampleRequest(n=n, sampler=sampler, options=dict(options or {}), seed=seed, guidance=w,
                                batch_size=batch_size)
        batch = draw_samples(run, request)
        assert batch.labels is not None
        images = as_uint8_images(batch.images)
        logits = torch.from_numpy(extract_features(net, images).logits)
        accuracy = float((logits.argmax(1) == batch.labels.cpu()).double().mean())
        result = evaluate_samples(images, dataset, "fid,pr", data_dir=data_dir, reference_limit=reference_limit,
                                  network=net, progress=progress)
        assert result.fid is not None and result.pr is not None
        rows.append(GuidanceRow(w=w, accuracy=accuracy, fid=float(result.fid.fid),
                                precision=float(result.pr.precision), recall=float(result.pr.recall)))
        logger.info("w = %g: accuracy %.3f, FID %.2f, precision %.3f, recall %.3f", w, rows[-1].accuracy,
                    rows[-1].fid, rows[-1].precision, rows[-1].recall)
        figure_rows.append(batch.images[:columns])
        nfe = batch.nfe
    _figure(figure_rows, weights, out)
    name, opts = run.family.sampler_options(cfg, SampleRequest(n=n, sampler=sampler, options=dict(options or {})))
    sweep = GuidanceSweep(rows=rows, png=out, json=out.with_suffix(".json"), n=n, sampler=name,
                          steps=getattr(opts, "steps", 0), nfe=nfe, run=str(run.folder), step=run.step,
                          seconds=time.perf_counter() - t0)
    table = {k: v for k, v in asdict(sweep).items() if k not in ("png", "json")}
    table["png"] = str(out)
    atomic_write_text(sweep.json, json.dumps(table, indent=2) + "\n")
    return sweep
