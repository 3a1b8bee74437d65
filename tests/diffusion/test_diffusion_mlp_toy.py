"""The toy MLP trained for seconds with each of EPS, X0 and V samples the 2-D mixture, and its ELBO is finite
and below the exact log-likelihood (continuous data, Gaussian decoder, bits/dim of a density).

Run with ``-s`` to see the measured figures.
"""

import math

import pytest
import torch

from elbolab.diffusion.config import VarianceKind
from elbolab.data.toy import make_toy
from elbolab.diffusion import DiffusionObjective, Prediction, elbo_terms, samplers
from elbolab.math import energy_distance, mean_and_stderr
from elbolab.nn.mlp import MLPDenoiser


def train_toy(diffusion, mixture, steps=800, batch=256, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    model = MLPDenoiser(dim=2, hidden=64, depth=2, time_dim=32)
    obj = DiffusionObjective(diffusion, decoder="gaussian")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        out = obj.loss(model, mixture.sample(batch, g), None, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("kind", [Prediction.EPS, Prediction.X0, Prediction.V])
def test_toy_mlp_samples_the_mixture_and_its_elbo_bounds_the_likelihood(kind, make_diffusion, gaussian_baseline):
    mix = make_toy("gaussian-mixture")  # 8 Gaussians on a ring of radius 2, std 0.2
    d = make_diffusion(100, prediction=kind, variance=VarianceKind.BETA)
    model = train_toy(d, mix)
    n = 2000
    data = mix.sample(n, torch.Generator().manual_seed(5))
    x = samplers.ancestral(model, (n, 2), d, generator=torch.Generator().manual_seed(2)).sample
    ed = float(energy_distance(x, data))
    ed_gauss = gaussian_baseline(data)
    weights = torch.bincount(torch.cdist(x.double(), mix.means).argmin(1), minlength=8).double() / n
    # ELBO on held-out points, exact sum over t, against the exact mixture log-density
    held = mix.sample(300, torch.Generator().manual_seed(6))
    terms = elbo_terms(d, model, held, generator=torch.Generator().manual_seed(7), decoder="gaussian",
                       max_batch=10_000)
    nll = -mix.log_prob(held.double()) / (2 * math.log(2))
    gap = mean_and_stderr(terms.per_image.total - nll)
    print(f"\n[toy {kind.value}] energy distance {ed:.4f} (moment-matched Gaussian {ed_gauss:.4f}); "
          f"mode weights {weights.min():.3f}..{weights.max():.3f}; -ELBO {terms.total:.3f} bits/dim vs exact "
          f"NLL {float(nll.mean()):.3f}: gap {gap.mean:.3f} +- {gap.stderr:.3f}")
    assert ed < 0.03 and ed < 0.5 * ed_gauss
    assert (weights - 1 / 8).abs().max() < 0.05
    assert all(math.isfinite(v) for v in (terms.reconstruction, terms.prior, terms.denoising, terms.total))
    assert gap.mean - 3 * gap.stderr > 0  # the ELBO lies below the exact log-likelihood
