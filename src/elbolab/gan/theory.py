"""The optimal-discriminator theory of the lecture notes (003), computed numerically on 1-D densities.

For a fixed generator with density p_g, the value of the game

    L(G, D) = int p_r(x) log D(x) + p_g(x) log(1 - D(x)) dx

is maximised pointwise by D*(x) = p_r(x) / (p_r(x) + p_g(x)) (the notes' "best value of D"), and at D*

    L(G, D*) = 2 JS(p_r || p_g) - 2 log 2,
    JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m),   m = (p + q) / 2.

Here the integrals are trapezoidal quadratures over a grid ``x: (N,)`` of density values ``p: (N,)``
(float64); :func:`fit_discriminator` trains a discriminator network on samples and reports how far it lands
from D*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from elbolab.gan.losses import minimax_discriminator_loss
from elbolab.nn.gan_nets import MLPDiscriminator

__all__ = ["Density1D", "DiscriminatorFit", "optimal_discriminator", "optimal_discriminator_logit",
           "kl_divergence", "js_divergence", "game_value", "fit_discriminator"]


class Density1D(Protocol):
    """A 1-D law with a density and a sampler, e.g. :class:`elbolab.data.toy.Mixture1D` (tensors (N,))."""

    def log_prob(self, x: Tensor) -> Tensor: ...

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tensor: ...


def _check_grid(x: Tensor, *densities: Tensor) -> None:
    if x.ndim != 1 or x.numel() < 2:
        raise ValueError(f"quadrature grid x must be 1-D with at least 2 points, got shape {tuple(x.shape)}")
    if not bool((x[1:] > x[:-1]).all()):
        raise ValueError("quadrature grid x must be strictly increasing")
    for p in densities:
        if p.shape != x.shape:
            raise ValueError(f"density values must have the grid's shape {tuple(x.shape)}, got {tuple(p.shape)}")
        if bool((p < 0).any()):
            raise ValueError("density values must be >= 0")


def optimal_discriminator(p_r: Tensor, p_g: Tensor) -> Tensor:
    """D*(x) = p_r / (p_r + p_g) from density values of the same shape (1/2 where both vanish)."""
    total = p_r + p_g
    return torch.where(total > 0, p_r / total.clamp_min(torch.finfo(total.dtype).tiny), torch.full_like(total, 0.5))


def optimal_discriminator_logit(log_p_r: Tensor, log_p_g: Tensor) -> Tensor:
    """logit D*(x) = log p_r(x) - log p_g(x) (stable where D* is within rounding of 0 or 1)."""
    return log_p_r - log_p_g


def kl_divergence(p: Tensor, q: Tensor, x: Tensor) -> Tensor:
    """KL(p || q) = int p log(p / q) dx by the trapezoidal rule on grid ``x`` (0 log 0 = 0)."""
    _check_grid(x, p, q)
    return torch.trapezoid(torch.xlogy(p, p) - torch.xlogy(p, q), x)


def js_divergence(p: Tensor, q: Tensor, x: Tensor) -> Tensor:
    """JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, by quadrature; in [0, log 2]."""
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m, x) + 0.5 * kl_divergence(q, m, x)


def game_value(p_r: Tensor, p_g: Tensor, d: Tensor, x: Tensor) -> Tensor:
    """L(G, D) = int p_r log D + p_g log(1 - D) dx by quadrature; ``d``: D(x) on the grid, in [0, 1]."""
    _check_grid(x, p_r, p_g, d)
    if bool((d > 1).any()):
        raise ValueError("discriminator values d must lie in [0, 1]")
    return torch.trapezoid(torch.xlogy(p_r, d) + torch.xlogy(p_g, 1 - d), x)


@dataclass
class DiscriminatorFit:
    """A discriminator trained on samples of p_r and p_g, compared with D* on the grid ``x: (N,)``.

    ``d``, ``d_star``: (N,) learned D and D*; ``mean_abs_error`` = int m |D - D*| dx with m = (p_r + p_g) / 2
    (the error where the data are); ``max_abs_error``: max |D - D*| where m > 5% of its peak;
    ``value`` = L(G, D) and ``value_star`` = L(G, D*) = 2 JS - 2 log 2 (value <= value_star).
    """

    x: Tensor
    d: Tensor
    d_star: Tensor
    mean_abs_error: float
    max_abs_error: float
    value: float
    value_star: float
    steps: int


def fit_discriminator(p_r: Density1D, p_g: Density1D, generator: torch.Generator, *, steps: int = 1500,
                      batch_size: int = 512, hidden: int = 64, depth: int = 2, lr: float = 3e-3,
                      grid: Tensor | None = None) -> DiscriminatorFit:
    """Train an MLP discriminator D(x) = sigmoid(l(x)) on fresh samples of p_r ("real") and p_g ("fake") by
    minimising -L(D, G) (:func:`minimax_discriminator_loss`) with Adam (learning rate decayed by cosine
    annealing to 0), then compare with D* = p_r / (p_r + p_g) on ``grid`` (default 2001 points over [-6, 6])."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps = {steps}, batch_size = {batch_size}: both must be >= 1")
    with torch.random.fork_rng():  # a network initialisation drawn from ``generator``, the global RNG untouched
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        net = MLPDiscriminator((1,), hidden=hidden, depth=depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        real = p_r.sample(batch_size, generator)[:, None]
        fake = p_g.sample(batch_size, generator)[:, None]
        loss = minimax_discriminator_loss(net(real), net(fake))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    x = grid if grid is not None else torch.linspace(-6.0, 6.0, 2001, dtype=torch.float64)
    with torch.no_grad():
        d = torch.sigmoid(net(x.float()[:, None]).double())
    pr, pg = p_r.log_prob(x).double().exp(), p_g.log_prob(x).double().exp()
    d_star = optimal_discriminator(pr, pg)
    m = 0.5 * (pr + pg)
    err = (d - d_star).abs()
    return DiscriminatorFit(
        x=x, d=d, d_star=d_star, mean_abs_error=float(torch.trapezoid(m * err, x)),
        max_abs_error=float(err[m > 0.05 * m.max()].max()), value=float(game_value(pr, pg, d, x)),
        value_star=float(game_value(pr, pg, d_star, x)), steps=steps,
    )

