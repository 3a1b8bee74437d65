"""Model families behind the generic run operations (:mod:`elbolab.runs`): one module per family."""

from __future__ import annotations

from elbolab.config import Family
from elbolab.families.base import BoundFn, FamilySpec, SampleBatch, SampleRequest


def family_spec(family: Family | str) -> FamilySpec:
    """The :class:`FamilySpec` of ``family`` (imported lazily: a family pulls in only its own modules)."""
    family = Family(family)
    if family is Family.DDPM:
        from elbolab.families.ddpm import DDPMFamily

        return DDPMFamily()
    if family is Family.NCSN:
        from elbolab.families.ncsn import NCSNFamily

        return NCSNFamily()
    if family is Family.GAN:
        from elbolab.families.gan import GANFamily

        return GANFamily()
    if family in (Family.VAE, Family.HVAE, Family.AE):
        from elbolab.families.vae import VAEFamily

        return VAEFamily(family)
    raise ValueError(f"family {family.value!r} has no run support; choices: {', '.join(f.value for f in Family)}")


__all__ = ["BoundFn", "FamilySpec", "SampleBatch", "SampleRequest", "family_spec"]
