"""Evaluation entry points: samples -> metrics (:func:`evaluate_samples`), a likelihood bound -> bits/dim
(:func:`evaluate_bpd`), and a run folder -> ``metrics.json`` (:func:`evaluate_folder`, behind ``elbolab eval``).

Sample metrics use the dataset's shipped feature network (:mod:`elbolab.evaluate.features`) and cached
features of real data (:mod:`elbolab.evaluate.reference`); the reference defaults to the training split, as
in Ho et al. 2020 (FID against the training set).
"""

from __future__ import annotations

import dataclasses

import enum
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm import tqdm

from elbolab.config import DataConfig, RunConfig, load_toml
from elbolab.run_format import CONFIG_FILE
from elbolab.data import load_dataset
from elbolab.data.transforms import to_float
from elbolab.evaluate.bpd import BitsPerDim, BPDAccumulator, BPDMethod
from elbolab.evaluate.features import FeatureNetwork, load_feature_network, logits_to_probs
from elbolab.evaluate.fid import FIDResult, frechet_distance
from elbolab.evaluate.inception_score import ConfidenceResult, ISResult, confident_fraction, inception_score
from elbolab.evaluate.kid import KIDResult, kid_from_features
from elbolab.evaluate.precision_recall import PRResult, precision_recall
from elbolab.evaluate.reference import Reference, extract_features, load_reference
from elbolab.evaluate.samples import SampleFn, SampleSet, as_uint8_images, generate_samples, load_samples_npz, save_samples_npz

logger = logging.getLogger(__name__)


class Metric(str, enum.Enum):
    """Metrics of ``elbolab eval --metrics``."""

    FID = "fid"
    KID = "kid"
    IS = "is"
    PR = "pr"  # improved precision and recall
    BPD = "bpd"  # test bits/dim of the model's likelihood bound (needs the model, not samples)
    CONF = "conf"  # fraction of samples the classifier labels with confidence >= 0.9


SAMPLE_METRICS = frozenset({Metric.FID, Metric.KID, Metric.IS, Metric.PR, Metric.CONF})  # need samples
REFERENCE_METRICS = frozenset({Metric.FID, Metric.KID, Metric.PR})  # also need features of real data


