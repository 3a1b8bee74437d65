"""diffusers <-> elbolab: a ``UNet2DModel`` behind elbolab's model interface, a ``DDPMScheduler`` /
``DDIMScheduler`` config as an elbolab :class:`~elbolab.diffusion.GaussianDiffusion`, and back.

diffusers counts timesteps i = 0..T-1 where i = 0 is the first noisy step; elbolab counts t = 1..T (DESIGN.md:
index 0 of the schedule tables is "no noise"), so their i is our t - 1 and their ``alphas_cumprod[i]`` is our
``alpha_bars[i + 1]``. With that shift, elbolab's ancestral sampler (Algorithm 2 of Ho et al. 2020) is the
chain of ``DDPMPipeline`` step by step, and the same ``torch.Generator`` draws the same noise in the same
order (x_T first, then one draw per step t >= 2), so the two produce the same images.

What a scheduler config says and where it goes:

- ``num_train_timesteps``, ``beta_schedule``/``beta_start``/``beta_end``/``trained_betas`` -> the betas,
  taken from diffusers' own scheduler (float32, as the model was trained with) into a float64
  :class:`~elbolab.diffusion.NoiseSchedule` (cumulative products in float64);
- ``prediction_type`` epsilon / sample / v_prediction -> :class:`~elbolab.diffusion.Prediction` EPS / X0 / V;
- ``variance_type`` fixed_small(_log) / fixed_large(_log) -> sigma_t^2 = beta~_t / beta_t (Ho et al. 2020,
  Sec. 3.2); learned variances are refused (elbolab's reverse variance is fixed);
- ``clip_sample`` (range 1) -> ``clip_x0`` of the samplers; dynamic ``thresholding`` is refused.

diffusers is an optional extra: ``pip install elbolab[diffusers]``; nothing here imports it at module import.
Weights are read and written as safetensors only (``use_safetensors=True``; nothing is unpickled).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from elbolab.config import ConfigError, check_choice, check_range
from elbolab.errors import ExitCode
from elbolab.diffusion import GaussianDiffusion, NoiseSchedule, Prediction
from elbolab.diffusion.config import DiffusionConfig, PredictionKind, ScheduleKind, VarianceKind

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install elbolab[diffusers]"
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"

PREDICTIONS = {"epsilon": Prediction.EPS, "sample": Prediction.X0, "v_prediction": Prediction.V}
VARIANCES = {"fixed_small": VarianceKind.BETA_TILDE, "fixed_small_log": VarianceKind.BETA_TILDE,
             "fixed_large": VarianceKind.BETA, "fixed_large_log": VarianceKind.BETA}
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")


class Network(str, enum.Enum):
    """The network of a DDPM run (``model.network``): elbolab's U-Net (``[model.unet]``) or diffusers'
    ``UNet2DModel`` (``[model.diffusers_unet]``, through :class:`DiffusersUNet`)."""

    ELBOLAB = "elbolab"
    DIFFUSERS = "diffusers"


#: UNet2DModel block types a config may name (diffusers' unet_2d_blocks, the ones UNet2DModel builds)
DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D", "AttnDownEncoderBlock2D",
               "DownEncoderBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D", "KDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D",
             "AttnSkipUpBlock2D", "SkipUpBlock2D", "KUpBlock2D")


@dataclass
class DiffusersUNetConfig:
    """``[model.diffusers_unet]``: the arguments of diffusers' ``UNet2DModel`` (same names; TOML has no null, so
    0 / "" stand for None where noted). ``in_channels`` and ``sample_size`` are set from the data; the output has
    ``in_channels`` channels (elbolab's reverse variance is fixed). The defaults are a small 3-level U-Net with
    attention at the middle level; google/ddpm-cifar10-32 is block_out_channels = [128, 256, 256, 256],
    layers_per_block = 2, attention at 16x16, flip_sin_to_cos = false, freq_shift = 1, downsample_padding = 0,
    norm_eps = 1e-6 (``elbolab import-diffusers`` copies them from the folder's ``unet/config.json``)."""

    in_channels: int = 1
    sample_size: int = 28
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 2
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple[str, ...] = ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    attention_head_dim: int = 8  # 0 = None (one head per block width)
    norm_num_groups: int = 8
    norm_eps: float = 1e-5
    attn_norm_num_groups: int = 0  # 0 = None (norm_num_groups)
    dropout: float = 0.0
    act_fn: str = "silu"
    center_input_sample: bool = False
    time_embedding_type: str = "positional"  # or "fourier"
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    mid_block_type: str = "UNetMidBlock2D"  # "" = no middle block
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("in_channels", "sample_size", "layers_per_block", "norm_num_groups",
                                            "norm_eps"),
                    non_negative=("attention_head_dim", "attn_norm_num_groups", "dropout", "downsample_padding"))
        n = len(self.block_out_channels)
        if not n or any(c <= 0 for c in self.block_out_channels):
            raise ConfigError(f"{prefix}.block_out_channels = {list(self.block_out_channels)!r}: need one positive "
                              "width per level")
        for key, names, choices in (("down_block_types", self.down_block_types, DOWN_BLOCKS),
                                    ("up_block_types", self.up_block_types, UP_BLOCKS)):
            if len(names) != n:
                raise ConfigError(f"{prefix}.{key} has {len(names)} entries but block_out_channels {n}: one per level")
            for k, b in enumerate(names):
                check_choice(b, choices, f"{prefix}.{key}[{k}]")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"{prefix}.norm_num_groups = {self.norm_num_groups} does not divide "
                              f"block_out_channels {bad}")
        check_choice(self.time_embedding_type, ("positional", "fourier"), f"{prefix}.time_embedding_type")
        check_choice(self.mid_block_type, ("UNetMidBlock2D", ""), f"{prefix}.mid_block_type")
        check_choice(self.resnet_time_scale_shift, ("default", "scale_shift"), f"{prefix}.resnet_time_scale_shift")

    def unet_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``UNet2DModel(...)`` (None where the section holds 0 / "")."""
        kw = {f: getattr(self, f) for f in self.__dataclass_fields__}
        kw["out_channels"] = self.in_channels
        kw["block_out_channels"] = tuple(self.block_out_channels)
        kw["down_block_types"] = tuple(self.down_block_types)
        kw["up_block_types"] = tuple(self.up_block_types)
        for k in ("attention_head_dim", "attn_norm_num_groups"):
            kw[k] = kw[k] or None
        kw["mid_block_type"] = kw["mid_block_type"] or None
        return kw


def build_diffusers_unet(cfg: DiffusersUNetConfig) -> DiffusersUNet:
    """A fresh (randomly initialised, from torch's global RNG) ``UNet2DModel`` of ``cfg`` behind
    :class:`DiffusersUNet`."""
    diffusers = require_diffusers()
    return DiffusersUNet(diffusers.UNet2DModel(**cfg.unet_kwargs()))


# UNet2DModel config keys with no field in DiffusersUNetConfig: accepted only at these values
_FIXED_KEYS = {"out_channels": None, "time_embedding_dim": None, "class_embed_type": None, "num_class_embeds": None,
               "num_train_timesteps": None}


def section_from_unet_config(unet_config: dict[str, Any]) -> DiffusersUNetConfig:
    """``[model.diffusers_unet]`` of a ``UNet2DModel`` config (``unet/config.json``). Raises ValueError naming a
    setting elbolab cannot carry (class conditioning, a learned variance, a non-square sample size, ...)."""
    fields = DiffusersUNetConfig.__dataclass_fields__
    cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    size = cfg.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"sample_size = {size!r}: elbolab's images are square; supported: an int or [n, n]")
        cfg["sample_size"] = size[0]
    if cfg.get("out_channels", cfg.get("in_channels")) != cfg.get("in_channels"):
        raise ValueError(f"out_channels = {cfg['out_channels']} != in_channels = {cfg.get('in_channels')} (a learned "
                         "variance?): elbolab's reverse variance is fixed; supported: out_channels = in_channels")
    for key, allowed in _FIXED_KEYS.items():
        if key != "out_channels" and cfg.get(key) not in (allowed, 0, "") and key in cfg:
            raise ValueError(f"UNet2DModel {key} = {cfg[key]!r} is not supported by the bridge (unconditional "
                             f"UNet2DModels with the default time embedding only); supported: {allowed}")
    unknown = sorted(k for k in cfg if k not in fields and k not in _FIXED_KEYS)
    if unknown:
        logger.warning("UNet2DModel config keys ignored by the bridge: %s", ", ".join(unknown))
    kw: dict[str, Any] = {}
    for k in fields:
        if k not in cfg:
            continue
        v = cfg[k]
        if v is None:
            v = "" if k == "mid_block_type" else 0
        kw[k] = tuple(v) if isinstance(v, list) else v
    if "block_out_channels" in kw and "norm_num_groups" not in kw:
        kw["norm_num_groups"] = 32  # UNet2DModel's default, not this section's
    for k, default in (("attention_head_dim", 8), ("norm_eps", 1e-5), ("freq_shift", 0), ("flip_sin_to_cos", True),
                       ("downsample_padding", 1)):
        kw.setdefault(k, default)  # UNet2DModel's defaults for keys an old config.json leaves out
    section = DiffusersUNetConfig(**kw)
    section.validate("model.diffusers_unet")
    return section


class DiffusersUnavailable(ImportError):
    """diffusers is not installed (it is an optional extra); the message says what to install."""

    exit_code = ExitCode.USAGE


def require_diffusers() -> Any:
    """The ``diffusers`` module, or :class:`DiffusersUnavailable` saying what to install."""
    try:
        import diffusers
    except ImportError as e:
        raise DiffusersUnavailable(f"the diffusers bridge needs the diffusers package: {INSTALL_HINT} "
                                   f"(cause: {e})") from e
    return diffusers


class DiffusersUNet(nn.Module):
    """diffusers' ``UNet2DModel`` called as an elbolab model: ``model(x_t, t, y) -> (B, C, H, W)``.

    ``x_t: (B, C, H, W)``; ``t: (B,)`` in 1..T (long, or float for the continuous-time samplers and the ODE
    likelihood), passed to the UNet as diffusers' timestep ``t - 1``; ``y: (B,)`` class labels for a UNet with
    ``num_class_embeds`` (else must be None). The output is what the scheduler's ``prediction_type`` says.
    """

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        cfg = unet.config
        if cfg.out_channels != cfg.in_channels:
            raise ValueError(f"UNet2DModel with out_channels = {cfg.out_channels} != in_channels = {cfg.in_channels}"
                             " (a learned variance?): elbolab's reverse variance is fixed; supported: out = in")
        self.unet = unet
        self.num_classes = int(cfg.num_class_embeds or 0)

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if y is not None and not self.num_classes:
            raise ValueError("labels y given to an unconditional UNet2DModel (num_class_embeds is not set)")
        if y is None and self.num_classes:
            raise ValueError(f"this UNet2DModel is class-conditional ({self.num_classes} classes): pass y")
        i = t - 1  # diffusers' timestep index of our t (t = 1 -> 0)
        return self.unet(x_t, i, class_labels=y).sample


@dataclass(frozen=True)
class SchedulerSpec:
    """What elbolab takes from a scheduler config: the process, ``clip_x0``, and the config itself."""

    diffusion: GaussianDiffusion
    clip_x0: bool
    config: dict[str, Any]


def scheduler_to_diffusion(config: dict[str, Any]) -> SchedulerSpec:
    """A ``scheduler_config.json`` (DDPMScheduler or DDIMScheduler) -> :class:`SchedulerSpec`.

    Raises ValueError naming the key and listing the supported values for what elbolab cannot represent."""
    diffusers = require_diffusers()
    name = config.get("_class_name", "DDPMScheduler")
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler {name!r} is not supported; supported: {', '.join(SCHEDULERS)}")
    pred = config.get("prediction_type", "epsilon")
    if pred not in PREDICTIONS:
        raise ValueError(f"prediction_type = {pred!r} is not supported; choices: {', '.join(PREDICTIONS)}")
    var = config.get("variance_type", "fixed_small")  # DDIMScheduler has none: its eta = 1 is beta~ (fixed_small)
    if var not in VARIANCES:
        raise ValueError(f"variance_type = {var!r} is not supported (elbolab's reverse variance is fixed); "
                         f"choices: {', '.join(VARIANCES)}")
    if config.get("thresholding", False):
        raise ValueError("thresholding = true (dynamic thresholding) is not supported; choices: false")
    clip = bool(config.get("clip_sample", False))
    if clip and float(config.get("clip_sample_range", 1.0)) != 1.0:
        raise ValueError(f"clip_sample_range = {config['clip_sample_range']!r} is not supported with clip_sample; "
                         "choices: 1.0")
    if int(config.get("steps_offset", 0)) != 0 and name == "DDPMScheduler":
        logger.warning("steps_offset = %s is ignored (it only shifts few-step DDIM grids)", config["steps_offset"])
    sched = getattr(diffusers, name).from_config(config)
    betas = sched.betas.detach().to(torch.float64).reshape(-1)  # diffusers' float32 betas, exactly
    diffusion = GaussianDiffusion(NoiseSchedule.from_betas(betas), prediction=PREDICTIONS[pred],
                                  variance=VARIANCES[var])
    return SchedulerSpec(diffusion=diffusion, clip_x0=clip, config=dict(config))


_PREDICTION_KINDS = {"epsilon": PredictionKind.EPS, "sample": PredictionKind.X0, "v_prediction": PredictionKind.V}


def scheduler_to_diffusion_config(config: dict[str, Any]) -> tuple[DiffusionConfig, bool]:
    """A scheduler config -> (``[model.diffusion]``, ``clip_x0``) of an elbolab run, for
    ``elbolab import-diffusers``. The betas must be one of elbolab's schedules: ``beta_schedule = "linear"``
    (Ho et al. 2020), ``"squaredcos_cap_v2"`` (= elbolab's cosine, s = 0.008, Nichol & Dhariwal 2021 eq. 17), or
    ``trained_betas`` equal to one of those to float32 precision (what :func:`export_diffusers` writes);
    anything else is a ValueError naming ``beta_schedule`` and the choices. The process it gives equals
    :func:`scheduler_to_diffusion`'s up to diffusers' float32 rounding of the betas."""
    spec = scheduler_to_diffusion(config)  # every other refusal (prediction, variance, thresholding ...)
    T = spec.diffusion.T
    theirs = spec.diffusion.schedule.betas[1:]
    var = VARIANCES[config.get("variance_type", "fixed_small")]
    pred = _PREDICTION_KINDS[config.get("prediction_type", "epsilon")]
    candidates = []
    kind = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and kind not in ("linear", "squaredcos_cap_v2"):
        raise ValueError(f"beta_schedule = {kind!r} has no elbolab schedule; choices: linear, squaredcos_cap_v2 "
                         "(or trained_betas equal to one of them)")
    lo, hi = float(theirs[0]), float(theirs[-1])
    if 0.0 < lo <= hi < 1.0:
        candidates.append(DiffusionConfig(schedule=ScheduleKind.LINEAR, T=T, beta_start=lo, beta_end=hi,
                                          prediction=pred, variance=var))
    candidates.append(DiffusionConfig(schedule=ScheduleKind.COSINE, T=T, cosine_s=0.008, prediction=pred,
                                      variance=var))
    if config.get("trained_betas") is None and kind == "linear":
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        candidates.insert(0, DiffusionConfig(schedule=ScheduleKind.LINEAR, T=T, beta_start=start, beta_end=end,
                                             prediction=pred, variance=var))
    from elbolab.diffusion import build_diffusion

    for cand in candidates:
        ours = build_diffusion(cand).schedule.betas[1:]
        if torch.allclose(ours, theirs, rtol=1e-6, atol=1e-9):
            return cand, spec.clip_x0
    raise ValueError(f"the scheduler's betas (beta_schedule = {kind!r}, T = {T}) match none of elbolab's "
                     "schedules; choices: linear, squaredcos_cap_v2 (cosine, s = 0.008)")


@dataclass(frozen=True)
class DiffusersModel:
    """A diffusers folder loaded for elbolab: ``model`` (eval mode), its ``diffusion`` and ``clip_x0``, and
    ``shape = (C, H, W)`` of its images."""

    model: DiffusersUNet
    diffusion: GaussianDiffusion
    clip_x0: bool
    shape: tuple[int, int, int]
    scheduler_config: dict[str, Any]
    unet_config: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a folder written by diffusers' save_pretrained "
                                f"(with {UNET_DIR}/ and {SCHEDULER_DIR}/)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_diffusers_folder(folder: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> DiffusersModel:
    """Read ``folder`` (``unet/`` and ``scheduler/`` of ``save_pretrained``, e.g. a download of
    google/ddpm-cifar10-32) into a :class:`DiffusersModel`. The UNet's weights must be safetensors."""
    diffusers = require_diffusers()
    folder = Path(folder)
    sched_cfg = _read_json(folder / SCHEDULER_DIR / "scheduler_config.json")
    unet_cfg = _read_json(folder / UNET_DIR / "config.json")
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"{folder / UNET_DIR}: {unet_cfg.get('_class_name')!r} is not supported; supported: UNet2DModel")
    spec = scheduler_to_diffusion(sched_cfg)
    try:
        unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder=UNET_DIR, use_safetensors=True)
    except (OSError, EnvironmentError) as e:
        raise FileNotFoundError(f"{folder / UNET_DIR}: no diffusion_pytorch_model.safetensors ({e}); elbolab reads "
                                "safetensors only: convert the .bin once with diffusers (save_pretrained("
                                "..., safe_serialization=True))") from e
    model = DiffusersUNet(unet).to(device).eval()
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return DiffusersModel(model=model, diffusion=spec.diffusion, clip_x0=spec.clip_x0,
                          shape=(int(unet.config.in_channels), int(h), int(w)), scheduler_config=spec.config,
                          unet_config=dict(unet.config))


