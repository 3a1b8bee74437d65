"""Typed configuration: one dataclass per component, named presets, TOML load/save, ``--set`` overrides.

Every component has its own dataclass (``DataConfig``, ``UNetConfig``, ``DiffusionConfig``, ``TrainConfig``,
``SampleConfig``); a run is a ``RunConfig`` that composes them. Closed option sets are ``str`` Enums, so
that TOML stays readable (``prediction = "eps"``) while the code compares against members. Every value that
enters from outside (TOML, ``--set key=value``, keyword arguments) goes through :func:`coerce`, which names
the field, the bad value and what is allowed.

Presets are plain functions in :data:`PRESETS` (no ``exec``, no class-name strings); ``configs/*.toml`` are
the same presets written out for users to copy and edit.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and lists what is allowed."""


# --------------------------------------------------------------------------------------------------
# Closed option sets
# --------------------------------------------------------------------------------------------------
class Family(str, enum.Enum):
    """Model family of a run."""

    DDPM = "ddpm"
    VAE = "vae"  # Kingma & Welling 2014, elbolab.vae.VAE
    HVAE = "hvae"  # Markovian hierarchical VAE, elbolab.vae.HVAE
    AE = "ae"  # plain (non-variational) autoencoder baseline, elbolab.vae.Autoencoder
    GAN = "gan"  # Goodfellow et al. 2014: no likelihood, a minimax game (elbolab.gan)
    NCSN = "ncsn"  # noise-conditional score network (Song & Ermon 2019), elbolab.score


class VAEArchitecture(str, enum.Enum):
    FC = "fc"  # the notes' fully-connected 784 -> ... -> 20 model
    CONV = "conv"  # stride-2 conv encoder / transposed-conv decoder (28x28x1, 32x32x3)


class DecoderLikelihood(str, enum.Enum):
    """p_theta(x|z) of a VAE."""

    BERNOULLI = "bernoulli"  # dynamically binarised data
    GAUSSIAN_FIXED = "gaussian_fixed"  # N(mu_theta(z), sigma^2 I), sigma = VAEConfig.gaussian_std
    GAUSSIAN_LEARNED = "gaussian_learned"  # N(mu_theta(z), diag sigma_theta^2(z))
    DISCRETIZED = "discretized"  # discretised Gaussian on 8-bit data (Ho et al. 2020), bits/dim comparable


class GANArchitecture(str, enum.Enum):
    DCGAN = "dcgan"  # Radford et al. 2016 conv generator / discriminator (28x28x1, 32x32x3)
    MLP = "mlp"  # fully-connected pair (Goodfellow et al. 2014; toy data or flattened images)


class GANLoss(str, enum.Enum):
    """The game a GAN plays (elbolab.gan.losses)."""

    MINIMAX = "minimax"  # the notes' min_G max_D E log D(x) + E log(1 - D(G(z))) (saturates)
    NON_SATURATING = "non_saturating"  # same D; G maximises E log D(G(z)) (Goodfellow et al. 2014, Sec. 3)
    WASSERSTEIN_GP = "wasserstein_gp"  # critic E f(G(z)) - E f(x) + gradient penalty (Gulrajani et al. 2017)


class GANNorm(str, enum.Enum):
    """Normalisation inside the DCGAN generator (the discriminator has none)."""

    BATCH = "batch"  # BatchNorm2d (Radford et al. 2016); sampling uses its running statistics
    PIXEL = "pixel"  # pixelwise feature normalisation (Karras et al. 2018, Sec. 4.2): per example, no state
    NONE = "none"


class ScheduleKind(str, enum.Enum):
    LINEAR = "linear"  # Ho et al. 2020: beta from 1e-4 to 0.02
    COSINE = "cosine"  # Nichol & Dhariwal 2021, s = 0.008


class PredictionKind(str, enum.Enum):
    """What the network outputs; mirrors ``elbolab.diffusion.Prediction``."""

    EPS = "eps"
    X0 = "x0"
    V = "v"
    SCORE = "score"


