"""The family registry: every model family is one module that registers a :class:`ModelFamily` instance.

``register(family)`` adds a family (its name must be new); ``get_family(name)`` looks one up, with an error
that lists the registered names; ``register_preset_dir(folder)`` adds a folder of ``<preset>.toml`` files to
the presets that ``elbolab train NAME`` finds (the package's own ``elbolab/configs`` always comes first).
The built-in families are registered by importing :mod:`elbolab.families.builtin` (one line per family).
"""

from __future__ import annotations

from pathlib import Path

from elbolab.config import ConfigError
from elbolab.families.base import (BoundFn, Capabilities, DiagnosticsRequest, ModelFamily, NoOptions, SampleBatch,
                                   SampleRequest, SamplerSpec, options_kwargs)

_REGISTRY: dict[str, ModelFamily] = {}
_PRESET_DIRS: list[Path] = [Path(__file__).resolve().parent.parent / "configs"]
_BUILTIN_LOADED = False


def _load_builtin() -> None:
    global _BUILTIN_LOADED
    if not _BUILTIN_LOADED:
        _BUILTIN_LOADED = True
        import elbolab.families.builtin  # noqa: F401  (each family module registers itself)


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to the registry under ``family.name``; a second family of the same name is an error."""
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register() takes a ModelFamily instance, got {type(family).__name__}")
    name = family.name
    if name in _REGISTRY and type(_REGISTRY[name]) is not type(family):
        raise ValueError(f"family {name!r} is already registered (by {type(_REGISTRY[name]).__name__})")
    if family.default_sampler and family.default_sampler not in family.samplers:
        raise ValueError(f"family {name!r}: default_sampler {family.default_sampler!r} is not in its samplers "
                         f"({', '.join(family.samplers)})")
    _REGISTRY[name] = family
    return family


def unregister(name: str) -> None:
    """Remove a family (tests that register a toy family clean up with this)."""
    _REGISTRY.pop(name, None)


def get_family(name: str) -> ModelFamily:
    """The registered family called ``name`` (a ConfigError lists the registered names)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"family = {name!r} is not a registered family; choices: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_families() -> list[ModelFamily]:
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def family_names() -> list[str]:
    return [f.name for f in all_families()]


def register_preset_dir(folder: str | Path) -> None:
    """Let ``elbolab train NAME`` find ``folder/NAME.toml`` (a family outside the package ships its presets)."""
    folder = Path(folder).resolve()
    if folder not in _PRESET_DIRS:
        _PRESET_DIRS.append(folder)


def unregister_preset_dir(folder: str | Path) -> None:
    folder = Path(folder).resolve()
    if folder in _PRESET_DIRS[1:]:
        _PRESET_DIRS.remove(folder)


def preset_paths() -> dict[str, Path]:
    """Preset name -> TOML file, over every registered preset folder (earlier folders win)."""
    out: dict[str, Path] = {}
    for folder in _PRESET_DIRS:
        for path in sorted(folder.glob("*.toml")):
            out.setdefault(path.stem, path)
    return out


__all__ = ["BoundFn", "Capabilities", "DiagnosticsRequest", "ModelFamily", "NoOptions", "SampleBatch",
           "SampleRequest", "SamplerSpec", "all_families", "family_names", "get_family", "options_kwargs",
           "preset_paths", "register", "register_preset_dir", "unregister", "unregister_preset_dir"]
