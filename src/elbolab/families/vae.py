"""The VAE families (``family = "vae"``, ``"hvae"``, ``"ae"``): VAE, Markovian HVAE and the plain autoencoder of
:mod:`elbolab.vae`, trained on the (negative, warmed-up) ELBO or the L2 reconstruction loss.

Samples are one decoder pass from the prior (nfe = 1; an autoencoder has no prior and cannot sample). Bits/dim
of 8-bit data come from the discretised decoder (``vae.likelihood = "discretized"``): the ELBO split into
reconstruction and one KL per latent layer, or with ``exact`` the IWAE bound with ``vae.iwae_samples`` samples.
Other decoders (Bernoulli on binarised data, continuous Gaussians) have no 8-bit bits/dim here: their NLL in
nats comes from :meth:`VAEFamily.diagnostics` (``elbolab eval --iwae K``). The ``[model]`` section is
:class:`VAEModelConfig` (``[model.vae]``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from elbolab.config import RunConfig
from elbolab.evaluate.bpd import BPDMethod
from elbolab.families import register
from elbolab.families.base import (BoundFn, DiagnosticsRequest, DropLabels, ModelFamily, NoOptions, SampleBatch,
                                   SampleRequest, SamplerSpec, with_image_shape)
from elbolab.vae import LatentVariableModel, build_objective, build_vae, sample_fn, vae_bound_fn
from elbolab.vae.config import DecoderLikelihood, VAEConfig, VAEKind

if TYPE_CHECKING:
    from elbolab.runs import Run
    from elbolab.vae import ActiveUnits, LikelihoodReport, ProbeResult


@dataclass
class VAEModelConfig:
    """``[model]`` of a VAE, HVAE or autoencoder run."""

    vae: VAEConfig = field(default_factory=VAEConfig)


@dataclass
class VAEDiagnostics:
    """What ``elbolab eval --iwae K / --active-units / --probe`` measured on a VAE-family run (None: not asked)."""

    likelihood: LikelihoodReport | None = None  # on the first ``n`` test images
    active_units: ActiveUnits | None = None  # on the test split
    probe: ProbeResult | None = None  # linear probe, train split -> test split

    def to_text(self) -> str:
        lines = []
        if self.likelihood is not None:
            lines.append(self.likelihood.to_text())
        if self.active_units is not None:
            au = self.active_units
            lines.append("active units per layer: " + ", ".join(f"{c}/{d}" for c, d in zip(au.counts, au.dims)))
        if self.probe is not None:
            lines.append(f"linear probe on the encoder's code: test accuracy {self.probe.test_accuracy:.4f} "
                         f"(train {self.probe.train_accuracy:.4f}, {self.probe.num_features} features)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"likelihood": self.likelihood.to_dict() if self.likelihood is not None else None,
                "active_units": self.active_units.to_dict() if self.active_units is not None else None,
                "probe": self.probe.to_dict() if self.probe is not None else None}


def _prior_samples(model: nn.Module, n: int, generator: torch.Generator) -> torch.Tensor:
    return sample_fn(model, n, generator)


class VAEFamily(ModelFamily):
    """Builds and samples VAE / HVAE / autoencoder runs; ``kind`` picks the model (the run's family name)."""

    config_cls = VAEModelConfig
    bpd_method = BPDMethod.DISCRETIZED_GAUSSIAN.value
    tiny_overrides = ("vae.hidden_sizes=[16]", "vae.latent_dims=[4]", "vae.channels=[4,8]", "vae.conv_hidden=16",
                      "vae.layer_hidden=8", "vae.iwae_samples=4")

    def __init__(self, kind: VAEKind) -> None:
        self.kind = VAEKind(kind)
        self.name = self.kind.value
        if self.kind is VAEKind.AE:  # an autoencoder has no prior to sample and no likelihood
            self.samplers, self.default_sampler, self.bpd_method = {}, "", None
        else:
            self.samplers = {"prior": SamplerSpec(_prior_samples, NoOptions, "decoder mean of z ~ p(z)")}
            self.default_sampler = "prior"
        if self.kind is VAEKind.HVAE:
            self.tiny_overrides = tuple(o for o in VAEFamily.tiny_overrides if "latent_dims" not in o) + (
                "vae.latent_dims=[4,2]",)

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        v = with_image_shape(cfg.model.vae, image_shape, "VAE")
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vae=v))

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        v = cfg.model.vae
        return (v.in_channels, v.image_size, v.image_size)

    def build_model(self, cfg: RunConfig) -> nn.Module:
        v = cfg.model.vae
        return build_vae(v, (v.in_channels, v.image_size, v.image_size), self.kind)

    def build_objective(self, cfg: RunConfig) -> DropLabels:
        return DropLabels(build_objective(cfg.model.vae, self.kind))  # unconditional: labels are not used

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        if request.guidance is not None or request.label is not None:
            raise ValueError("--guidance / --label need a class-conditional diffusion run; a VAE is unconditional")
        name, _ = self.sampler_options(cfg, request)  # an autoencoder raises: it cannot sample
        return SampleBatch(images=self.samplers[name].fn(model, n, generator), labels=None, nfe=1, method=name)

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        if not isinstance(model, LatentVariableModel) or cfg.model.vae.likelihood is not DecoderLikelihood.DISCRETIZED:
            return None
        return vae_bound_fn(model, cfg.model.vae.iwae_samples if exact else 1)

    def diagnostics(self, run: Run, request: DiagnosticsRequest) -> VAEDiagnostics:
        """ELBO and IWAE_K NLL on the first ``n`` test images (0 = all), active units (Burda et al. 2016) and a
        linear probe of the encoder's code; an autoencoder has no likelihood and no stochastic code: only
        ``probe`` applies to it."""
        from elbolab.data import load_dataset
        from elbolab.runs import image_batches
        from elbolab.vae import active_units, evaluate_likelihood, extract_features, linear_probe

        if self.kind is VAEKind.AE and (request.iwae or request.active_units):
            raise ValueError("an autoencoder (family 'ae') has no likelihood or posterior: only --probe applies")
        if request.iwae < 0 or request.n < 0:
            raise ValueError(f"iwae = {request.iwae} and n = {request.n} must be >= 0")
        test = load_dataset(dataclasses.replace(run.config.data, split="test"))
        gen = torch.Generator(run.device).manual_seed(request.seed)
        out = VAEDiagnostics()
        model = run.model
        if request.iwae:
            m = len(test) if request.n == 0 else min(request.n, len(test))
            out.likelihood = evaluate_likelihood(model, image_batches(test, m, 100, device=run.device), request.iwae,
                                                 gen, progress=request.progress)
        if request.active_units:
            out.active_units = active_units(model, image_batches(test, len(test), 500, device=run.device), gen)
        if request.probe:
            train = load_dataset(dataclasses.replace(run.config.data, split="train"))
            f_tr, y_tr = extract_features(model, image_batches(train, len(train), 1000, with_labels=True,
                                                               device=run.device))
            f_te, y_te = extract_features(model, image_batches(test, len(test), 1000, with_labels=True,
                                                               device=run.device))
            out.probe = linear_probe(f_tr, y_tr, f_te, y_te)
        return out


for _kind in VAEKind:
    register(VAEFamily(_kind))