def diffusion_to_scheduler_config(diffusion: GaussianDiffusion, clip_x0: bool = False) -> dict[str, Any]:
    """The ``DDPMScheduler`` config of an elbolab process: its betas as ``trained_betas`` (float64 -> JSON),
    the prediction type and variance. SCORE-parameterised processes have no diffusers counterpart."""
    pred = {v: k for k, v in PREDICTIONS.items()}.get(diffusion.prediction)
    if pred is None:
        raise ValueError(f"prediction {diffusion.prediction.value!r} has no diffusers prediction_type; "
                         f"choices: {', '.join(p.value for p in PREDICTIONS.values())}")
    var = {VarianceKind.BETA_TILDE: "fixed_small", VarianceKind.BETA: "fixed_large"}[diffusion.variance]
    betas = diffusion.schedule.betas[1:].tolist()
    return {"num_train_timesteps": len(betas), "trained_betas": betas, "beta_schedule": "linear",
            "beta_start": betas[0], "beta_end": betas[-1], "prediction_type": pred, "variance_type": var,
            "clip_sample": bool(clip_x0), "clip_sample_range": 1.0, "thresholding": False}


def export_diffusers(model: DiffusersUNet, diffusion: GaussianDiffusion, folder: str | os.PathLike[str], *,
                     clip_x0: bool = False) -> Path:
    """Write ``folder`` so that ``DDPMPipeline.from_pretrained(folder)`` loads the UNet (safetensors) with a
    ``DDPMScheduler`` of the same process; returns ``folder``."""
    diffusers = require_diffusers()
    folder = Path(folder)
    sched = diffusers.DDPMScheduler(**diffusion_to_scheduler_config(diffusion, clip_x0))
    pipe = diffusers.DDPMPipeline(unet=model.unet, scheduler=sched)
    pipe.save_pretrained(folder, safe_serialization=True)
    logger.info("diffusers pipeline written to %s", folder)
    return folder


