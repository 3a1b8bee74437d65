"""What a run folder holds for the report, read once into a :class:`RunData` (nothing is written).

Files read (all optional except the folder itself; a missing file leaves its section out):

- ``config.toml``: shown verbatim;
- ``metrics.jsonl``: one JSON object per logged step (the Trainer's ``step``, ``epoch``, ``loss``, ``lr``,
  ``grad_norm``, ``img/s``, ``time`` and the objective's terms; adversarial runs add ``loss/<group>``,
  ``lr/<group>``, ``<group>/<term>``);
- ``samples/step_*.png``: the Trainer's sample grids, and ``samples/demo_grid.png`` of ``elbolab demo``;
- ``metrics.json``: ``elbolab eval`` (:func:`elbolab.evaluate.report.write_metrics_json`);
- ``demo.json``: ``elbolab demo`` (:func:`elbolab.runs.run_demo`);
- ``sampler_quality.json``: FID against the number of network evaluations, a JSON list of rows
  ``{"sampler": str, "nfe": int, "fid": float, "precision": float, "recall": float,
  "seconds_per_image": float}`` (``precision``, ``recall``, ``seconds_per_image`` may be null or absent);
  a dict ``{"rows": [...]}`` is accepted too;
- ``elbo_per_t.json``: the per-timestep terms ``{"t": [1, ..., T], "bpd": [L_0, ..., L_{T-1}],
  "n_images": N}`` in bits/dim (index 0, t = 1, is the reconstruction term -log p(x_0|x_1)).

The per-timestep terms can also be computed here (:func:`compute_per_timestep`) from the run's weights with
the exact sum over t of :func:`elbolab.diffusion.elbo.elbo_terms` (Ho et al. 2020, eq. 5: L_{t-1} =
KL(q(x_{t-1}|x_t, x_0) || p_theta(x_{t-1}|x_t))) on a few test images.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
METRICS_LOG = "metrics.jsonl"
METRICS_FILE = "metrics.json"
DEMO_FILE = "demo.json"
SAMPLER_QUALITY_FILE = "sampler_quality.json"
PER_T_FILE = "elbo_per_t.json"
SAMPLES_DIR = "samples"

_STEP_GRID = re.compile(r"^step_(\d+)\.png$")


@dataclass(frozen=True)
class SamplerQualityRow:
    """One row of ``sampler_quality.json``: a sampler at a number of network evaluations ``nfe``."""

    sampler: str
    nfe: int
    fid: float
    precision: float | None = None
    recall: float | None = None
    seconds_per_image: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> SamplerQualityRow:
        missing = [k for k in ("sampler", "nfe", "fid") if k not in d]
        if missing:
            raise ValueError(f"{where}: row {d!r} lacks {', '.join(missing)}; a row is "
                             "{sampler, nfe, fid, precision, recall, seconds_per_image}")
        opt = {k: (None if d.get(k) is None else float(d[k])) for k in ("precision", "recall", "seconds_per_image")}
        return cls(sampler=str(d["sampler"]), nfe=int(d["nfe"]), fid=float(d["fid"]), **opt)


@dataclass(frozen=True)
class PerTimestep:
    """Mean L_{t-1} in bits/dim at t = 1..T over ``n_images`` test images; ``bpd: (T,)``, ``t: (T,)``."""

    t: list[int]
    bpd: list[float]
    n_images: int
    source: str  # the file it came from, or "computed"


@dataclass
class RunData:
    """A run folder's report inputs. ``records``: the parsed ``metrics.jsonl`` lines; ``grids``: (step, path)
    of the Trainer's sample grids, by step; ``metrics`` / ``demo``: the parsed JSON files or None."""

    folder: Path
    name: str
    config_text: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    grids: list[tuple[int, Path]] = field(default_factory=list)
    demo_grid: Path | None = None
    metrics: dict[str, Any] | None = None
    demo: dict[str, Any] | None = None
    sampler_quality: list[SamplerQualityRow] = field(default_factory=list)
    per_timestep: PerTimestep | None = None
    notes: list[str] = field(default_factory=list)

    def json_source(self, name: str) -> Any:
        """The parsed content of a source file named in a data-key (``metrics.json``, ``demo.json``, ...)."""
        return {METRICS_FILE: self.metrics, DEMO_FILE: self.demo, METRICS_LOG: self.records,
                SAMPLER_QUALITY_FILE: [vars(r) for r in self.sampler_quality]}.get(name)


def lookup(data: Any, path: str) -> Any:
    """``data`` followed along a dotted ``path`` (``"bpd.terms.prior"``, ``"-1.loss"``: list indices are
    integers, negative from the end). Raises KeyError naming the path when it is not there."""
    cur = data
    for part in path.split("."):
        if isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                raise KeyError(path) from None
        elif isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise KeyError(path)
    return cur


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path.name} could not be read ({e})")
        logger.warning("report: %s could not be read: %s", path, e)
        return None