class VarianceKind(str, enum.Enum):
    """Reverse-process variance sigma_t^2 of Ho et al. 2020, Sec. 3.2."""

    BETA = "beta"  # sigma_t^2 = beta_t ("fixed large")
    BETA_TILDE = "beta_tilde"  # sigma_t^2 = beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t ("fixed small")


class LossKind(str, enum.Enum):
    SIMPLE = "simple"  # L_simple of Algorithm 1 (unweighted MSE on the predicted quantity)
    ELBO = "elbo"  # the true ELBO weighting of the denoising-matching KL
    MIN_SNR = "min_snr"  # L_simple weighted to min(SNR_t, gamma) on x0 (Min-SNR-gamma, Hang et al. 2023)


class TimeEmbedding(str, enum.Enum):
    SINUSOIDAL = "sinusoidal"
    FOURIER = "fourier"  # random Fourier features


class TimeInjection(str, enum.Enum):
    ADD = "add"  # h + W e(t)
    SCALE_SHIFT = "scale_shift"  # adaptive group norm: (1 + s) GN(h) + b


class Upsampling(str, enum.Enum):
    """How the U-Net decoder doubles the resolution."""

    CONV = "conv"  # nearest-neighbour x2 then a 3x3 conv (Ho et al. 2020)
    TRANSPOSED = "transposed"  # 2x2 stride-2 transposed conv (9x fewer FLOPs than CONV)
    NEAREST = "nearest"  # nearest-neighbour x2 only (improved-diffusion conv_resample=False)


