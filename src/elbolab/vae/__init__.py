"""The VAE family: VAE (one latent), Markovian hierarchical VAE (L latents), plain autoencoder baseline.

    from elbolab.vae import build_vae, build_objective, evaluate_likelihood
    model = build_vae(cfg.vae, (1, 28, 28), family=cfg.family)     # VAE | HVAE | Autoencoder
    objective = build_objective(cfg.vae, cfg.family)                # Objective for the Trainer
    report = evaluate_likelihood(model, test_batches, num_samples=5000, generator=g)  # ELBO / IWAE NLL, bits/dim

Modules: distributions (diagonal Gaussians, closed-form KL), likelihoods (decoders p(x|z)), vae (VAE,
Autoencoder), hvae (HVAE), bounds (ELBO terms, IWAE_K, active units), objectives (Trainer objectives), editing
(samples, traversals, interpolation, attribute vectors), probe (linear probe on frozen features), factory.
"""

from elbolab.vae.bounds import (
    ActiveUnits,
    ELBOTerms,
    LikelihoodReport,
    active_units,
    evaluate_likelihood,
    iwae_bound,
    vae_bound_fn,
)
from elbolab.vae.distributions import DiagonalGaussian
from elbolab.vae.editing import (
    InterpolationKind,
    attribute_vector,
    edit,
    interpolate,
    latent_traversal,
    reconstruct,
    sample_prior,
    traversal_grid,
)
from elbolab.vae.factory import VAE_FAMILIES, build_objective, build_vae, sample_fn
from elbolab.vae.hvae import HVAE
from elbolab.vae.likelihoods import Bernoulli, Discretized, GaussianFixed, GaussianLearned, Likelihood, make_likelihood
from elbolab.vae.objectives import AEObjective, ELBOObjective
from elbolab.vae.probe import ProbeResult, extract_features, linear_probe
from elbolab.vae.vae import VAE, Autoencoder, LatentVariableModel

__all__ = [
    "VAE", "HVAE", "Autoencoder", "LatentVariableModel", "DiagonalGaussian",
    "Likelihood", "Bernoulli", "GaussianFixed", "GaussianLearned", "Discretized", "make_likelihood",
    "ELBOTerms", "iwae_bound", "LikelihoodReport", "evaluate_likelihood", "ActiveUnits", "active_units", "vae_bound_fn",
    "ELBOObjective", "AEObjective", "VAE_FAMILIES", "build_vae", "build_objective", "sample_fn",
    "InterpolationKind", "reconstruct", "sample_prior", "latent_traversal", "traversal_grid", "interpolate",
    "attribute_vector", "edit", "ProbeResult", "extract_features", "linear_probe",
]
