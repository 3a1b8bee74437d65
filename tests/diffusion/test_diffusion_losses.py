"""DiffusionObjective: the Trainer interface, L_simple and ELBO losses, importance sampling of t."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from elbolab.diffusion.config import DiffusionConfig, LossKind, PredictionKind
from elbolab.data.toy import make_toy
from elbolab.diffusion import (
    DiffusionObjective,
    GaussianMixtureOracle,
    LossAwareTimestepSampler,
    Prediction,
    UniformTimestepSampler,
)
from elbolab.nn.mlp import MLPDenoiser
from elbolab.objectives import LossOutput, Objective


@pytest.mark.parametrize("kind", list(Prediction))
@pytest.mark.parametrize("loss", list(LossKind))
def test_objective_contract_and_gradients(kind, loss, make_diffusion):
    d = make_diffusion(30, prediction=kind)
    obj = DiffusionObjective(d, loss=loss, importance_sampling=True, decoder="gaussian")
    assert isinstance(obj, Objective)
    model = MLPDenoiser(dim=2, hidden=16, depth=1, time_dim=8)
    torch.nn.init.normal_(model.out.weight, std=0.1)  # the zero-initialised head would hide gradient paths
    x = make_toy("gaussian-mixture").sample(64, torch.Generator().manual_seed(0))
    out = obj.loss(model, x, None, torch.Generator().manual_seed(1))
    assert isinstance(out, LossOutput) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.metrics["loss"] == pytest.approx(float(out.loss.detach()))
    assert ("mse" in out.metrics) == (loss is not LossKind.ELBO)
    assert ("elbo_bpd" in out.metrics) == (loss is LossKind.ELBO)
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # same generator state, same loss
    again = obj.loss(model, x, None, torch.Generator().manual_seed(1))
    assert float(again.loss.detach()) == pytest.approx(float(out.loss.detach()), rel=1e-6)


class Perturbed(torch.nn.Module):
    """The oracle with eps_hat shifted by delta, expressed in the diffusion's parameterisation."""

    def __init__(self, oracle, delta):
        super().__init__()
        self.oracle, self.delta = oracle, delta

    def forward(self, x, t, y=None):
        d = self.oracle.diffusion
        return d.model_output_from_eps(self.oracle.optimal_eps(x, t) + self.delta, x, t)


@pytest.mark.parametrize("kind", list(Prediction))
@pytest.mark.parametrize("loss", list(LossKind))
def test_the_exact_oracle_minimises_both_losses(kind, loss, make_diffusion):
    """E[eps | x_t] minimises L_simple for every parameterisation and every ELBO term: with common random
    numbers, the oracle's loss is below that of the oracle shifted by 0.2 in eps."""
    d = make_diffusion(40, prediction=kind)
    oracle = GaussianMixtureOracle(make_toy("gaussian-mixture"), d)
    x = oracle.sample_data(4096, torch.Generator().manual_seed(0))
    obj = DiffusionObjective(d, loss=loss, decoder="gaussian")
    best = float(obj.loss(oracle, x, None, torch.Generator().manual_seed(3)).loss)
    worse = float(obj.loss(Perturbed(oracle, 0.2), x, None, torch.Generator().manual_seed(3)).loss)
    assert best < worse
    if kind is Prediction.EPS and loss is LossKind.SIMPLE:
        assert worse - best == pytest.approx(0.04, abs=0.01)  # + delta^2 per dimension


def test_importance_sampler_warm_up_history_and_probabilities():
    T = 5
    s = LossAwareTimestepSampler(T, history=10, uniform_prob=0.001)
    g = torch.Generator().manual_seed(0)
    for _ in range(9):
        s.update(torch.arange(1, T + 1), torch.arange(1, T + 1, dtype=torch.float64))
    assert not s.warmed_up
    torch.testing.assert_close(s.probabilities(), torch.full((T,), 0.2, dtype=torch.float64))
    t, w = s.sample(1000, g, torch.device("cpu"))
    assert t.min() >= 1 and t.max() <= T and torch.allclose(w, torch.ones(1000))
    s.update(torch.arange(1, T + 1), torch.arange(1, T + 1, dtype=torch.float64))
    assert s.warmed_up
    expected = torch.arange(1, T + 1, dtype=torch.float64) / 15 * 0.999 + 0.001 / T  # sqrt(E[L_t^2]) = t
    torch.testing.assert_close(s.probabilities(), expected)
    # the history rolls: 10 more losses of 2 * t double every weight but not the normalised probabilities
    for _ in range(10):
        s.update(torch.arange(1, T + 1), 2 * torch.arange(1, T + 1, dtype=torch.float64))
    torch.testing.assert_close(s.loss_history[2], torch.full((10,), 6.0, dtype=torch.float64))
    torch.testing.assert_close(s.probabilities(), expected)
    # E_{t ~ p}[w_t L_t] = mean_t L_t (importance weights keep the loss unbiased)
    t, w = s.sample(200_000, g, torch.device("cpu"))
    L = t.double() ** 2
    est = (w.double() * L).mean()
    assert float(est) == pytest.approx(float((torch.arange(1, T + 1) ** 2).double().mean()), rel=0.02)


