"""Typed configuration: the shared sections of a run, type-checked coercion, TOML load/save, ``--set`` overrides.

A run is a :class:`RunConfig`: its ``family`` (a name in the family registry, :mod:`elbolab.families`), the
sections every family shares (``data``, ``train``, ``sample``) and one ``model`` section whose type the family
owns (e.g. the DDPM family's ``DDPMConfig`` with ``[model.unet]`` and ``[model.diffusion]``). A preset TOML holds
only what its family reads. Closed option sets are ``str`` Enums, so TOML stays readable (``precision = "bf16"``)
while the code compares against members. Every value from outside (TOML, ``--set key=value``, keyword
arguments) goes through :func:`coerce`, which names the field, the bad value and what is allowed; range checks
live next to the fields, in each section's ``validate(prefix)`` method, which :func:`from_dict` calls.

Presets are the TOML files in ``elbolab/configs/`` (shipped in the wheel; ``configs/`` in the repository is the
same folder); families may register more preset folders.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import tomli_w

from elbolab.errors import ExitCode
from elbolab.io import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and lists what is allowed."""

    exit_code = ExitCode.CONFIG


# --------------------------------------------------------------------------------------------------
# Closed option sets shared by every family
# --------------------------------------------------------------------------------------------------
class Precision(str, enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # bf16 autocast (the one optimisation that pays on this CPU, see perf-notes)


class LRSchedule(str, enum.Enum):
    """Decay of the learning rate over the run's budget (after the linear warm-up)."""

    CONSTANT = "constant"
    COSINE = "cosine"  # lr_min + (lr - lr_min) (1 + cos(pi p)) / 2 at budget fraction p (Loshchilov & Hutter 2017)
    LINEAR = "linear"  # lr_min + (lr - lr_min) (1 - p)


# --------------------------------------------------------------------------------------------------
# Range checks, called from the sections' validate(prefix) methods
# --------------------------------------------------------------------------------------------------
def check_range(obj: Any, prefix: str, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Raise :class:`ConfigError` naming ``prefix.field`` when a ``positive`` field is <= 0 or a
    ``non_negative`` field is < 0."""
    name = (lambda f: f"{prefix}.{f}") if prefix else (lambda f: f)
    for f in positive:
        if getattr(obj, f) <= 0:
            raise ConfigError(f"{name(f)} = {getattr(obj, f)!r} must be > 0")
    for f in non_negative:
        if getattr(obj, f) < 0:
            raise ConfigError(f"{name(f)} = {getattr(obj, f)!r} must be >= 0")


def check_choice(value: Any, choices: tuple[Any, ...], key: str) -> None:
    """Raise :class:`ConfigError` when ``value`` is not one of ``choices`` (a closed set that is not an Enum)."""
    if value not in choices:
        raise ConfigError(f"{key} = {value!r}: expected one of {', '.join(repr(c) for c in choices)}")


# --------------------------------------------------------------------------------------------------
# Shared sections
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
    image_size: int = 0  # 0 keeps the dataset's own size (imagefolder: the images' common size)
    channels: int = 0  # 0 keeps the dataset's own channels; 1 = grey, 3 = RGB
    dequantize: bool = False  # uniform dequantisation of 8-bit data
    limit: int = 0  # use only the first N examples (0 = all)
    holdout: int = 1000  # examples held out from a single-split dataset for evaluation
    on_error: str = "fail"  # imagefolder: "fail" or "skip" unreadable files

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, non_negative=("image_size", "channels", "limit", "holdout"))
        check_choice(self.on_error, ("fail", "skip"), f"{prefix}.on_error")
        check_choice(self.channels, (0, 1, 3), f"{prefix}.channels")
        check_choice(self.split, ("train", "test"), f"{prefix}.split")


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
    tensorboard: bool = False  # also write scalars and sample grids to RUN/tensorboard/ (pip install elbolab[tensorboard])

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("batch_size", "lr", "log_every", "checkpoint_every"),
                    non_negative=("weight_decay", "warmup_steps", "grad_clip", "steps", "epochs", "minutes",
                                  "sample_every", "num_workers"))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"{prefix}.ema_decay = {self.ema_decay!r} must be in [0, 1)")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError(f"{prefix}.lr_min_ratio = {self.lr_min_ratio!r} must be in [0, 1]")


@dataclass
class SampleConfig:
    """How a run samples by default (sample grids, ``elbolab sample``).

    ``sampler``: a name from the family's sampler table ("" = the family's default); ``options``: sampler name ->
    that sampler's options dataclass, written as ``[sample.<sampler>]`` tables (e.g. ``[sample.ddim]`` with
    ``steps`` and ``eta``); after loading it holds every sampler of the family (defaults filled in).
    ``guidance``: the classifier-free guidance weight w of a class-conditional run when a request names neither a
    label nor a weight (Ho & Salimans 2022, eq. 6): -1 = the null class (unconditional, the default), 0 = the
    conditional model with labels cycling through the classes, w > 0 = guided; only families with
    ``supports_guidance`` accept a value other than -1.
    """

    sampler: str = ""
    n: int = 64
    precision: Precision = Precision.FP32  # bf16: network forwards under autocast (2x faster on CPU, nn.precision)
    guidance: float = -1.0
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("n",))
        if not math.isfinite(self.guidance):
            raise ConfigError(f"{prefix}.guidance = {self.guidance!r} must be a finite number (-1: unconditional, "
                              "0: conditional, > 0: guided)")

    def to_config_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sampler": self.sampler, "n": self.n, "precision": self.precision.value,
                               "guidance": self.guidance}
        for name, opts in self.options.items():
            out[name] = to_dict(opts)
        return out


_SAMPLE_KEYS = ("sampler", "n", "precision", "guidance")


@dataclass
class RunConfig:
    """Everything a training run needs; written to ``config.toml`` in the run folder.

    ``model``: the family's own config dataclass (``None`` = the family's defaults)."""

    family: str = "ddpm"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    model: Any = None

    def __post_init__(self) -> None:
        from elbolab.families import get_family

        fam = get_family(self.family)  # ConfigError listing the registered families
        if self.model is None:
            self.model = fam.config_cls()
        elif not isinstance(self.model, fam.config_cls):
            raise ConfigError(f"family {self.family!r} takes a model section of type {fam.config_cls.__name__}, "
                              f"got {type(self.model).__name__}")
        self.sample = complete_sample_config(self.sample, fam)

    def to_config_dict(self) -> dict[str, Any]:
        return {"family": self.family, "data": to_dict(self.data), "train": to_dict(self.train),
                "sample": to_dict(self.sample), "model": to_dict(self.model)}

    @classmethod
    def from_config_dict(cls, data: dict[str, Any], prefix: str = "") -> RunConfig:
        from elbolab.families import get_family
        from elbolab.families.legacy import is_legacy, upgrade_legacy

        family = data.get("family", cls.family)
        if not isinstance(family, str):
            raise ConfigError(f"family = {family!r} is not valid: expected a family name")
        fam = get_family(family)
        if is_legacy(data):
            data = upgrade_legacy(data, fam)
        valid = ("family", "data", "train", "sample", "model")
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)} at the top level; valid keys: "
                              f"{', '.join(valid)} (family {family!r} reads [model] with "
                              f"{', '.join(_field_types(fam.config_cls))})")
        for k in ("data", "train", "sample", "model"):
            if k in data and not isinstance(data[k], dict):
                raise ConfigError(f"{k} = {data[k]!r} is not valid: expected a section ([{k}])")
        sample = sample_config_from_dict(data.get("sample", {}), fam, "sample")
        return cls(family=family,
                   data=from_dict(DataConfig, data.get("data", {}), "data"),
                   train=from_dict(TrainConfig, data.get("train", {}), "train"),
                   sample=sample,
                   model=from_dict(fam.config_cls, data.get("model", {}), "model"))


def sample_config_from_dict(data: dict[str, Any], fam: Any, prefix: str = "sample") -> SampleConfig:
    """``[sample]`` of a run of family ``fam``: its own keys plus one ``[sample.<sampler>]`` table per sampler."""
    common = {k: v for k, v in data.items() if k in _SAMPLE_KEYS}
    cfg = from_dict(SampleConfig, common, prefix)
    options: dict[str, Any] = {}
    for name, value in data.items():
        if name in _SAMPLE_KEYS:
            continue
        if name not in fam.samplers:
            raise ConfigError(f"{prefix}.{name}: {name!r} is not a key of [sample] nor a sampler of family "
                              f"{fam.name!r}; keys: {', '.join(_SAMPLE_KEYS)}; samplers: "
                              f"{', '.join(fam.samplers) or 'none'}")
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}.{name} = {value!r}: expected a table of the options of sampler {name!r} "
                              f"({', '.join(_field_types(fam.samplers[name].options)) or 'it has none'})")
        options[name] = from_dict(fam.samplers[name].options, value, f"{prefix}.{name}")
    return complete_sample_config(dataclasses.replace(cfg, options=options), fam)


def complete_sample_config(cfg: SampleConfig, fam: Any) -> SampleConfig:
    """``cfg`` with the family's default sampler when none is named and every sampler's options filled in."""
    sampler = cfg.sampler or fam.default_sampler
    if sampler and sampler not in fam.samplers:
        raise ConfigError(f"sample.sampler = {sampler!r} is not a sampler of family {fam.name!r}; choices: "
                          f"{', '.join(fam.samplers) or 'none (this family cannot sample)'}")
    unknown = sorted(set(cfg.options) - set(fam.samplers))
    if unknown:
        raise ConfigError(f"sample options for {', '.join(unknown)}: not samplers of family {fam.name!r}; "
                          f"samplers: {', '.join(fam.samplers) or 'none'}")
    if cfg.guidance != -1.0 and not getattr(fam, "supports_guidance", False):
        raise ConfigError(f"sample.guidance = {cfg.guidance!r}: family {fam.name!r} has no classifier-free guidance "
                          "(leave it at -1)")
    options = {name: cfg.options.get(name) or spec.options() for name, spec in fam.samplers.items()}
    return dataclasses.replace(cfg, sampler=sampler, options=options)


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
    """Build config dataclass ``cls`` from a (nested) dict, checking every key and value.

    A class with a ``from_config_dict(data, prefix)`` classmethod builds itself (``RunConfig``); every section's
    ``validate(prefix)`` runs after it is built."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} = {data!r} is not valid: expected a section")
    custom = getattr(cls, "from_config_dict", None)
    if custom is not None:
        return custom(data, prefix)
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(sorted(types_)) or 'none'}"
        )
    kwargs = {k: coerce(v, types_[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate(obj, prefix)
    return obj


def validate(obj: Any, prefix: str = "") -> None:
    """Run ``obj.validate(prefix)`` when the section has range checks (raises :class:`ConfigError`)."""
    check = getattr(obj, "validate", None)
    if check is not None:
        check(prefix)


def to_dict(obj: Any) -> dict[str, Any]:
    """Config dataclass -> plain dict of TOML-representable values (Enums become their values)."""
    custom = getattr(obj, "to_config_dict", None)
    if custom is not None:
        return custom()
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
# --set overrides
# --------------------------------------------------------------------------------------------------
def parse_options(items: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``["key=value", ...]`` (a CLI's repeated ``flag``) as ``{key: value}``, each value parsed as a TOML scalar
    (``3`` an int, ``0.5`` a float, ``true`` a bool, else the string); a :class:`ConfigError` names an item
    without ``=``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r}: expected key=value, e.g. {flag} eta=0.5")
        out[key.strip()] = _parse_scalar(value.strip())
    return out


def _parse_scalar(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as a TOML value, falling back to a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _model_sections(data: dict[str, Any]) -> list[str]:
    """The sub-sections of the ``[model]`` section of the family named in a RunConfig dict."""
    from elbolab.families import get_family

    return list(_field_types(get_family(data.get("family", RunConfig.family)).config_cls))


def _resolve_key(cfg: Any, data: dict[str, Any], path: list[str]) -> list[str]:
    """A run's model sections may be named without ``model.``: ``unet.base_channels`` is
    ``model.unet.base_channels`` for a DDPM run."""
    if isinstance(cfg, RunConfig) and path[0] not in _field_types(RunConfig) and path[0] in _model_sections(data):
        return ["model", *path]
    return path


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Return a copy of ``cfg`` with ``["train.lr=1e-3", "unet.channel_mults=[1,2]"]`` applied, type-checked.

    ``family=NAME`` first switches the run to another family (its model section starts from that family's
    defaults)."""
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
        key, text = item.split("=", 1)
        key = key.strip()
        path = _resolve_key(cfg, data, key.split("."))
        if path == ["family"] and isinstance(cfg, RunConfig):
            data = {**data, "family": _parse_scalar(text.strip()), "model": {}, "sample": {}}
            continue
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                if i == 0 and not (isinstance(cfg, RunConfig) and part in ("model",)):
                    valid = sorted(node)
                    raise ConfigError(f"--set {key}: unknown key {part!r} at the top level; valid keys: "
                                      f"{', '.join(valid)}" + _model_hint(cfg, data))
                child = node[part] = {}  # a new sampler's options table, checked when the config is rebuilt
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"--set {key}: {key} is a section; set one of its keys, e.g. {key}.<key>")
        node[path[-1]] = _parse_scalar(text.strip())
    try:
        return from_dict(type(cfg), data)
    except ConfigError as e:
        raise ConfigError(f"--set: {e}") from None


def _model_hint(cfg: Any, data: dict[str, Any]) -> str:
    if isinstance(cfg, RunConfig):
        return (f" (family {data.get('family')!r} also takes its model sections with or without 'model.': "
                f"{', '.join(_model_sections(data))})")
    return ""


# --------------------------------------------------------------------------------------------------
# TOML
# --------------------------------------------------------------------------------------------------
def dumps_toml(cfg: Any) -> str:
    """Serialise a config dataclass to TOML text (``tomli-w``: scalars first, then one table per section)."""
    return tomli_w.dumps(to_dict(cfg))


def save_toml(cfg: Any, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, dumps_toml(cfg))


def load_toml(path: str | os.PathLike[str], cls: type = RunConfig) -> Any:
    """Read a TOML file into ``cls``; a syntax error or bad value names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8); expected a TOML config") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------
def preset_names() -> list[str]:
    """Names of the presets of every registered preset folder (``elbolab/configs`` and the families' own)."""
    from elbolab.families import preset_paths

    return sorted(preset_paths())


def preset_path(name: str) -> Path:
    from elbolab.families import preset_paths

    paths = preset_paths()
    if name not in paths:
        raise ConfigError(f"unknown preset {name!r}; choices: {', '.join(sorted(paths))}")
    return paths[name]


def preset(name: str) -> RunConfig:
    """A named run preset, e.g. ``preset("ddpm-mnist")`` (the TOML file ``configs/ddpm-mnist.toml``)."""
    return load_toml(preset_path(name), RunConfig)


def load_run_config(spec: str) -> RunConfig:
    """``spec`` is a preset name or a path to a TOML file."""
    names = preset_names()
    if spec in names:
        return preset(spec)
    if spec.endswith(".toml") or os.path.exists(spec):
        return load_toml(spec, RunConfig)
    raise ConfigError(f"{spec!r} is neither a preset ({', '.join(names)}) nor a TOML file")


__all__ = ["ConfigError", "DataConfig", "LRSchedule", "Precision", "RunConfig", "SampleConfig", "TrainConfig",
           "apply_overrides", "check_choice", "check_range", "coerce", "dumps_toml", "from_dict", "load_run_config",
           "parse_options",
           "load_toml", "preset", "preset_names", "preset_path", "save_toml", "to_dict", "validate"]