def parse_metrics(spec: str | Iterable[str | Metric]) -> set[Metric]:
    """``"fid,kid,is"`` or an iterable of names/members -> a set of :class:`Metric`; ``"all"`` = every metric."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if items == ["all"]:
        return set(Metric)
    out = set()
    for item in items:
        if item == "":
            continue
        try:
            out.add(Metric(item))
        except ValueError:
            raise ValueError(f"unknown metric {item!r}; choices: {', '.join(m.value for m in Metric)} "
                             "(comma-separated), or 'all'") from None
    if not out:
        raise ValueError(f"no metric given in {spec!r}; choices: {', '.join(m.value for m in Metric)}")
    return out


@dataclass
class EvalResult:
    """Metrics of one set of samples (and optionally of the model's likelihood bound).

    A field is None exactly when its metric was not requested. ``reference`` names the real data the samples
    were compared with ("" when no metric needed it); ``feature_sha256`` the feature network ("" if unused).
    """

    dataset: str
    reference: str
    n_samples: int
    n_reference: int
    feature_sha256: str
    fid: FIDResult | None = None
    kid: KIDResult | None = None
    inception: ISResult | None = None
    pr: PRResult | None = None
    confidence: ConfidenceResult | None = None
    bpd: BitsPerDim | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalSettings:
    """Knobs of the metrics (defaults follow the papers: KID subsets of 1000, IS over 10 splits, PR k = 3)."""

    kid_subset_size: int = 1000
    kid_subsets: int = 100
    is_splits: int = 10
    pr_k: int = 3
    pr_max: int = 10000  # precision/recall on at most this many vectors per set (O(N^2) distances)
    confidence_threshold: float = 0.9
    batch_size: int = 500
    seed: int = 0


def _subsample(x: np.ndarray, m: int, gen: torch.Generator) -> np.ndarray:
    if x.shape[0] <= m:
        return x
    return x[torch.randperm(x.shape[0], generator=gen)[:m].numpy()]


def evaluate_samples(samples: torch.Tensor | np.ndarray | SampleSet, dataset: str,
                     metrics: Iterable[Metric | str] | str, *, reference: Reference | None = None,
                     reference_split: str = "train", data_dir: str = "", reference_limit: int = 0,
                     network: FeatureNetwork | None = None, settings: EvalSettings | None = None,
                     bpd: BitsPerDim | None = None, progress: bool = True) -> EvalResult:
    """Compare samples (N, C, H, W) (float in [-1, 1] or uint8) with real data of ``dataset``.

    ``dataset`` picks the feature network (``mnist``, ``mnist-embedded``, ``fashion-mnist``) and, unless
    ``reference`` is given, the real data: ``reference_split`` of ``dataset`` read from ``data_dir`` (first
    ``reference_limit`` images, 0 = all), features cached. ``Metric.BPD`` needs ``bpd`` (see :func:`evaluate_bpd`).
    """
    wanted = parse_metrics(metrics)
    cfg = settings or EvalSettings()
    if Metric.BPD in wanted and bpd is None:
        raise ValueError("metric 'bpd' needs the model's likelihood bound: compute it with evaluate_bpd(...) "
                         "and pass bpd=, or use evaluate_folder")
    meta: dict[str, Any] = {}
    sample_seconds = 0.0
    if isinstance(samples, SampleSet):
        meta, sample_seconds = dict(samples.meta), samples.seconds
        samples = samples.images
    images = as_uint8_images(samples)
    seconds: dict[str, float] = {}
    if sample_seconds:
        seconds["sampling"] = sample_seconds
    result_kwargs: dict[str, Any] = {}
    ref_name, n_ref, sha = "", 0, ""
    if wanted & SAMPLE_METRICS:
        net = network if network is not None else load_feature_network(dataset)
        sha = net.sha256
        ref = None
        if wanted & REFERENCE_METRICS:
            t0 = time.perf_counter()
            ref = reference if reference is not None else load_reference(
                dataset, reference_split, data_dir=data_dir, limit=reference_limit, network=net, progress=progress)
            if ref.sha256 != net.sha256:
                raise ValueError(f"reference features come from feature network {ref.sha256[:12]} but the samples "
                                 f"are scored with {net.sha256[:12]}; recompute the reference")
            seconds["reference_features"] = time.perf_counter() - t0
            ref_name, n_ref = f"{ref.dataset}/{ref.split}", ref.n
        t0 = time.perf_counter()
        gen_feats = extract_features(net, images, batch_size=cfg.batch_size, progress=progress,
                                     desc="features samples")
        seconds["sample_features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed)
        if ref is not None and Metric.FID in wanted:
            result_kwargs["fid"] = frechet_distance(gen_feats.stats, ref.data.stats)
        if ref is not None and Metric.KID in wanted:
            result_kwargs["kid"] = kid_from_features(gen_feats.features, ref.data.features, cfg.kid_subset_size,
                                                     cfg.kid_subsets, generator=gen)
        probs = logits_to_probs(torch.from_numpy(gen_feats.logits))
        if Metric.IS in wanted:
            result_kwargs["inception"] = inception_score(probs, splits=min(cfg.is_splits, images.shape[0]))
        if Metric.CONF in wanted:
            result_kwargs["confidence"] = confident_fraction(probs, cfg.confidence_threshold)
        if ref is not None and Metric.PR in wanted:
            real = _subsample(ref.data.features, cfg.pr_max, gen)
            fake = _subsample(gen_feats.features, cfg.pr_max, gen)
            result_kwargs["pr"] = precision_recall(real, fake, k=cfg.pr_k, batch_size=cfg.batch_size)
        seconds["metrics"] = time.perf_counter() - t0
    if Metric.BPD in wanted:
        result_kwargs["bpd"] = bpd
    return EvalResult(dataset=dataset, reference=ref_name, n_samples=int(images.shape[0]), n_reference=n_ref,
                      feature_sha256=sha, seconds=seconds, meta=meta, **result_kwargs)


def classifier_confidence(samples: torch.Tensor | np.ndarray, dataset: str = "mnist",
                          threshold: float = 0.9) -> ConfidenceResult:
    """Fraction of samples (N, C, H, W) that the dataset's shipped classifier labels with probability >=
    ``threshold`` (the ``elbolab demo`` figure: 256 samples, 0.9; real MNIST test images score about 0.99)."""
    net = load_feature_network(dataset)
    out = extract_features(net, as_uint8_images(samples))
    return confident_fraction(logits_to_probs(torch.from_numpy(out.logits)), threshold)


#: ``bound_fn(x0, generator) -> {term name: (B,) bits/dim}`` for float images x0: (B, C, H, W) in [-1, 1]
BoundFn = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]


def evaluate_bpd(bound_fn: BoundFn, dataset: str, method: BPDMethod | str, *, split: str = "test",
                 data_dir: str = "", n: int = 0, batch_size: int = 100, seed: int = 0,
                 images: torch.Tensor | None = None, progress: bool = True,
                 extra: dict[str, float] | None = None, device: str | torch.device = "cpu",
                 data_config: DataConfig | None = None) -> BitsPerDim:
    """Bits/dim of a likelihood bound on real images: the first ``n`` (0 = all) of ``dataset``/``split``, or
    ``images`` (N, C, H, W) uint8 if given. ``bound_fn`` returns per-image terms in bits/dim. ``data_config``:
    a run's data section (its image size, channels and hold-out are kept; name, split and limit are set)."""
    if images is None:
        base = data_config if data_config is not None else DataConfig()
        data = load_dataset(dataclasses.replace(base, name=dataset, data_dir=data_dir, split=split, limit=n))
        images = data.images
    elif n:
        images = images[:n]
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"bits/dim needs 8-bit images (N, C, H, W), got dtype {images.dtype}, "
                         f"shape {tuple(images.shape)}")
    gen = torch.Generator(device).manual_seed(seed)
    acc = BPDAccumulator()
    for i in tqdm(range(0, images.shape[0], batch_size), desc="bits/dim", disable=not progress):
        with torch.no_grad():
            acc.update(bound_fn(to_float(images[i : i + batch_size]).to(device), gen))
    return acc.result(method, extra)


