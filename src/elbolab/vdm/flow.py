"""Flow matching on the rectified-flow path as a VDM objective (Lipman et al. 2023; Liu et al. 2023).

The path z^flow_u = (1 - u) x + u eps, u in [u_0, u_1] (:class:`~elbolab.vdm.schedules.FlowSchedule`: u linear
in t, t ~ U(0, 1)), and the velocity target v = d z^flow / du = eps - x. The loss per example is the mean
squared error over the D data dimensions,

    L_flow(x) = E_{t, eps} [ ||(eps - x) - v_hat(z^flow_u; u)||^2 ] / D,

which by Kingma & Gao 2023 is the weighted ELBO with w(lambda) = e^{-lambda/2} / 2 up to the factor 2/D
(:mod:`elbolab.vdm.weighting`, ``Weighting.FLOW``; the test there checks the identity on the same x, eps, t).
The network is a :class:`~elbolab.vdm.model.VDMModel` with ``prediction = "velocity"``; it has the VDM's bound
(:func:`elbolab.vdm.elbo.elbo_terms`) like any other VDM, which is how a flow run is compared with the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.math import append_dims, num_dims, sum_flat
from elbolab.objectives import LossOutput, Objective
from elbolab.vdm.elbo import TimeSampling, parse_time_sampling, sample_times
from elbolab.vdm.model import VDMModel, VDMPrediction, flow_coordinates

__all__ = ["FlowMatchingObjective", "flow_matching_loss"]


def flow_matching_loss(model: VDMModel, x: Tensor, y: Tensor | None, generator: torch.Generator,
                       time_sampling: TimeSampling | str = TimeSampling.LOW_DISCREPANCY) -> tuple[Tensor, Tensor]:
    """(per-example loss ``(B,)`` = ||(eps - x) - v_hat||^2 / D, the flow times ``u: (B,)``); draws t, then eps."""
    B, dev = x.shape[0], x.device
    t = sample_times(B, generator, time_sampling, dev, torch.float32)
    eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
    with torch.no_grad():
        gamma = model.schedule(t).detach()
    u, _ = flow_coordinates(gamma)
    ux = append_dims(u, x.ndim).to(x.dtype)
    z_flow = (1.0 - ux) * x + ux * eps
    v_hat = model.velocity_at_gamma(z_flow, gamma, y)
    err = sum_flat(((eps - x).float() - v_hat.float()) ** 2) / num_dims(x)
    return err, u


class FlowMatchingObjective(Objective):
    """The flow-matching loss (module docstring) of a velocity-predicting :class:`VDMModel`, batch mean.

    ``x: (B, C, H, W)`` in [-1, 1] (or ``(B, D)``); t on VDM's low-discrepancy lattice by default. The schedule
    is not trained (the path is fixed). Metrics: ``loss``. Stateless.
    """

    def __init__(self, time_sampling: TimeSampling | str = TimeSampling.LOW_DISCREPANCY) -> None:
        self.time_sampling = parse_time_sampling(time_sampling)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        if not isinstance(model, VDMModel) or model.prediction is not VDMPrediction.VELOCITY:
            raise TypeError("FlowMatchingObjective needs a VDMModel with prediction = 'velocity'")
        err, _ = flow_matching_loss(model, x, y, generator, self.time_sampling)
        loss = err.mean()
        return LossOutput(loss=loss, metrics={"loss": float(loss.detach())})