# --------------------------------------------------------------------------------------------------
# run folders: diffusers folder -> elbolab run (import-diffusers), elbolab run -> diffusers folder (export)
# --------------------------------------------------------------------------------------------------
SOURCE_FILE = "diffusers_source.json"  # what an imported run was made from (provenance; not read back)


@dataclass(frozen=True)
class ImportResult:
    """An imported run: its ``folder``, ``config`` (a :class:`~elbolab.config.RunConfig`), the number of
    parameters, ``T`` and the largest difference of the rebuilt network's output from the loaded one on a probe
    input (0 when the config reproduces the architecture exactly)."""

    folder: Path
    config: Any
    parameters: int
    T: int
    max_abs_diff: float

    def to_text(self) -> str:
        m = self.config.model
        d = m.diffusion
        return (f"imported into {self.folder}/: UNet2DModel, {self.parameters / 1e6:.2f} M parameters, "
                f"{m.diffusers_unet.in_channels}x{m.diffusers_unet.sample_size}x{m.diffusers_unet.sample_size}; "
                f"{d.schedule.value} schedule, T = {d.T}, prediction {d.prediction.value}, variance "
                f"{d.variance.value}, clip_x0 {self.config.sample.options['ancestral'].clip_x0}; data "
                f"{self.config.data.name!r} (rebuilt network matches to {self.max_abs_diff:.1e})")


