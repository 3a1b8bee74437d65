"""The VDM training objective for elbolab's Trainer, with the variance-minimising schedule update.

Kingma, Salimans, Poole & Ho 2021, Sec. 5.2: the network and the schedule's endpoints gamma_0, gamma_1
minimise the bound L = E[reconstruction + prior + denoising]; the *shape* of gamma between its endpoints does
not change the continuous-time bound (Sec. 5.1, for a network conditioned on gamma, see
:mod:`elbolab.vdm.model`) but it does change the variance of its one-sample estimator ell(x, t, eps), so the
shape parameters eta minimise E[ell^2] instead. Because E[ell] does not depend on eta,
grad_eta E[ell^2] = grad_eta Var[ell]; for discrete T the bound depends (slightly) on the shape and the update
is VDM's heuristic.

One backward pass does both. eta reaches the loss only through the shape tensors s(t_i), s'(t_i) of each
example i (:class:`~elbolab.vdm.schedules.GammaAt`). The gradient that flows back into them from the batch
mean (1/B) sum_i ell_i is (1/B) d ell_i / d s_i; multiplied by 2 ell_i it becomes (1/B) d ell_i^2 / d s_i, the
gradient of the batch mean of ell^2. :func:`scale_shape_gradient` does that with a tensor hook (the factor
2 ell_i is only known after the network's forward pass, so it is attached once the loss is computed); the
endpoints and the network, whose gradients do not pass through s, get the gradient of the bound unchanged.
The cost is the same as training on the bound alone (VDM's "negligible overhead").

Units: the loss is the bound's batch mean in bits/dim; the shape descends on E[ell_bpd^2] with ell_bpd the
per-example denoising term in bits/dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from elbolab.math import num_dims
from elbolab.objectives import LossOutput, Objective
from elbolab.vdm.elbo import TimeSampling, VDMDecoder, loss_terms, parse_decoder, parse_time_sampling
from elbolab.vdm.model import VDMModel

__all__ = ["VDMObjective", "scale_shape_gradient"]


def scale_shape_gradient(shape: tuple[Tensor, ...], scale: Tensor) -> None:
    """Multiply the gradient flowing back into each ``(B,)`` tensor of ``shape`` by ``scale: (B,)`` (detached).

    Registers a hook per tensor (nothing to do for tensors that do not require grad, e.g. under no_grad).
    """
    scale = scale.detach()
    for s in shape:
        if s.requires_grad:
            s.register_hook(lambda g, c=scale: g * c.to(g.dtype))


class VDMObjective(Objective):
    """The loss of a :class:`~elbolab.vdm.model.VDMModel` (an :class:`elbolab.objectives.Objective`).

    ``loss(model, x, y, generator)``: ``x: (B, C, H, W)`` in [-1, 1] (8-bit data for the ``softmax`` decoder)
    or ``(B, D)``; one draw of (t, eps_0, eps) per example (t on VDM's low-discrepancy lattice by default);
    returns the batch mean of the bound in bits/dim. ``T = 0``: continuous time; ``T >= 1``: the discrete
    bound L_T. ``variance_reduction``: the shape parameters descend on E[ell^2] (module docstring); False
    trains every parameter on the bound. Metrics: ``loss``, ``bpd`` (= loss), ``reconstruction_bpd``,
    ``prior_bpd``, ``denoising_bpd``, ``denoising_var`` (the batch variance of the per-example denoising term,
    bits/dim squared: the estimator variance the shape minimises), ``gamma_0``, ``gamma_1``.

    The objective keeps no state between steps (``state_dict()`` is empty, :class:`~elbolab.objectives.Stateful`);
    the schedule lives in the model.
    """

    def __init__(
        self,
        T: int = 0,
        decoder: VDMDecoder | str = VDMDecoder.SOFTMAX,
        time_sampling: TimeSampling | str = TimeSampling.LOW_DISCREPANCY,
        variance_reduction: bool = True,
        num_bins: int = 256,
    ) -> None:
        if isinstance(T, bool) or not isinstance(T, int) or T < 0:
            raise ValueError(f"T = {T!r} must be 0 (continuous time) or an integer >= 1")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"num_bins = {num_bins!r} must be an integer >= 2")
        self.T = T
        self.decoder = parse_decoder(decoder)
        self.time_sampling = parse_time_sampling(time_sampling)
        self.variance_reduction = bool(variance_reduction)
        self.num_bins = num_bins

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        """x: (B, C, H, W) float in [-1, 1] (or (B, D) toy data); y: (B,) long labels or None."""
        if not isinstance(model, VDMModel):
            raise TypeError(f"VDMObjective needs a VDMModel (denoiser + schedule), got {type(model).__name__}")
        terms = loss_terms(model, x, y, generator, T=self.T, decoder=self.decoder,
                           time_sampling=self.time_sampling, num_bins=self.num_bins)
        bpd = terms.bpd(num_dims(x))
        loss = bpd["total"].mean()
        if self.variance_reduction:
            scale_shape_gradient(terms.at.shape, 2.0 * bpd["denoising"])
        g0, g1 = model.schedule.endpoints()
        metrics = {
            "loss": float(loss.detach()),
            "bpd": float(loss.detach()),
            "reconstruction_bpd": float(bpd["reconstruction"].detach().mean()),
            "prior_bpd": float(bpd["prior"].detach().mean()),
            "denoising_bpd": float(bpd["denoising"].detach().mean()),
            "denoising_var": float(bpd["denoising"].detach().var()) if x.shape[0] > 1 else 0.0,
            "gamma_0": float(g0.detach()),
            "gamma_1": float(g1.detach()),
        }
        return LossOutput(loss=loss, metrics=metrics)
