"""Reading ``config.toml`` files of run format 1 (elbolab 0.1: every run carried every family's section).

Format 1 had the top-level sections ``[unet] [diffusion] [score] [vae] [gan]`` for every family, and one
``[sample]`` table with every sampler's settings (``sampler, steps, eta, spacing, corrector_steps, snr``).
:func:`upgrade_legacy` keeps the sections the run's family reads, as its ``[model]`` section, and turns the
sampler settings into one ``[sample.<sampler>]`` table per sampler of the family (each sampler takes the
settings it has: ``steps`` applied to whichever sampler ran, as in format 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from elbolab.config import _SAMPLE_KEYS

LEGACY_SECTIONS = ("unet", "diffusion", "score", "vae", "gan")
LEGACY_SAMPLE_KEYS = ("sampler", "steps", "eta", "spacing", "n", "corrector_steps", "snr", "precision")


def is_legacy(data: dict[str, Any]) -> bool:
    """True for a format-1 config: a family section at the top level and no ``[model]``."""
    return "model" not in data and any(k in data for k in LEGACY_SECTIONS)


def upgrade_legacy(data: dict[str, Any], family: Any) -> dict[str, Any]:
    """A format-1 config dict as a current one, for ``family`` (a :class:`~elbolab.families.ModelFamily`)."""
    out = {k: v for k, v in data.items() if k not in LEGACY_SECTIONS}
    model_fields = [f.name for f in dataclasses.fields(family.config_cls)]
    out["model"] = family.upgrade_legacy_model({k: data[k] for k in LEGACY_SECTIONS if k in data}, model_fields)
    if "sample" in data:
        out["sample"] = family.upgrade_legacy_sample(dict(data["sample"]))
    return out


def legacy_model(sections: dict[str, Any], model_fields: list[str]) -> dict[str, Any]:
    """The default mapping: the model section's sub-sections are the format-1 sections of the same name."""
    return {name: sections[name] for name in model_fields if name in sections}


def legacy_sample(sample: dict[str, Any], family: Any) -> dict[str, Any]:
    """Format-1 ``[sample]`` -> ``[sample]`` with ``[sample.<sampler>]`` tables (each sampler takes the keys it has)."""
    out = {k: v for k, v in sample.items() if k in _SAMPLE_KEYS}
    settings = {k: v for k, v in sample.items() if k not in _SAMPLE_KEYS}
    for name, spec in family.samplers.items():
        fields = {f.name for f in dataclasses.fields(spec.options)}
        out[name] = {k: v for k, v in settings.items() if k in fields}
    if out.get("sampler") not in family.samplers:
        out.pop("sampler", None)
    return out