def run_dataset(run_dir: str | os.PathLike[str]) -> tuple[RunConfig, str, str]:
    """(config, dataset name, data_dir) of a run folder, read from its ``config.toml``."""
    cfg = load_toml(Path(run_dir) / CONFIG_FILE, RunConfig)
    return cfg, cfg.data.name, cfg.data.data_dir


def evaluate_folder(run_dir: str | os.PathLike[str], metrics: Iterable[Metric | str] | str, *, n: int = 10000,
                 sample_fn: SampleFn | None = None, samples_path: str | os.PathLike[str] | None = None,
                 bound_fn: BoundFn | None = None, bpd_method: BPDMethod | str = BPDMethod.DISCRETIZED_GAUSSIAN,
                 bpd_n: int = 0, dataset: str | None = None, data_dir: str | None = None,
                 reference_split: str = "train", reference_limit: int = 0, sample_batch_size: int = 256, seed: int = 0,
                 sample_meta: dict[str, Any] | None = None, settings: EvalSettings | None = None,
                 write: bool = True, progress: bool = True, device: str | torch.device = "cpu") -> EvalResult:
    """Evaluate a trained run folder and write ``<run>/metrics.json`` (``elbolab eval RUN``).

    Samples come from ``samples_path`` (an .npz from :func:`save_samples_npz`) if given, else are drawn with
    ``sample_fn`` (``n`` of them, progress bar) and saved to ``<run>/samples/eval_<n>.npz`` for reuse.
    ``Metric.BPD`` calls ``bound_fn`` on the test split (first ``bpd_n`` images, 0 = all). The dataset
    and data folder default to the run's ``config.toml``; the real reference is ``reference_split`` (first
    ``reference_limit`` images, 0 = all).
    """
    from elbolab.evaluate.report import write_metrics_json

    run_dir = Path(run_dir)
    wanted = parse_metrics(metrics)
    run_cfg, cfg_dataset, cfg_data_dir = run_dataset(run_dir)
    dataset = dataset or cfg_dataset
    data_dir = cfg_data_dir if data_dir is None else data_dir
    sample_set: SampleSet | None = None
    if wanted & SAMPLE_METRICS:
        if samples_path is not None:
            sample_set = load_samples_npz(samples_path)
            if n and sample_set.images.shape[0] > n:
                sample_set.images = sample_set.images[:n]
            logger.info("reusing %d samples from %s", sample_set.images.shape[0], samples_path)
        elif sample_fn is not None:
            sample_set = generate_samples(sample_fn, n, sample_batch_size, torch.Generator(device).manual_seed(seed),
                                          progress=progress, meta={**(sample_meta or {}), "seed": seed, "n": n})
            save_samples_npz(run_dir / "samples" / f"eval_{n}.npz", sample_set.images, meta=sample_set.meta)
        else:
            raise ValueError("sample metrics need samples: pass samples_path (an .npz) or sample_fn")
    bpd = None
    if Metric.BPD in wanted:
        if bound_fn is None:
            raise ValueError("metric 'bpd' needs bound_fn (the model's per-image likelihood bound)")
        bpd = evaluate_bpd(bound_fn, dataset, bpd_method, data_dir=data_dir, n=bpd_n, seed=seed, progress=progress,
                           device=device, data_config=run_cfg.data)
    if sample_set is not None:
        result = evaluate_samples(sample_set, dataset, wanted, reference_split=reference_split, data_dir=data_dir,
                                  reference_limit=reference_limit, settings=settings, bpd=bpd, progress=progress)
    else:
        result = EvalResult(dataset=dataset, reference="", n_samples=0, n_reference=0, feature_sha256="", bpd=bpd)
    if write:
        write_metrics_json(run_dir / "metrics.json", result)
    return result
