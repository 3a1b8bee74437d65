"""Variational diffusion models (Kingma, Salimans, Poole & Ho 2021) in continuous time.

- :mod:`~elbolab.vdm.schedules`: gamma = -log SNR, the fixed-linear and the learned monotone schedule.
- :mod:`~elbolab.vdm.model`: :class:`VDMModel`, the eps-network and its schedule as one module.
- :mod:`~elbolab.vdm.elbo`: the bound's terms (reconstruction, prior, L_inf or L_T), low-discrepancy t,
  :func:`~elbolab.vdm.elbo.elbo_terms` in bits/dim as elbolab's ``ELBOTerms``.
- :mod:`~elbolab.vdm.objective`: :class:`VDMObjective` for the Trainer, with the variance-minimising
  schedule update.
- :mod:`~elbolab.vdm.weighting`: every diffusion objective's weighting w(lambda) (Kingma & Gao 2023).
- :mod:`~elbolab.vdm.oracles`: closed forms for Gaussian data.
Fourier features of the input are :class:`elbolab.nn.fourier.InputFourierFeatures`.
"""

from elbolab.vdm.elbo import (
    TimeSampling,
    VDMDecoder,
    VDMLossTerms,
    elbo_terms,
    loss_terms,
    low_discrepancy_times,
)
from elbolab.vdm.model import VDMModel
from elbolab.vdm.objective import VDMObjective, scale_shape_gradient
from elbolab.vdm.schedules import (
    FixedLinearSchedule,
    GammaAt,
    GammaSchedule,
    LearnedMonotoneSchedule,
    alpha_sigma,
)
from elbolab.vdm.weighting import Weighting, weight, weighted_loss

__all__ = [
    "FixedLinearSchedule",
    "GammaAt",
    "GammaSchedule",
    "LearnedMonotoneSchedule",
    "TimeSampling",
    "VDMDecoder",
    "VDMLossTerms",
    "VDMModel",
    "VDMObjective",
    "Weighting",
    "alpha_sigma",
    "elbo_terms",
    "loss_terms",
    "low_discrepancy_times",
    "scale_shape_gradient",
    "weight",
    "weighted_loss",
]
