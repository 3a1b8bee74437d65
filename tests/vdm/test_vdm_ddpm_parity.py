"""Issue 16, test 4: a VDM's L_T at T = 1000 and a DDPM's ELBO on the same schedule and the same denoiser.

The DDPM is the VDM read on the grid s = i / T (:func:`elbolab.vdm.sampling.as_diffusion`: alpha_bar_i =
sigmoid(-gamma(i / T))), its network the VDM's network at the same noise level (:class:`DiffusionView`). With
x_i matched to z at s = i / T, the DDPM's KL term L_{i-1} = KL(q(x_{i-1}|x_i,x_0) || p(x_{i-1}|x_i)) and the VDM's
term i, 1/2 (SNR((i-1)/T) - SNR(i/T)) ||x - x_hat||^2, are the same number for i = 2..T (same x, eps).
What differs is the low-noise end: the VDM has a term i = 1 (down to z_0 at gamma_0) and the softmax decoder
at gamma_0, the DDPM its discretised-Gaussian decoder at t = 1; both are reported side by side.
"""

import math

import torch
from torch import nn

from elbolab.diffusion.elbo import timestep_terms
from elbolab.math import nats_to_bpd
from elbolab.vdm import LearnedMonotoneSchedule, VDMModel, loss_terms
from elbolab.vdm.elbo import prior_kl, sample_times
from elbolab.vdm.sampling import as_diffusion

T, D = 1000, 16


class SmallEps(nn.Module):
    """A fixed eps-network of (z, c): an MLP with a small output (eps_hat ~ 0.1), float64."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(D + 1, 32, generator=g, dtype=torch.float64) / math.sqrt(D))
        self.w2 = nn.Parameter(0.1 * torch.randn(32, D, generator=g, dtype=torch.float64) / math.sqrt(32))

    def forward(self, z, c, y=None):
        return torch.tanh(torch.cat([z, c[:, None] / 1000.0], dim=1) @ self.w1) @ self.w2


def vdm_model() -> VDMModel:
    """A learned (non-linear) schedule from VDM's endpoints, in float64."""
    sched = LearnedMonotoneSchedule(-13.3, 5.0, hidden=16, generator=torch.Generator().manual_seed(4)).double()
    return VDMModel(SmallEps(), sched, gamma_range=(-13.3, 5.0)).double().eval()


def eight_bit(n: int, seed: int) -> torch.Tensor:
    k = torch.randint(0, 256, (n, D), generator=torch.Generator().manual_seed(seed))
    return (2.0 * k / 255.0 - 1.0).double()


@torch.no_grad()
def test_denoising_terms_agree_term_by_term_and_reconstructions_side_by_side():
    model = vdm_model()
    diffusion, view = as_diffusion(model, T)
    assert diffusion.T == T
    n = 3000
    x = eight_bit(n, 1)
    # the VDM's own estimator of L_T: one (t, eps_0, eps) per row; replay its draws to give the DDPM the same eps
    terms = loss_terms(model, x, None, torch.Generator().manual_seed(7), T=T, decoder="softmax",
                       time_sampling="uniform")
    g = torch.Generator().manual_seed(7)
    sample_times(n, g, "uniform", dtype=torch.float64)
    torch.randn(x.shape, generator=g, dtype=x.dtype)  # eps_0 of the reconstruction term
    eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
    i = torch.round(terms.t * T).long()  # the VDM's t = i / T on the grid
    assert torch.allclose(terms.t, i.double() / T) and int(i.min()) >= 1 and int(i.max()) <= T
    assert len(set(i.tolist())) > 900  # most of the 1000 steps are covered

    later = i >= 2
    vdm_kl = terms.denoising[later] / T  # the estimator is T * (term i)
    ddpm_kl = timestep_terms(diffusion, view, x[later], i[later], eps[later], decoder="discretized")
    assert torch.allclose(vdm_kl, ddpm_kl, rtol=1e-6, atol=1e-9), (vdm_kl - ddpm_kl).abs().max()
    assert float(ddpm_kl.min()) >= 0.0

    # the prior terms are the same KL (z at s = 1 is x_T)
    assert torch.allclose(prior_kl(x, model.schedule.endpoints()[1]), diffusion.prior_kl(x), rtol=1e-9)

    # the low-noise end, side by side: VDM term i = 1 + softmax decoder at gamma_0 vs the DDPM's decoder at t = 1
    vdm_recon = nats_to_bpd(terms.reconstruction, D)
    ddpm_recon = nats_to_bpd(timestep_terms(diffusion, view, x, torch.ones(n, dtype=torch.long), eps), D)
    first = ~later
    vdm_term1 = nats_to_bpd(terms.denoising[first] / T, D)
    report = {"vdm_reconstruction_bpd": float(vdm_recon.mean()), "vdm_term_1_bpd": float(vdm_term1.mean()),
              "ddpm_reconstruction_bpd": float(ddpm_recon.mean())}
    # measured: VDM reconstruction 0.0092 + term 1 0.0156 bits/dim, DDPM reconstruction 0.0217 bits/dim. At
    # gamma_0 = -13.3 the decoder's sigma_0 / alpha_0 = 0.0013 is a third of a half-bin: both decoders are almost
    # certain of 8-bit data (a wrong grid or variance costs whole bits); term 1 is 1/2 expm1(gamma(1/T) - gamma_0)
    # ||eps - eps_hat||^2 with ||eps - eps_hat||^2 ~ D for this weak denoiser, ~0.013 bits/dim.
    assert 0.0 <= report["vdm_reconstruction_bpd"] < 0.02, report
    assert 0.0 <= report["ddpm_reconstruction_bpd"] < 0.05, report
    assert 0.005 < report["vdm_term_1_bpd"] < 0.03, report
    low_end_vdm = report["vdm_reconstruction_bpd"] + report["vdm_term_1_bpd"]
    assert abs(low_end_vdm - report["ddpm_reconstruction_bpd"]) < 0.02, report
