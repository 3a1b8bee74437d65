"""Shared fixtures of the application tests: short diffusions and Gaussian data with exact oracles."""

import pytest
from apps_helpers import correlated_gaussian, scaled_linear

from elbolab.diffusion import GaussianDiffusion, GaussianOracle


@pytest.fixture
def make_diffusion():
    def make(T: int = 100, **kwargs) -> GaussianDiffusion:
        return GaussianDiffusion(scaled_linear(T), **kwargs)

    return make


@pytest.fixture
def gaussian_oracle(make_diffusion):
    """``(oracle, diffusion, mean, cov)``: exact eps-model for 8-dim Gaussian "images" (B, 1, 2, 4), T = 100."""
    d = make_diffusion(100)
    mean, cov = correlated_gaussian(8)
    return GaussianOracle(mean, cov, d), d, mean, cov