def test_importance_sampler_state_round_trips_through_safetensors(tmp_path, make_diffusion):
    d = make_diffusion(20)
    obj = DiffusionObjective(d, importance_sampling=True, decoder="gaussian")
    model = MLPDenoiser(dim=2, hidden=16, depth=1, time_dim=8)
    x = make_toy("gaussian-mixture").sample(256, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        obj.loss(model, x, None, g)
    state = obj.state_dict()
    assert set(state) == {"loss_history", "loss_counts"} and int(state["loss_counts"].sum()) == 3 * 256
    save_file(state, str(tmp_path / "sampler.safetensors"))
    fresh = DiffusionObjective(d, importance_sampling=True, decoder="gaussian")
    fresh.load_state_dict(load_file(str(tmp_path / "sampler.safetensors")))
    assert fresh.timestep_sampler.warmed_up == obj.timestep_sampler.warmed_up
    torch.testing.assert_close(fresh.timestep_sampler.loss_history, obj.timestep_sampler.loss_history)
    a = obj.loss(model, x, None, torch.Generator().manual_seed(5))
    b = fresh.loss(model, x, None, torch.Generator().manual_seed(5))
    assert float(a.loss.detach()) == pytest.approx(float(b.loss.detach()))
    with pytest.raises(ValueError, match="must have keys"):
        fresh.load_state_dict({"loss_history": state["loss_history"]})
    with pytest.raises(ValueError, match=r"has shape \(3, 10\), expected \(20, 10\)"):
        fresh.load_state_dict({"loss_history": torch.zeros(3, 10), "loss_counts": torch.zeros(20)})
    assert DiffusionObjective(d).state_dict() == {}
    with pytest.raises(ValueError, match="no state"):
        UniformTimestepSampler(20).load_state_dict(state)


def test_objective_from_config_and_validation():
    cfg = DiffusionConfig(T=50, prediction=PredictionKind.V, loss=LossKind.ELBO, importance_sampling=True)
    obj = DiffusionObjective.from_config(cfg)
    assert obj.diffusion.T == 50 and obj.diffusion.prediction is Prediction.V
    assert obj.loss_kind is LossKind.ELBO and isinstance(obj.timestep_sampler, LossAwareTimestepSampler)
    with pytest.raises(ValueError, match="loss = 'l1' is not valid: expected one of 'simple', 'elbo'"):
        DiffusionObjective(obj.diffusion, loss="l1")
    with pytest.raises(ValueError, match="uniform_prob"):
        LossAwareTimestepSampler(10, uniform_prob=2.0)


def test_elbo_loss_estimates_the_bound_without_the_prior(make_diffusion):
    """The mean of the ELBO loss over many draws of t is (-ELBO - L_T) / D in nats per dimension."""
    from elbolab.diffusion import elbo_terms
    from elbolab.math import mean_and_stderr

    d = make_diffusion(20)
    oracle = GaussianMixtureOracle(make_toy("gaussian-mixture"), d)
    x = oracle.sample_data(1, torch.Generator().manual_seed(0)).repeat(1000, 1)
    obj = DiffusionObjective(d, loss=LossKind.ELBO, decoder="gaussian")
    g = torch.Generator().manual_seed(1)
    batches = torch.tensor([float(obj.loss(oracle, x, None, g).loss) / math.log(2) for _ in range(40)])
    est = mean_and_stderr(batches)
    terms = elbo_terms(d, oracle, x, generator=torch.Generator().manual_seed(2), decoder="gaussian",
                       max_batch=50_000)
    bound = mean_and_stderr(terms.per_image.reconstruction + terms.per_image.denoising)
    assert abs(est.mean - bound.mean) < 4 * math.hypot(est.stderr, bound.stderr)


def test_lognormal_time_sampling_draws_edms_sigmas_and_the_oracle_minimises_its_loss(make_diffusion):
    """t_sampling = 'lognormal': ln sigma_VE(t) ~ N(-1.2, 1.2^2) (Karras et al. 2022) as float t in [1, T]; the
    network sees those unrounded times; E[eps | x_t] at alpha_bar(t) minimises the loss (+ delta^2 per dim)."""
    from elbolab.config import ConfigError
    from elbolab.diffusion import LogNormalTimestepSampler

    d = make_diffusion(1000)
    t, w = LogNormalTimestepSampler(d).sample(40000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert t.dtype == torch.float64 and float(t.min()) >= 1.0 and float(t.max()) <= 1000.0 and (w == 1).all()
    log_sigma = torch.log(d.sigma_ve_at(t))
    assert abs(float(log_sigma.mean()) + 1.2) < 0.03 and abs(float(log_sigma.std()) - 1.2) < 0.03
    assert float((t - t.round()).abs().max()) > 0.1

    oracle = GaussianMixtureOracle(make_toy("gaussian-mixture"), d)
    seen = []

    class Shifted(torch.nn.Module):
        def __init__(self, delta):
            super().__init__()
            self.delta = delta

        def forward(self, x, t, y=None):
            seen.append(t)
            return oracle(x, t) + self.delta

    x = oracle.sample_data(8192, torch.Generator().manual_seed(0))
    obj = DiffusionObjective(d, t_sampling="lognormal")
    best = obj.loss(Shifted(0.0), x, None, torch.Generator().manual_seed(3))
    worse = obj.loss(Shifted(0.2), x, None, torch.Generator().manual_seed(3))
    assert seen[0].dtype == torch.float32 and float((seen[0] - seen[0].round()).abs().max()) > 0.1
    assert float(worse.loss) - float(best.loss) == pytest.approx(0.04, abs=0.005)
    assert best.metrics["mse"] == pytest.approx(float(best.loss))
    assert obj.state_dict() == {}
    with pytest.raises(ValueError, match="lognormal' needs loss = 'simple'"):
        DiffusionObjective(d, loss="elbo", t_sampling="lognormal")
    with pytest.raises(ConfigError, match="t_sampling = 'lognormal' needs"):
        DiffusionConfig(t_sampling="lognormal", importance_sampling=True).validate("model.diffusion")
