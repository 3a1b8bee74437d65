"""The calibrated decoder p(x_0 | x_1) (elbolab.diffusion.decoder): a normalised distribution over the 256 values,
the fixed decoder of the ELBO when every sigma is sigma_1, and a fit that finds what an oracle allows."""

import math

import pytest
import torch
from torch import nn

from elbolab.diffusion import GaussianDiffusion, NoiseSchedule
from elbolab.diffusion.decoder import (DEFAULT_EDGES, DecoderCalibration, calibrate_decoder,
                                       calibrated_reconstruction)
from elbolab.diffusion.elbo import timestep_terms


def _eight_bit(shape, generator, background=0.8):
    """Images on the 8-bit grid in [-1, 1]: a ``background`` share at -1, the rest uniform over the 256 values."""
    k = torch.randint(0, 256, shape, generator=generator)
    k = torch.where(torch.rand(shape, generator=generator) < background, torch.zeros_like(k), k)
    return (k.double() / 127.5 - 1.0)


class OffsetOracle(nn.Module):
    """An eps-prediction "network" for known images ``x0``: its mean at t = 1 is x0 exactly on background
    pixels (x0 = -1) and x0 + ``offset`` bins elsewhere (a fixed pattern of +-offset)."""

    def __init__(self, diffusion: GaussianDiffusion, x0: torch.Tensor, offset: float):
        super().__init__()
        self.d = diffusion
        sign = torch.where(torch.arange(x0.numel()).reshape(x0.shape) % 2 == 0, 1.0, -1.0).double()
        target = torch.where(x0 == -1.0, x0, x0 + sign * offset * 2 / 255)
        self.register_buffer("target", target)

    def forward(self, x_t, t, y=None):
        abar = self.d.table("alpha_bars")[t].view(-1, 1, 1, 1).to(x_t.dtype)
        return (x_t - abar.sqrt() * self.target) / (1 - abar).sqrt()  # eps with mu_theta(x_1, 1) = target


@pytest.fixture
def diffusion():
    return GaussianDiffusion(NoiseSchedule.cosine(1000))


def test_the_calibrated_decoder_is_a_distribution_over_the_256_values():
    """sigma depends on the predicted mean only, so for every mean the probabilities of the 256 values sum to 1."""
    cal = DecoderCalibration(DEFAULT_EDGES, (1e-4, 3e-3, 7e-3, 2e-3, 5e-4), 4.7e-3, 1, 0.0, 0.0)
    values = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    for mu in (-1.2, -1.0, -1.0 + 1.3 / 255, 0.013, 1.0 - 1.1 / 255, 1.0, 1.07):
        mean = torch.full((256, 1), mu, dtype=torch.float64)
        ll = cal.log_likelihood(values[:, None], mean)  # one example per value
        assert float(ll.exp().sum()) == pytest.approx(1.0, abs=1e-9), mu


def test_all_sigmas_fixed_is_the_elbo_reconstruction_term(diffusion):
    """With every sigma = sigma_1 the calibrated L_0 is timestep_terms at t = 1 (Ho et al.'s decoder), same x_1."""
    g = torch.Generator().manual_seed(0)
    x0 = _eight_bit((4, 1, 6, 6), g)
    model = OffsetOracle(diffusion, x0, 0.7)
    fixed = math.sqrt(float(diffusion.table("reverse_variance")[1]))
    cal = DecoderCalibration(DEFAULT_EDGES, (fixed,) * 5, fixed, 4, 0.0, 0.0)
    ours = calibrated_reconstruction(diffusion, model, x0, cal, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=x0.dtype)
    ref = timestep_terms(diffusion, model, x0, torch.ones(4, dtype=torch.long), noise) / (36 * math.log(2))
    torch.testing.assert_close(ours, ref.double())


def test_calibration_finds_the_sigmas_an_oracle_allows(diffusion):
    """An oracle exact on the background and 0.6 bins off elsewhere: the background bucket gets the grid's
    smallest sigma (its half-infinite bin then costs nothing), the interior one a sigma near the offset's scale;
    on held-out images the calibrated L_0 is far below the fixed decoder's and never above it on the fit set."""
    g = torch.Generator().manual_seed(1)
    x_fit, x_test = _eight_bit((64, 1, 8, 8), g), _eight_bit((64, 1, 8, 8), g)
    fixed = math.sqrt(float(diffusion.table("reverse_variance")[1]))
    cal = calibrate_decoder(diffusion, OffsetOracle(diffusion, x_fit, 0.6), x_fit,
                            generator=torch.Generator().manual_seed(2))
    assert cal.sigmas[0] == pytest.approx(fixed / 64)  # background, predicted exactly at -1
    bin_width = 2 / 255
    assert 0.15 * bin_width < cal.sigmas[2] < 1.0 * bin_width, cal.sigmas  # interior: 0.6 bins off
    assert cal.train_bpd < cal.train_fixed_bpd
    model = OffsetOracle(diffusion, x_test, 0.6)
    calibrated = calibrated_reconstruction(diffusion, model, x_test, cal, generator=torch.Generator().manual_seed(3))
    fixed_cal = DecoderCalibration(DEFAULT_EDGES, (fixed,) * 5, fixed, 0, 0.0, 0.0)
    baseline = calibrated_reconstruction(diffusion, model, x_test, fixed_cal, generator=torch.Generator().manual_seed(3))
    assert float(calibrated.mean()) < 0.6 * float(baseline.mean())


def test_bad_calibrations_are_refused():
    with pytest.raises(ValueError, match="4 edges need 5 sigmas, got 2"):
        DecoderCalibration(DEFAULT_EDGES, (1.0, 2.0), 1.0, 1, 0.0, 0.0)
    with pytest.raises(ValueError, match="must increase"):
        DecoderCalibration((0.5, 0.1), (1.0, 1.0, 1.0), 1.0, 1, 0.0, 0.0)
    with pytest.raises(ValueError, match="positive and finite"):
        DecoderCalibration((0.0,), (1.0, 0.0), 1.0, 1, 0.0, 0.0)
