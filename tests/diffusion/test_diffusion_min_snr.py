"""Min-SNR-gamma loss weighting (Hang et al. 2023): the weight per parameterisation and the objective."""

import pytest
import torch

from elbolab.diffusion.config import DiffusionConfig, LossKind
from elbolab.data.toy import make_toy
from elbolab.diffusion import DiffusionObjective, GaussianMixtureOracle, Prediction, min_snr_weight


class Shifted(torch.nn.Module):
    """The oracle with eps_hat shifted by delta, expressed in the diffusion's parameterisation."""

    def __init__(self, oracle, delta):
        super().__init__()
        self.oracle, self.delta = oracle, delta

    def forward(self, x, t, y=None):
        d = self.oracle.diffusion
        return d.model_output_from_eps(self.oracle.optimal_eps(x, t) + self.delta, x, t)


def test_eps_weight_is_min_snr_over_snr(make_diffusion):
    d = make_diffusion(100)
    t = torch.arange(1, 101)
    abar = d.table("alpha_bars")[t]
    snr = abar / (1 - abar)
    w = min_snr_weight(d, t, 5.0)
    assert w.dtype == torch.float64 and w.shape == (100,)
    assert (snr > 5).any() and (snr < 5).any()  # both regimes are exercised
    torch.testing.assert_close(w[snr > 5], 5.0 / snr[snr > 5])
    torch.testing.assert_close(w[snr <= 5], torch.ones_like(w[snr <= 5]))
    # a huge gamma gives L_simple on x0 written in eps: weight 1 / SNR
    torch.testing.assert_close(min_snr_weight(d, t, 1e12, Prediction.X0) * (1 / snr), min_snr_weight(d, t, 1e12))


@pytest.mark.parametrize("gamma", [0.0, -1.0])
def test_gamma_must_be_positive(gamma, make_diffusion):
    d = make_diffusion(10)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        min_snr_weight(d, torch.tensor([1]), gamma)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionObjective(d, loss=LossKind.MIN_SNR, min_snr_gamma=gamma)


def test_min_snr_loss_is_the_same_for_every_parameterisation(make_diffusion):
    """The weighted loss is min(SNR_t, gamma) ||x0 - x0_hat||^2 whatever is predicted: with common random
    numbers, one model expressed in the four parameterisations gives one loss; the unweighted L_simple differs."""
    losses, simple = {}, {}
    for kind in Prediction:
        d = make_diffusion(40, prediction=kind)
        oracle = GaussianMixtureOracle(make_toy("gaussian-mixture"), d)
        x = oracle.sample_data(512, torch.Generator().manual_seed(0))
        model = Shifted(oracle, 0.3)
        losses[kind] = float(DiffusionObjective(d, loss="min_snr", min_snr_gamma=2.0)
                             .loss(model, x, None, torch.Generator().manual_seed(5)).loss)
        simple[kind] = float(DiffusionObjective(d).loss(model, x, None, torch.Generator().manual_seed(5)).loss)
    ref = losses[Prediction.EPS]
    assert all(v == pytest.approx(ref, rel=1e-4) for v in losses.values())
    assert max(simple.values()) > 2 * min(simple.values())


def test_from_config_reads_gamma():
    obj = DiffusionObjective.from_config(DiffusionConfig(T=20, loss=LossKind.MIN_SNR, min_snr_gamma=3.0))
    assert obj.loss_kind is LossKind.MIN_SNR and obj.min_snr_gamma == 3.0