class Precision(str, enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # bf16 autocast (the one optimisation that pays on this CPU, see perf-notes)


class LRSchedule(str, enum.Enum):
    """Decay of the learning rate over the run's budget (after the linear warm-up)."""

    CONSTANT = "constant"
    COSINE = "cosine"  # lr_min + (lr - lr_min) (1 + cos(pi p)) / 2 at budget fraction p (Loshchilov & Hutter 2017)
    LINEAR = "linear"  # lr_min + (lr - lr_min) (1 - p)


class SamplerKind(str, enum.Enum):
    ANCESTRAL = "ancestral"
    DDIM = "ddim"
    LANGEVIN = "langevin"  # DDPM eps-model as a score model, Langevin corrector only (elbolab.score.samplers)
    PC = "pc"  # predictor-corrector: ancestral predictor + Langevin corrector (Song et al. 2021)
    ANNEALED_LANGEVIN = "annealed_langevin"  # NCSN runs: Algorithm 1 of Song & Ermon 2019


class Spacing(str, enum.Enum):
    """How a sampler with fewer steps than T picks its timesteps."""

    LEADING = "leading"  # DDIM paper: t = 1, 1 + k, 1 + 2k, ...
    LINSPACE = "linspace"  # evenly spaced from 1 to T inclusive
    TRAILING = "trailing"  # starts at t = T: T, T - k, ...


# --------------------------------------------------------------------------------------------------
# Component configs
# --------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Which dataset and how to read it.

    ``name``: ``mnist-embedded`` (default, ships in the package), ``mnist``, ``fashion-mnist``, ``cifar10``,
    ``imagefolder:PATH``, or a toy distribution (see ``elbolab.data``).
    """

    name: str = "mnist-embedded"
    data_dir: str = ""  # "" means $ELBOLAB_DATA or the cache ~/.cache/elbolab
    split: str = "train"
    image_size: int = 0  # 0 keeps the dataset's own size (imagefolder: required or 32)
    channels: int = 0  # 0 keeps the dataset's own channels; 1 = grey, 3 = RGB
    dequantize: bool = False  # uniform dequantisation of 8-bit data
    limit: int = 0  # use only the first N examples (0 = all)
    holdout: int = 1000  # examples held out from a single-split dataset for evaluation
    on_error: str = "fail"  # imagefolder: "fail" or "skip" unreadable files


@dataclass
class UNetConfig:
    """U-Net of the lecture notes (residual blocks, self-attention, time embedding)."""

    in_channels: int = 1
    out_channels: int = 0  # 0 means same as in_channels
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (7,)
    head_dim: int = 32  # fewer, wider heads: SDPA backward with many small heads is slow on CPU
    dropout: float = 0.0
    groups: int = 8  # GroupNorm groups
    time_embedding: TimeEmbedding = TimeEmbedding.SINUSOIDAL
    time_injection: TimeInjection = TimeInjection.SCALE_SHIFT
    num_classes: int = 0  # 0 = unconditional; otherwise a label embedding with a learned null class
    mid_attention: bool = True  # self-attention in the middle block (lowest resolution)
    attention_fp32: bool = True  # run SDPA in fp32 inside bf16 autocast (faster backward on CPU)
    upsampling: Upsampling = Upsampling.CONV


@dataclass
class DiffusionConfig:
    """Noise schedule, parameterisation and training loss of a Gaussian diffusion (DDPM)."""

    schedule: ScheduleKind = ScheduleKind.LINEAR
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008
    prediction: PredictionKind = PredictionKind.EPS
    variance: VarianceKind = VarianceKind.BETA_TILDE
    loss: LossKind = LossKind.SIMPLE
    importance_sampling: bool = False  # sample t by the running loss (improved DDPM)
    min_snr_gamma: float = 5.0  # gamma of LossKind.MIN_SNR
    p_uncond: float = 0.1  # conditional U-Net: label dropout into the null class (Ho & Salimans 2022)


@dataclass
class ScoreConfig:
    """Noise-conditional score network (NCSN) and annealed Langevin dynamics (``elbolab.score``).

    Geometric noise levels sigma_1 > ... > sigma_L; a 0 means "chosen by the rules of Song & Ermon 2020,
    'Improved Techniques for Training Score-Based Generative Models'" when training starts, and the resolved
    values are written to the run's config.toml: ``sigma_1`` = the largest pairwise distance of the training
    data (Technique 1), ``num_levels`` from the ratio rule of Technique 2, ``eps`` from Technique 4.
    """

    num_levels: int = 0  # L; 0 = Technique 2
    sigma_1: float = 0.0  # largest noise level; 0 = max pairwise distance of the data (Technique 1)
    sigma_L: float = 0.01  # smallest noise level
    eps: float = 0.0  # Langevin step alpha_i = eps sigma_i^2 / sigma_L^2; 0 = Technique 4
    steps_per_level: int = 5  # T of the notes' Algorithm 1
    final_denoise: bool = True  # one Tweedie step x + sigma_L^2 s(x, sigma_L) after the last level


@dataclass
class TrainConfig:
    """Optimiser, schedule of the run, stopping rule, logging and checkpoints."""

    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    warmup_steps: int = 200
    lr_schedule: LRSchedule = LRSchedule.CONSTANT  # decay over the budget (steps, epochs or minutes)
    lr_min_ratio: float = 0.0  # lr_min / lr at the end of a decaying schedule
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n))
    precision: Precision = Precision.BF16
    steps: int = 0  # stop after this many optimiser steps (0 = no limit)
    epochs: float = 0.0  # stop after this many passes over the data (0 = no limit)
    minutes: float = 0.0  # stop after this much wall time (0 = no limit)
    seed: int = 0
    log_every: int = 50
    sample_every: int = 0  # steps between sample grids (0 = only at the end)
    checkpoint_every: int = 500  # steps between checkpoints
    num_workers: int = 0


@dataclass
class SampleConfig:
    """Default sampler of a run (used for sample grids and ``elbolab sample``)."""

    sampler: SamplerKind = SamplerKind.DDIM
    steps: int = 50
    eta: float = 0.0
    spacing: Spacing = Spacing.LEADING
    n: int = 64
    corrector_steps: int = 1  # Langevin corrector steps per level (samplers "langevin" and "pc")
    snr: float = 0.16  # signal-to-noise ratio r of the corrector's step rule (Song et al. 2021, Alg. 4-5)
    precision: Precision = Precision.FP32  # bf16: network forwards under autocast (2x faster on CPU, nn.precision)


@dataclass
class VAEConfig:
    """VAE / Markovian HVAE / autoencoder: architecture, latents, decoder likelihood, KL schedule.

    ``latent_dims`` has one entry per latent layer: ``(J,)`` for a VAE or autoencoder, ``(J_1, ..., J_L)``
    for an L-layer HVAE (its length is the number of HVAE layers).
    """

    in_channels: int = 1  # data shape (set from the data by `elbolab train`)
    image_size: int = 28
    architecture: VAEArchitecture = VAEArchitecture.FC
    latent_dims: tuple[int, ...] = (20,)
    hidden_sizes: tuple[int, ...] = (400,)  # fc: widths of the encoder's hidden layers (decoder mirrors)
    channels: tuple[int, ...] = (32, 64)  # conv: one stride-2 stage per entry (decoder mirrors)
    conv_hidden: int = 256  # conv: width of the fully-connected layer after the conv stages
    layer_hidden: int = 256  # hvae: hidden width of q(z_l|z_{l-1}) and p(z_{l-1}|z_l)
    likelihood: DecoderLikelihood = DecoderLikelihood.BERNOULLI
    gaussian_std: float = 0.1  # gaussian_fixed: decoder std in units of [-1, 1] data
    beta: float = 1.0  # weight of the KL terms (1 = the ELBO)
    kl_warmup_steps: int = 0  # beta ramps linearly from 0 over this many steps (0 = off)
    free_bits: float = 0.0  # minimum KL in nats per latent dimension (Kingma et al. 2016; 0 = off)
    iwae_samples: int = 5000  # K of the importance-weighted bound reported by eval


@dataclass
class GANConfig:
    """GAN: networks, latent prior z ~ N(0, I), the game and its optimiser settings.

    ``in_channels`` / ``image_size`` are set from the data. ``g_lr`` / ``d_lr``: Adam learning rates of the
    generator / discriminator (0 = ``train.lr``; a larger ``d_lr`` is TTUR, Heusel et al. 2017); both groups
    use ``train.betas``. ``n_critic``: discriminator updates per generator update (Algorithm 1 of Gulrajani
    et al. 2017 uses 5). ``num_classes > 0`` makes G and D class-conditional.
    """

    architecture: GANArchitecture = GANArchitecture.DCGAN
    in_channels: int = 1
    image_size: int = 28
    latent_dim: int = 64
    g_channels: int = 64  # dcgan: width of the generator's last stage (earlier stages double it)
    d_channels: int = 64  # dcgan: width of the discriminator's first stage (later stages double it)
    g_norm: GANNorm = GANNorm.PIXEL  # batch: its running statistics do not match the EMA weights
    hidden: int = 256  # mlp: hidden width
    depth: int = 2  # mlp: hidden layers
    num_classes: int = 0
    loss: GANLoss = GANLoss.NON_SATURATING
    n_critic: int = 1
    gp_weight: float = 10.0  # lambda of the gradient penalty (wasserstein_gp only)
    g_lr: float = 0.0
    d_lr: float = 0.0


@dataclass
class RunConfig:
    """Everything a training run needs; written to ``config.toml`` in the run folder."""

    family: Family = Family.DDPM
    data: DataConfig = field(default_factory=DataConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    gan: GANConfig = field(default_factory=GANConfig)


# --------------------------------------------------------------------------------------------------
# Type-checked coercion
# --------------------------------------------------------------------------------------------------
def _describe(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise :class:`ConfigError` naming ``name``."""
    bad = ConfigError(f"{name} = {value!r} is not valid: expected {_describe(tp)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError:
            raise bad from None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, name)
            except ConfigError:
                pass
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        (elem, *_rest) = typing.get_args(tp)
        return tuple(coerce(v, elem, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return from_dict(tp, value, prefix=name)
    raise ConfigError(f"{name}: unsupported field type {tp!r}")  # a programming error in a config class


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) dict, checking every key and value."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(sorted(types_))}"
        )
    kwargs = {k: coerce(v, types_[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj, prefix)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict of TOML-representable values (Enums become their values)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, enum.Enum):
            out[f.name] = v.value
        elif isinstance(v, tuple):
            out[f.name] = [x.value if isinstance(x, enum.Enum) else x for x in v]
        else:
            out[f.name] = v
    return out


# --------------------------------------------------------------------------------------------------
# Range validation beyond types
# --------------------------------------------------------------------------------------------------
_POSITIVE = {
    "UNetConfig": ("in_channels", "image_size", "base_channels", "num_res_blocks", "head_dim", "groups"),
    "DiffusionConfig": ("T",),
    "TrainConfig": ("batch_size", "lr", "log_every", "checkpoint_every"),
    "SampleConfig": ("steps", "n", "corrector_steps", "snr"),
    "ScoreConfig": ("sigma_L", "steps_per_level"),
    "VAEConfig": ("in_channels", "image_size", "conv_hidden", "layer_hidden", "gaussian_std", "beta",
                  "iwae_samples"),
    "GANConfig": ("in_channels", "image_size", "latent_dim", "g_channels", "d_channels", "hidden", "depth",
                  "n_critic"),
}
_NON_NEGATIVE = {
    "DataConfig": ("image_size", "channels", "limit", "holdout"),
    "UNetConfig": ("out_channels", "num_classes", "dropout"),
    "TrainConfig": ("weight_decay", "warmup_steps", "grad_clip", "steps", "epochs", "minutes",
                    "sample_every", "num_workers"),
    "VAEConfig": ("kl_warmup_steps", "free_bits"),
    "GANConfig": ("num_classes", "gp_weight", "g_lr", "d_lr"),
    "ScoreConfig": ("num_levels", "sigma_1", "eps"),
}


def validate(obj: Any, prefix: str = "") -> None:
    """Check value ranges of a component config; raises :class:`ConfigError`."""
    cls = type(obj).__name__

    def name(f: str) -> str:
        return f"{prefix}.{f}" if prefix else f

    for f in _POSITIVE.get(cls, ()):
        if getattr(obj, f) <= 0:
            raise ConfigError(f"{name(f)} = {getattr(obj, f)!r} must be > 0")
    for f in _NON_NEGATIVE.get(cls, ()):
        if getattr(obj, f) < 0:
            raise ConfigError(f"{name(f)} = {getattr(obj, f)!r} must be >= 0")
    if isinstance(obj, DataConfig):
        if obj.on_error not in ("fail", "skip"):
            raise ConfigError(f"{name('on_error')} = {obj.on_error!r}: expected 'fail' or 'skip'")
        if obj.channels not in (0, 1, 3):
            raise ConfigError(f"{name('channels')} = {obj.channels!r}: expected 0 (keep), 1 or 3")
        if obj.split not in ("train", "test"):
            raise ConfigError(f"{name('split')} = {obj.split!r}: expected 'train' or 'test'")
    if isinstance(obj, UNetConfig):
        if not obj.channel_mults or any(m <= 0 for m in obj.channel_mults):
            raise ConfigError(f"{name('channel_mults')} = {list(obj.channel_mults)}: need positive integers")
        if not 0.0 <= obj.dropout < 1.0:
            raise ConfigError(f"{name('dropout')} = {obj.dropout!r} must be in [0, 1)")
    if isinstance(obj, DiffusionConfig):
        if not 0.0 < obj.beta_start <= obj.beta_end < 1.0:
            raise ConfigError(
                f"{name('beta_start')} = {obj.beta_start!r}, {name('beta_end')} = {obj.beta_end!r}: "
                "need 0 < beta_start <= beta_end < 1"
            )
        if not 0.0 <= obj.p_uncond < 1.0:
            raise ConfigError(f"{name('p_uncond')} = {obj.p_uncond!r} must be in [0, 1)")
    if isinstance(obj, ScoreConfig):
        if obj.num_levels == 1:
            raise ConfigError(f"{name('num_levels')} = 1: need at least 2 noise levels (or 0 = automatic)")
        if obj.sigma_1 and obj.sigma_1 <= obj.sigma_L:
            raise ConfigError(f"{name('sigma_1')} = {obj.sigma_1!r} must exceed {name('sigma_L')} = "
                              f"{obj.sigma_L!r} (or be 0 = automatic)")
    if isinstance(obj, TrainConfig):
        if not 0.0 <= obj.ema_decay < 1.0:
            raise ConfigError(f"{name('ema_decay')} = {obj.ema_decay!r} must be in [0, 1)")
        if not 0.0 <= obj.lr_min_ratio <= 1.0:
            raise ConfigError(f"{name('lr_min_ratio')} = {obj.lr_min_ratio!r} must be in [0, 1]")
    if isinstance(obj, VAEConfig):
        for f in ("latent_dims", "hidden_sizes", "channels"):
            v = getattr(obj, f)
            if any(d <= 0 for d in v) or (f != "hidden_sizes" and not v):
                raise ConfigError(f"{name(f)} = {list(v)}: need positive integers"
                                  + ("" if f == "hidden_sizes" else " (at least one)"))
    if isinstance(obj, SampleConfig):
        if not 0.0 <= obj.eta <= 1.0:
            raise ConfigError(f"{name('eta')} = {obj.eta!r} must be in [0, 1]")


# --------------------------------------------------------------------------------------------------
# --set overrides
# --------------------------------------------------------------------------------------------------
def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as a TOML value, falling back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Return a copy of ``cfg`` with ``["train.lr=1e-3", "unet.channel_mults=[1,2]"]`` applied, type-checked."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        node, cls = data, type(cfg)
        for i, part in enumerate(path):
            types_ = _field_types(cls)
            if part not in types_:
                where = ".".join(path[:i]) or "the top level"
                raise ConfigError(
                    f"--set {key}: unknown key {part!r} in {where}; valid keys: {', '.join(sorted(types_))}"
                )
            if i == len(path) - 1:
                if dataclasses.is_dataclass(types_[part]):
                    raise ConfigError(f"--set {key}: {key} is a section; set one of its keys, e.g. {key}.<key>")
                node[part] = _parse_scalar(text.strip())
            else:
                if not dataclasses.is_dataclass(types_[part]):
                    raise ConfigError(f"--set {key}: {'.'.join(path[: i + 1])} is not a section")
                node, cls = node[part], types_[part]
    return from_dict(type(cfg), data)


# --------------------------------------------------------------------------------------------------
# TOML
# --------------------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def dumps_toml(cfg: Any) -> str:
    """Serialise a dataclass config to TOML text (scalars first, then one table per nested section)."""

    def emit(d: dict[str, Any], prefix: str, lines: list[str]) -> None:
        for k, v in d.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {_toml_value(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append("")
                lines.append(f"[{prefix}{k}]")
                emit(v, f"{prefix}{k}.", lines)

    lines: list[str] = []
    emit(to_dict(cfg), "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import (os.umask can only be read by setting it, process-wide)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename, fsync folder.

    A reader (or a process killed at any moment) sees either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_toml(cfg: Any, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, dumps_toml(cfg))


def load_toml(path: str | os.PathLike[str], cls: type = RunConfig) -> Any:
    """Read a TOML file into ``cls``; a syntax error or bad value names the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------
def unet_preset(name: str) -> UNetConfig:
    """U-Net presets: ``tiny`` (tests), ``mnist`` (28x28 grey), ``cifar`` (32x32 RGB)."""
    presets: dict[str, Callable[[], UNetConfig]] = {
        "tiny": lambda: UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                                   attention_resolutions=(14,), head_dim=8, groups=4),
        # Speed-tuned for CPU (benchmarks/README.md): one attention layer (middle block, 7x7) and 2x2 transposed-
        # conv upsampling; 1.60 M parameters, within 2% of diffusers' UNet2DModel(32, 64, 64).
        "mnist": lambda: UNetConfig(attention_resolutions=(), mid_attention=True, upsampling=Upsampling.TRANSPOSED),
        "cifar": lambda: UNetConfig(in_channels=3, image_size=32, base_channels=64, channel_mults=(1, 2, 2, 2),
                                    attention_resolutions=(16,), head_dim=64, groups=32, dropout=0.1),
    }
    if name not in presets:
        raise ConfigError(f"unknown U-Net preset {name!r}; choices: {', '.join(presets)}")
    return presets[name]()


def _ddpm_mnist() -> RunConfig:
    """The CPU demo: 11 minutes (1700-2100 steps at batch 64 on 2 cores, with the host's speed) of v-prediction
    (Salimans & Ho 2022) with the unweighted MSE on the cosine schedule (Nichol & Dhariwal 2021), small batch, high
    lr with a short warm-up and a cosine decay to zero over the time budget, EMA; sampled by DDIM with eta = 1
    (the ancestral sampler of the respaced chain) in 200 steps, bf16 forwards. The A/B runs behind these choices are in
    benchmarks/README.md ("the demo recipe"): cosine schedule beat linear, eta = 1 in 200 steps beat
    deterministic DDIM-50 by ~10 points of classifier confidence, the lr decay beat a constant lr by 5 points,
    v beat eps by 2, Min-SNR-5 and lr 3e-3 lost."""
    return RunConfig(
        family=Family.DDPM,
        data=DataConfig(name="mnist-embedded"),
        unet=unet_preset("mnist"),
        diffusion=DiffusionConfig(schedule=ScheduleKind.COSINE, prediction=PredictionKind.V),
        train=TrainConfig(minutes=11.0, batch_size=64, lr=2e-3, warmup_steps=100, lr_schedule=LRSchedule.COSINE,
                          ema_decay=0.995),
        sample=SampleConfig(steps=200, eta=1.0, precision=Precision.BF16),
    )


def _ddpm_tiny() -> RunConfig:
    return RunConfig(
        family=Family.DDPM,
        data=DataConfig(name="mnist-embedded", limit=512),
        unet=unet_preset("tiny"),
        diffusion=DiffusionConfig(T=100, beta_start=1e-3, beta_end=0.2),
        train=TrainConfig(batch_size=32, steps=20, warmup_steps=5, log_every=5, checkpoint_every=10,
                          precision=Precision.FP32),
        sample=SampleConfig(steps=10, n=16),
    )


def _ddpm_cifar() -> RunConfig:
    return RunConfig(
        family=Family.DDPM,
        data=DataConfig(name="cifar10"),
        unet=unet_preset("cifar"),
        diffusion=DiffusionConfig(),
        train=TrainConfig(),
    )


def _ddpm_cfg_mnist() -> RunConfig:
    """Class-conditional DDPM for classifier-free guidance (Ho & Salimans 2022): the MNIST U-Net with a label
    embedding (10 classes + the null class), labels dropped with p_uncond = 0.1; samples with DDIM 50 steps.
    Optimiser as ``ddpm-mnist`` (batch 64, lr 2e-3, warm-up 100), EMA 0.999 for longer runs."""
    return RunConfig(
        family=Family.DDPM,
        data=DataConfig(name="mnist"),
        unet=dataclasses.replace(unet_preset("mnist"), num_classes=10),
        diffusion=DiffusionConfig(p_uncond=0.1),
        train=TrainConfig(minutes=10.0, batch_size=64, lr=2e-3, warmup_steps=100, log_every=100,
                          checkpoint_every=1000),
        sample=SampleConfig(precision=Precision.BF16),
    )


def _ncsn_mnist() -> RunConfig:
    """NCSN on MNIST (Song & Ermon 2019) on the MNIST U-Net: sigma_1 = the largest pairwise distance of the
    data, L and eps by the rules of Song & Ermon 2020 (resolved at the start of training); T = 2 Langevin steps
    per level instead of their 5 to fit a CPU sampling budget (eps is re-chosen for T by Technique 4)."""
    return RunConfig(
        family=Family.NCSN,
        data=DataConfig(name="mnist"),
        unet=unet_preset("mnist"),
        score=ScoreConfig(steps_per_level=2),
        train=TrainConfig(minutes=10.0, batch_size=64, lr=1e-3, warmup_steps=100, log_every=100,
                          checkpoint_every=1000),
        sample=SampleConfig(sampler=SamplerKind.ANNEALED_LANGEVIN, precision=Precision.BF16),
    )


def _vae_run(family: Family, vae: VAEConfig, minutes: float) -> RunConfig:
    """MNIST (60k train) VAE-family run on CPU: Adam 1e-3, no clipping, fp32, stop after ``minutes``."""
    return RunConfig(
        family=family,
        data=DataConfig(name="mnist"),
        vae=vae,
        train=TrainConfig(batch_size=128, lr=1e-3, warmup_steps=0, grad_clip=0.0, ema_decay=0.999,
                          precision=Precision.FP32, minutes=minutes, log_every=100, checkpoint_every=2000),
        sample=SampleConfig(n=64),
    )


def _gan_mnist(loss: GANLoss) -> RunConfig:
    """DCGAN on MNIST (60k train), CPU budget of 9 minutes. Non-saturating: Adam(2e-4, betas (0.5, 0.999)),
    one D step per G step (Radford et al. 2016). WGAN-GP: Adam(1e-4, betas (0, 0.9)), n_critic = 5,
    lambda = 10 (Algorithm 1 of Gulrajani et al. 2017). No gradient clipping, no warm-up; bf16 autocast (2.4x
    faster than fp32 on one CPU thread)."""
    wgan = loss is GANLoss.WASSERSTEIN_GP
    return RunConfig(
        family=Family.GAN,
        data=DataConfig(name="mnist"),
        gan=GANConfig(latent_dim=64, g_channels=32, d_channels=32, loss=loss, n_critic=5 if wgan else 1),
        train=TrainConfig(batch_size=64, lr=1e-4 if wgan else 2e-4, betas=(0.0, 0.9) if wgan else (0.5, 0.999),
                          warmup_steps=0, grad_clip=0.0, ema_decay=0.999, precision=Precision.BF16, minutes=9.0,
                          log_every=50, sample_every=500, checkpoint_every=500),
        sample=SampleConfig(n=64),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "vae-mnist-fc": lambda: _vae_run(Family.VAE, VAEConfig(), minutes=5.0),
    "vae-mnist": lambda: _vae_run(Family.VAE, VAEConfig(
        architecture=VAEArchitecture.CONV, latent_dims=(32,), likelihood=DecoderLikelihood.DISCRETIZED,
        kl_warmup_steps=500), minutes=8.0),
    "hvae-mnist": lambda: _vae_run(Family.HVAE, VAEConfig(latent_dims=(32, 16), kl_warmup_steps=500,
                                                          free_bits=0.01), minutes=6.0),
    "ae-mnist": lambda: _vae_run(Family.AE, VAEConfig(architecture=VAEArchitecture.CONV, latent_dims=(32,)),
                                 minutes=3.0),
    "ddpm-mnist": _ddpm_mnist,
    "ddpm-cfg-mnist": _ddpm_cfg_mnist,
    "ncsn-mnist": _ncsn_mnist,
    "ddpm-tiny": _ddpm_tiny,
    "ddpm-cifar": _ddpm_cifar,
    "gan-mnist": lambda: _gan_mnist(GANLoss.NON_SATURATING),
    "wgan-gp-mnist": lambda: _gan_mnist(GANLoss.WASSERSTEIN_GP),
}


def preset(name: str) -> RunConfig:
    """A named run preset, e.g. ``preset("ddpm-mnist")``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choices: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def load_run_config(spec: str) -> RunConfig:
    """``spec`` is a preset name or a path to a TOML file."""
    if spec in PRESETS:
        return preset(spec)
    if spec.endswith(".toml") or os.path.exists(spec):
        return load_toml(spec, RunConfig)
    raise ConfigError(f"{spec!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a TOML file")


def write_presets(folder: str | os.PathLike[str]) -> list[Path]:
    """Write every preset to ``folder/<name>.toml`` (how ``configs/`` is made; a test keeps them in sync)."""
    paths = []
    for name in sorted(PRESETS):
        path = Path(folder) / f"{name}.toml"
        save_toml(PRESETS[name](), path)
        paths.append(path)
    return paths
