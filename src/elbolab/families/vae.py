"""The VAE family (``family = "vae"``, ``"hvae"``, ``"ae"``): VAE, Markovian HVAE and the plain autoencoder of
:mod:`elbolab.vae`, trained on the (negative, warmed-up) ELBO or the L2 reconstruction loss.

Samples are one decoder pass from the prior (nfe = 1; an autoencoder has no prior and cannot sample). Bits/dim
of 8-bit data come from the discretised decoder (``vae.likelihood = "discretized"``): the ELBO split into
reconstruction and one KL per latent layer, or with ``exact`` the IWAE bound with ``vae.iwae_samples`` samples.
Other decoders (Bernoulli on binarised data, continuous Gaussians) have no 8-bit bits/dim here: their NLL in
nats comes from :func:`elbolab.vae.evaluate_likelihood`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from elbolab.config import DecoderLikelihood, Family, RunConfig
from elbolab.evaluate.bpd import BPDMethod
from elbolab.families.base import BoundFn, DropLabels, SampleBatch, SampleRequest, with_image_shape
from elbolab.vae import LatentVariableModel, build_objective, build_vae, sample_fn, vae_bound_fn



class VAEFamily:
    """Builds and samples VAE / HVAE / autoencoder runs."""

    bpd_method = BPDMethod.DISCRETIZED_GAUSSIAN.value

    def __init__(self, family: Family | str = Family.VAE) -> None:
        self.family = Family(family)

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        return dataclasses.replace(cfg, vae=with_image_shape(cfg.vae, image_shape, "VAE"))

    def build_model(self, cfg: RunConfig) -> nn.Module:
        v = cfg.vae
        return build_vae(v, (v.in_channels, v.image_size, v.image_size), self.family)

    def build_objective(self, cfg: RunConfig) -> DropLabels:
        return DropLabels(build_objective(cfg.vae, self.family))  # unconditional: labels are not used

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        if not isinstance(model, LatentVariableModel):
            raise ValueError(f"family {self.family.value!r} cannot sample: a plain autoencoder has no prior "
                             "(train family 'vae' or 'hvae' to sample new images)")
        if request.guidance is not None or request.label is not None:
            raise ValueError("--guidance / --label need a class-conditional diffusion run; a VAE is unconditional")
        if request.sampler is not None or request.steps is not None or request.eta is not None:
            raise ValueError("a VAE samples in one decoder pass: --sampler, --steps and --eta do not apply")
        return SampleBatch(images=sample_fn(model, n, generator), labels=None, nfe=1, method="prior")

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        if not isinstance(model, LatentVariableModel) or cfg.vae.likelihood is not DecoderLikelihood.DISCRETIZED:
            return None
        return vae_bound_fn(model, cfg.vae.iwae_samples if exact else 1)
