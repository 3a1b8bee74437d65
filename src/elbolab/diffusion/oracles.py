"""Exact denoisers: the optimal network for data whose noisy marginals are known in closed form.

For x_0 ~ sum_k w_k N(mu_k, Sigma_k) every marginal q(x_t) is again a Gaussian mixture,
q(x_t) = sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I) with a = sqrt(alpha_bar_t), s^2 = 1 - alpha_bar_t, so the
minimiser of L_simple, eps*(x_t, t) = E[eps | x_t] = -s grad log q(x_t) (Tweedie), is available in closed form.
The data distribution is an :class:`elbolab.data.toy.GaussianMixture` (which has the same formula via one
Cholesky factorisation per example); here each Sigma_k = U_k diag(lambda_k) U_k^T is diagonalised once, so
that a^2 Sigma_k + s^2 I = U_k diag(a^2 lambda_k + s^2) U_k^T costs no factorisation per call -- the samplers
call the oracle T times on thousands of points. Plugged into the samplers and the ELBO
these modules test the diffusion code without any training: samples must reproduce the data distribution,
and the ELBO must lie below the exact log-likelihood.

Both are ``nn.Module`` s with the network convention ``model(x_t, t, y=None)``: ``x_t: (B, ...)`` with
prod(...) = D (images are flattened), ``t: (B,)`` long in 1..T; the output has x_t's shape and the
diffusion's prediction kind (eps, x0, v or score). ``t`` may also be float (continuous time in (0, T], the
ODE solvers): the oracle is then exact at alpha_bar(t) = :meth:`GaussianDiffusion.alpha_bar_at`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from elbolab.data.toy import GaussianMixture
from elbolab.diffusion import parameterization as param
from elbolab.diffusion.process import GaussianDiffusion

__all__ = ["GaussianMixtureOracle", "GaussianOracle"]


class GaussianMixtureOracle(nn.Module):
    """The exact optimal predictor for data ``mixture`` (a :class:`~elbolab.data.toy.GaussianMixture` in R^D)."""

    def __init__(self, mixture: GaussianMixture, diffusion: GaussianDiffusion) -> None:
        super().__init__()
        self.mixture = mixture
        self.diffusion = diffusion
        lam, U = torch.linalg.eigh(mixture.covariances)  # (K, D), (K, D, D)
        self._lam, self._U = lam, U
        self._log_w = torch.log(mixture.weights)

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def optimal_eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E[eps | x_t] for ``x_t: (B, ...)`` and ``t: (B,)`` in 1..T, shape of x_t."""
        flat = x_t.reshape(x_t.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"oracle for D = {self.dim} got x_t with {flat.shape[1]} dimensions per example")
        abar = self._alpha_bar(t, x_t)
        return self.noisy_score_and_eps(flat, abar)[1].to(x_t.dtype).reshape(x_t.shape)

    def _alpha_bar(self, t: Tensor, x_t: Tensor) -> Tensor:
        """alpha_bar at ``t: (B,)`` (integer 1..T, or float in (0, T]), float64 ``(B,)`` on x_t's device."""
        if isinstance(t, Tensor) and t.dtype.is_floating_point:
            if t.shape != (x_t.shape[0],):
                raise ValueError(f"t must have shape ({x_t.shape[0]},), got {tuple(t.shape)}")
            return self.diffusion.alpha_bar_at(t.detach().double().cpu()).to(x_t.device)
        t = self.diffusion.timesteps(t, x_t)
        return self.diffusion.table("alpha_bars")[t.cpu()].to(x_t.device)

    def noisy_score_and_eps(self, x: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
        """(grad log q(x_t), E[eps | x_t]) in float64 for ``x: (B, D)`` and ``alpha_bar: (B,)``."""
        dev = x.device
        x64 = x.double()
        a = alpha_bar.double().sqrt()[:, None, None]  # (B, 1, 1)
        s2 = (1.0 - alpha_bar.double())[:, None, None]
        lam, U = self._lam.to(dev), self._U.to(dev)
        means = self.mixture.means.to(dev)
        var = a**2 * lam[None] + s2  # (B, K, D): eigenvalues of a^2 Sigma_k + s^2 I
        diff = x64[:, None, :] - a * means[None]  # (B, K, D)
        z = torch.einsum("kdj,bkd->bkj", U, diff)  # U_k^T (x - a mu_k)
        log_comp = (
            self._log_w.to(dev)[None]
            - 0.5 * (z**2 / var).sum(-1)
            - 0.5 * torch.log(var).sum(-1)
            - 0.5 * self.dim * math.log(2.0 * math.pi)
        )
        resp = torch.softmax(log_comp, dim=1)  # p(k | x_t)
        grad = -torch.einsum("kdj,bkj->bkd", U, z / var)  # -(a^2 Sigma_k + s^2 I)^{-1} (x - a mu_k)
        score = (resp[..., None] * grad).sum(1)
        eps = -s2[:, :, 0].sqrt() * score
        return score, eps

    def forward(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        eps = self.optimal_eps(x_t, t)
        abar = self._alpha_bar(t, x_t).reshape(-1, *([1] * (x_t.ndim - 1)))
        return param.prediction_from_eps(self.diffusion.prediction, eps, x_t, abar)

    def log_prob(self, x0: Tensor) -> Tensor:
        """Exact data log-density log q(x_0) per example ``(B,)`` (nats), for ``x0: (B, ...)``."""
        return self.mixture.log_prob(x0.reshape(x0.shape[0], -1))

    def sample_data(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` draws of the data distribution, ``(n, D)`` float32."""
        return self.mixture.sample(n, generator)


class GaussianOracle(GaussianMixtureOracle):
    """The exact (affine) optimal predictor for Gaussian data x_0 ~ N(mean, cov) in R^D.

    ``mean: (D,)``; ``cov: (D, D)`` (or ``(D,)`` for a diagonal covariance).
    """

    def __init__(self, mean: Sequence[float] | Tensor, cov: Sequence | Tensor, diffusion: GaussianDiffusion) -> None:
        mu = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        c = torch.as_tensor(cov, dtype=torch.float64)
        if c.ndim == 1:
            c = torch.diag(c)
        if c.shape != (mu.numel(), mu.numel()):
            raise ValueError(f"GaussianOracle: cov must be ({mu.numel()}, {mu.numel()}) or ({mu.numel()},), "
                             f"got {tuple(c.shape)}")
        super().__init__(GaussianMixture([1.0], mu[None], c[None]), diffusion)

    @property
    def mean(self) -> Tensor:
        return self.mixture.means[0]

    @property
    def cov(self) -> Tensor:
        return self.mixture.covariances[0]