def _read_records(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a killed run: skipped, the rest is kept
            notes.append(f"{METRICS_LOG} line {i} is not JSON and was skipped")
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    return records


def _sampler_rows(raw: Any, where: str) -> list[SamplerQualityRow]:
    rows = raw.get("rows") if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        raise ValueError(f"{where}: expected a list of rows (or {{'rows': [...]}}), got {type(raw).__name__}")
    return [SamplerQualityRow.from_dict(r, where) for r in rows]  # file order: tags index the file's list


def _per_t_from_file(raw: Any, where: str) -> PerTimestep:
    if not isinstance(raw, dict) or "bpd" not in raw:
        raise ValueError(f"{where}: expected {{'t': [...], 'bpd': [...], 'n_images': N}}")
    bpd = [float(v) for v in raw["bpd"]]
    t = [int(v) for v in raw.get("t", range(1, len(bpd) + 1))]
    if len(t) != len(bpd):
        raise ValueError(f"{where}: 't' has {len(t)} entries but 'bpd' {len(bpd)}")
    return PerTimestep(t=t, bpd=bpd, n_images=int(raw.get("n_images", 0)), source=PER_T_FILE)


def load_run_data(folder: str | Path, name: str | None = None) -> RunData:
    """Read a run folder (see the module docstring). Raises FileNotFoundError if ``folder`` is not a
    directory, ValueError if a file has the wrong shape; an unreadable JSON file becomes a note."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    data = RunData(folder=folder, name=name or folder.resolve().name)
    if (folder / CONFIG_FILE).is_file():
        data.config_text = (folder / CONFIG_FILE).read_text(encoding="utf-8")
    else:
        data.notes.append(f"no {CONFIG_FILE}")
    if (folder / METRICS_LOG).is_file():
        data.records = _read_records(folder / METRICS_LOG, data.notes)
    samples = folder / SAMPLES_DIR
    if samples.is_dir():
        for p in samples.iterdir():
            m = _STEP_GRID.match(p.name)
            if m:
                data.grids.append((int(m.group(1)), p))
        data.grids.sort()
        if (samples / "demo_grid.png").is_file():
            data.demo_grid = samples / "demo_grid.png"
    for fname, attr in ((METRICS_FILE, "metrics"), (DEMO_FILE, "demo")):
        if (folder / fname).is_file():
            raw = _read_json(folder / fname, data.notes)
            setattr(data, attr, raw if isinstance(raw, dict) else None)
    if (folder / SAMPLER_QUALITY_FILE).is_file():
        raw = _read_json(folder / SAMPLER_QUALITY_FILE, data.notes)
        if raw is not None:
            data.sampler_quality = _sampler_rows(raw, str(folder / SAMPLER_QUALITY_FILE))
    if (folder / PER_T_FILE).is_file():
        raw = _read_json(folder / PER_T_FILE, data.notes)
        if raw is not None:
            data.per_timestep = _per_t_from_file(raw, str(folder / PER_T_FILE))
    return data


def compute_per_timestep(folder: str | Path, n_images: int, *, seed: int = 0) -> PerTimestep | None:
    """Mean L_{t-1} (bits/dim) at every t = 1..T on the first ``n_images`` test images, from the run's EMA
    weights with the exact sum over t of :func:`elbolab.diffusion.elbo.elbo_terms` (T network evaluations
    per image). None for a run without a discrete diffusion (VAE, GAN, score runs)."""
    import dataclasses

    import torch

    from elbolab.data import load_dataset
    from elbolab.diffusion import build_diffusion, elbo_terms
    from elbolab.runs import load_run

    if n_images < 1:
        raise ValueError(f"n_images = {n_images!r} must be >= 1")
    run = load_run(folder)
    family = str(getattr(run.config.family, "value", run.config.family))
    model_cfg = getattr(run.config, "model", None) or run.config  # the family's section (older layout: top level)
    diffusion_cfg = getattr(model_cfg, "diffusion", None)
    if diffusion_cfg is None or family != "ddpm":
        logger.info("report: %s is a %s run without a discrete diffusion: no per-timestep terms", folder, family)
        return None
    held_out = load_dataset(dataclasses.replace(run.config.data, split="test", limit=n_images))
    x0, y = held_out.batch(torch.arange(len(held_out)))
    num_classes = getattr(getattr(model_cfg, "unet", None), "num_classes", 0)
    terms = elbo_terms(build_diffusion(diffusion_cfg), run.model, x0, y=y if num_classes else None,
                       generator=torch.Generator().manual_seed(seed), t_samples=None)
    if terms.per_timestep is None:  # exact mode always fills it
        return None
    bpd = [float(v) for v in terms.per_timestep.tolist()]
    if not all(math.isfinite(v) for v in bpd):
        logger.warning("report: non-finite per-timestep terms in %s", folder)
    return PerTimestep(t=list(range(1, len(bpd) + 1)), bpd=bpd, n_images=len(held_out), source="computed")
