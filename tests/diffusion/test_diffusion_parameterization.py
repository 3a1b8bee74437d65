"""The four parameterisations: exact conversions and round trips, one contract over every kind."""

import itertools

import pytest
import torch

from elbolab.diffusion.config import PredictionKind
from elbolab.diffusion import Prediction
from elbolab.diffusion import parameterization as param

KINDS = list(Prediction)


def test_prediction_is_the_config_enum():
    assert Prediction is PredictionKind
    assert [p.value for p in Prediction] == ["eps", "x0", "v", "score"]
    with pytest.raises(ValueError, match="expected one of 'eps', 'x0', 'v', 'score'"):
        param.parse_prediction("noise")


def _setup(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 3, generator=g, dtype=torch.float64)
    abar = torch.rand(n, 1, generator=g, dtype=torch.float64) * 0.998 + 0.001
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    return x0, eps, abar, x_t


@pytest.mark.parametrize("source,target", list(itertools.product(KINDS, KINDS)))
def test_conversions_round_trip_exactly(source, target):
    x0, eps, abar, x_t = _setup()
    out = param.target(source, x0, eps, abar)
    converted = param.convert(out, source, target, x_t, abar)
    # converting the true quantity of one kind gives the true quantity of the other
    torch.testing.assert_close(converted, param.target(target, x0, eps, abar), rtol=1e-9, atol=1e-9)
    back = param.convert(converted, target, source, x_t, abar)
    torch.testing.assert_close(back, out, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_diffusion_predictors_agree_for_every_kind(kind, make_diffusion):
    d = make_diffusion(40, prediction=kind)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = torch.randint(1, 41, (8,), generator=g)
    x_t = d.q_sample(x0, t, eps)
    out = d.training_target(x0, eps, t)  # a perfect network's output
    torch.testing.assert_close(d.predict_x0(out, x_t, t), x0, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(d.predict_eps(out, x_t, t), eps, rtol=1e-8, atol=1e-8)
    ab = d.schedule.alpha_bars[t][:, None]
    torch.testing.assert_close(d.predict_score(out, x_t, t), -eps / (1 - ab).sqrt(), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(d.predict_v(out, x_t, t), ab.sqrt() * eps - (1 - ab).sqrt() * x0,
                               rtol=1e-8, atol=1e-8)
    # the inverse: model output from eps
    torch.testing.assert_close(d.model_output_from_eps(eps, x_t, t), out, rtol=1e-8, atol=1e-8)
    # and the reverse mean does not depend on the parameterisation
    eps_d = make_diffusion(40, prediction=Prediction.EPS)
    torch.testing.assert_close(d.p_mean_variance(out, x_t, t).mean, eps_d.p_mean_variance(eps, x_t, t).mean,
                               rtol=1e-8, atol=1e-8)


def test_score_is_tweedie_for_a_point_mass():
    """For x0 fixed, grad log q(x_t | x0) = -(x_t - sqrt(abar) x0) / (1 - abar) = -eps / sqrt(1 - abar)."""
    x0, eps, abar, x_t = _setup(2)
    score = param.score_from_eps(eps, abar)
    torch.testing.assert_close(score, -(x_t - abar.sqrt() * x0) / (1 - abar))
