"""Training objectives of the VAE family, implementing :class:`elbolab.objectives.Objective`.

- :class:`ELBOObjective` (VAE and Markovian HVAE): minimise ``-(reconstruction - beta_t * sum_l KL_l)`` per
  example, averaged over the batch, where

  * ``beta_t = beta * min(1, step / kl_warmup_steps)`` is the KL warm-up of Bowman et al. 2016 / Sonderby et al.
    2016 (``step`` counts the objective's training-mode calls; ``state_dict``/``load_state_dict`` let the
    Trainer checkpoint it so a resumed run continues the ramp);
  * free bits (Kingma et al. 2016, Appendix C.8): each latent dimension's batch-averaged KL counts as at least
    ``free_bits`` nats, ``sum_j max(free_bits, mean_B KL_{l,j})``; off at 0;
  * ``init_decoder_bias``: the first training-mode call (``step == 0``; not after a resume) first sets the
    decoder's output bias from the batch's mean image (:meth:`~elbolab.vae.LatentVariableModel.init_decoder_bias_`,
    the data-dependent initialisation of Burda et al. 2016's code). Off by default here; ``VAEConfig`` turns
    it on for the runs that ``elbolab train`` and :func:`~elbolab.vae.build_objective` build.

  The logged ``elbo``/``bpd`` are always the true ELBO (beta = 1, no free bits).
- :class:`AEObjective`: the plain autoencoder's L2 reconstruction loss (notes 004).

Data arrive in [-1, 1]; the objective turns them into likelihood targets with the generator (Bernoulli:
dynamic binarisation of every batch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elbolab.math import nats_to_bpd
from elbolab.objectives import LossOutput, Objective

__all__ = ["ELBOObjective", "AEObjective"]


class ELBOObjective(Objective):
    """Negative (beta-weighted, warmed-up, free-bits) ELBO of a VAE or HVAE; per-term metrics in nats."""

    def __init__(self, beta: float = 1.0, kl_warmup_steps: int = 0, free_bits: float = 0.0,
                 init_decoder_bias: bool = False) -> None:
        if not beta > 0:
            raise ValueError(f"ELBOObjective: beta = {beta!r} must be > 0")
        if kl_warmup_steps < 0:
            raise ValueError(f"ELBOObjective: kl_warmup_steps = {kl_warmup_steps!r} must be >= 0")
        if free_bits < 0:
            raise ValueError(f"ELBOObjective: free_bits = {free_bits!r} must be >= 0 (nats per latent dimension)")
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.init_decoder_bias = bool(init_decoder_bias)
        self.step = 0  # training-mode loss evaluations so far (drives the KL warm-up)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"ELBOObjective.load_state_dict: step = {step!r} must be an integer >= 0")
        self.step = step

    def kl_weight(self, step: int) -> float:
        """``beta_t = beta * min(1, step / kl_warmup_steps)`` (``beta`` when warm-up is off)."""
        if self.kl_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def penalised_kl(self, kl_per_dim: Tensor) -> Tensor:
        """Batch-mean KL of one layer, ``kl_per_dim: (B, J) -> ()``, with free bits applied per dimension."""
        mean_per_dim = kl_per_dim.mean(0)
        if self.free_bits > 0:
            mean_per_dim = torch.clamp(mean_per_dim, min=self.free_bits)
        return mean_per_dim.sum()

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        training = model.training and torch.is_grad_enabled()
        if training and self.step == 0 and self.init_decoder_bias:
            init = getattr(model, "init_decoder_bias_", None)  # a LatentVariableModel's
            if init is not None:
                init(x)  # data-dependent initialisation, before the first update
        target = model.likelihood.prepare(x, generator)
        terms = model.elbo(target, generator)
        weight = self.kl_weight(self.step)
        kl_penalty = sum(self.penalised_kl(k) for k in terms.kl_per_dim)
        loss = -terms.reconstruction.mean() + weight * kl_penalty
        if training:
            self.step += 1
        with torch.no_grad():
            kl = terms.kl.mean(0)
            elbo = terms.elbo.mean()
            dims = math.prod(model.image_shape)
            metrics = {
                "elbo": float(elbo),
                "bpd": float(nats_to_bpd(-elbo, dims)),
                "reconstruction": float(terms.reconstruction.mean()),
                "kl": float(kl.sum()),
                "kl_weight": weight,
            }
            for layer, value in enumerate(kl.tolist(), start=1):
                metrics[f"kl_{layer}"] = value
        return LossOutput(loss=loss, metrics=metrics)


class AEObjective(Objective):
    """Plain autoencoder: mean squared error between input and reconstruction (notes 004, "L2 distance")."""

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        mse = model.reconstruction_error(x).mean()
        return LossOutput(loss=mse, metrics={"mse": float(mse.detach())})