def _default_data_name(channels: int) -> str:
    return {1: "mnist-embedded", 3: "cifar10"}.get(channels, "")


def import_diffusers_run(folder: str | os.PathLike[str], out: str | os.PathLike[str], *, data: str | None = None,
                         data_dir: str = "") -> ImportResult:
    """Make an elbolab run folder ``out`` from a diffusers ``save_pretrained`` folder (``elbolab import-diffusers``).

    ``config.toml``: family ddpm with ``model.network = "diffusers"``, ``[model.diffusers_unet]`` from
    ``unet/config.json`` and ``[model.diffusion]`` from the scheduler (schedule, T, prediction, variance;
    :func:`scheduler_to_diffusion_config`), ``clip_x0`` of every sampler = ``clip_sample``, the default sampler
    the full ancestral chain (what ``DDPMPipeline`` runs); ``[data]``: ``data`` (default mnist-embedded for 1
    channel, cifar10 for 3) at the UNet's size; ``model.safetensors`` and ``ema.safetensors`` (step 0): the
    diffusers weights under the names of :class:`DiffusersUNet`; ``run.json``. ``out`` must not hold a run.
    """
    from elbolab.config import DataConfig, RunConfig, save_toml
    from elbolab.families.ddpm import DDPMConfig
    from elbolab.run_format import CONFIG_FILE, write_run_info
    from elbolab.train.checkpoint import save_checkpoint

    out = Path(out)
    if (out / CONFIG_FILE).exists():
        raise ValueError(f"{out} already holds a run ({CONFIG_FILE}); choose another --out")
    loaded = load_diffusers_folder(folder)
    section = section_from_unet_config(loaded.unet_config)
    diffusion, clip = scheduler_to_diffusion_config(loaded.scheduler_config)
    c, h, _ = loaded.shape
    name = data if data is not None else _default_data_name(c)
    if not name:
        raise ValueError(f"a UNet2DModel with {c} channels: pass --data NAME (the dataset for eval, FID, inpaint)")
    base = RunConfig(family="ddpm")
    options = {k: (dataclasses.replace(o, clip_x0=clip) if hasattr(o, "clip_x0") else o)
               for k, o in base.sample.options.items()}
    options["ancestral"] = dataclasses.replace(options["ancestral"], steps=diffusion.T)
    sample = dataclasses.replace(base.sample, sampler="ancestral", options=options)
    cfg = RunConfig(family="ddpm", data=DataConfig(name=name, data_dir=data_dir, image_size=h, channels=c),
                    sample=sample, model=DDPMConfig(network=Network.DIFFUSERS, diffusers_unet=section,
                                                    diffusion=diffusion))
    weights = {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()}
    rebuilt = build_diffusers_unet(section).eval()
    rebuilt.load_state_dict(weights, strict=True)  # the section names the same architecture ...
    probe = torch.randn(1, *loaded.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([max(1, diffusion.T // 2)])
    with torch.no_grad():  # ... and computes the same function
        diff = float((rebuilt(probe, t) - loaded.model(probe, t)).abs().max())
    if not diff <= 1e-5:
        raise ValueError(f"{folder}: the UNet2DModel rebuilt from its config differs from the loaded one by "
                         f"{diff:.3g}: a setting of unet/config.json is not carried by [model.diffusers_unet]")
    out.mkdir(parents=True, exist_ok=True)
    save_toml(cfg, out / CONFIG_FILE)
    save_checkpoint(out, 0, weights, weights, {"imported_from": str(Path(folder).resolve())})
    write_run_info(out)
    (out / SOURCE_FILE).write_text(json.dumps({"folder": str(Path(folder).resolve()),
                                               "scheduler": loaded.scheduler_config,
                                               "unet": loaded.unet_config}, indent=2, default=str) + "\n")
    logger.info("imported %s into %s", folder, out)
    return ImportResult(folder=out, config=cfg, parameters=sum(v.numel() for v in weights.values()),
                        T=diffusion.T, max_abs_diff=diff)


def export_run(run: Any, folder: str | os.PathLike[str]) -> Path:
    """Write the loaded run ``run`` (:class:`elbolab.runs.Run`, EMA weights as loaded) as a diffusers
    ``DDPMPipeline`` folder (``elbolab export RUN --format diffusers``). The run's network must be diffusers'
    UNet2DModel (``model.network = "diffusers"``); ``clip_sample`` is the run's ancestral ``clip_x0``."""
    cfg = run.config
    network = getattr(getattr(cfg, "model", None), "network", None)
    if cfg.family != "ddpm" or network is not Network.DIFFUSERS or not isinstance(run.model, DiffusersUNet):
        raise ValueError(f"{run.folder}: export --format diffusers needs a DDPM run whose network is diffusers' "
                         f"UNet2DModel (model.network = \"diffusers\"); this run is family {cfg.family!r} with "
                         f"network {getattr(network, 'value', network)!r}")
    clip = bool(cfg.sample.options["ancestral"].clip_x0)
    model = run.model.to("cpu").float().eval()
    return export_diffusers(model, run.family.diffusion(cfg), folder, clip_x0=clip)
