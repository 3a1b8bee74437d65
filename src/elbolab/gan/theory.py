"""The optimal-discriminator theory of the lecture notes (003), computed numerically on 1-D densities.

For a fixed generator with density p_g, the value of the game

    L(G, D) = int p_r(x) log D(x) + p_g(x) log(1 - D(x)) dx

is maximised pointwise by D*(x) = p_r(x) / (p_r(x) + p_g(x)) (the notes' "best value of D"), and at D*

    L(G, D*) = 2 JS(p_r || p_g) - 2 log 2,
    JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m),   m = (p + q) / 2.

Here the integrals are trapezoidal quadratures over a grid ``x: (N,)`` of density values ``p: (N,)``
(float64); :func:`fit_discriminator` trains a discriminator network on samples and reports how far it lands
from D*.

For a trained GAN, D* = 1/2 everywhere exactly when p_g = p_r, but the GAN's own discriminator only reads
as a probability for the minimax / non-saturating games (the hinge and Wasserstein critics output scores).
:func:`fresh_discriminator_check` therefore fits a *fresh* logistic discriminator on real against generated
samples (images or features) and reports its mean output on held-out real samples: about 1/2 when the
logistic model cannot tell them apart, near 1 when it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from elbolab.gan.losses import minimax_discriminator_loss
from elbolab.nn.gan_nets import MLPDiscriminator

__all__ = ["Density1D", "DiscriminatorFit", "optimal_discriminator", "optimal_discriminator_logit",
           "kl_divergence", "js_divergence", "game_value", "fit_discriminator", "FreshDiscriminatorCheck",
           "fresh_discriminator_check", "gan_dstar_check"]


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



@dataclass(frozen=True)
class FreshDiscriminatorCheck:
    """A logistic discriminator D(x) = sigmoid(w . x + b) fitted on real vs generated samples, read on held-out ones.

    ``d_real``: mean D on held-out real samples (the notes' D* = 1/2 when p_g = p_r; E_{p_r} D* > 1/2 when they
    differ); ``d_fake``: mean D on held-out generated ones; ``accuracy``: held-out accuracy of D > 1/2 (classes
    weighted equally); ``n_train`` / ``n_test``: samples per class (real, fake) used to fit / to read.
    """

    d_real: float
    d_fake: float
    accuracy: float
    n_train: tuple[int, int]
    n_test: tuple[int, int]


def fresh_discriminator_check(real: Tensor, fake: Tensor, generator: torch.Generator, *, train_fraction: float = 0.5,
                              l2: float = 1e-3, max_iter: int = 500) -> FreshDiscriminatorCheck:
    """Fit D(x) = sigmoid(w . x + b) on a random ``train_fraction`` of ``real: (N, ...)`` and ``fake: (M, ...)``
    (flattened; standardised by the training samples' mean and std) by minimising the class-balanced binary
    cross-entropy -1/2 E_r log D - 1/2 E_g log(1 - D) + l2 / 2 ||w||^2 with L-BFGS in float64 (a convex problem:
    the fit does not depend on an initialisation), then read it on the held-out rest. The split is drawn from
    ``generator``. Balanced classes make the prior 1/2, so an undistinguishable pair gives ``d_real`` near 1/2.
    """
    if real.ndim < 2 or fake.ndim < 2 or real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must be (N, ...) batches of the "
                         "same sample shape")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction = {train_fraction!r} must be in (0, 1)")
    if l2 < 0:
        raise ValueError(f"l2 = {l2!r} must be >= 0")
    r, f = real.detach().flatten(1).double().cpu(), fake.detach().flatten(1).double().cpu()
    n_r, n_f = int(r.shape[0] * train_fraction), int(f.shape[0] * train_fraction)
    if min(n_r, n_f, r.shape[0] - n_r, f.shape[0] - n_f) < 1:
        raise ValueError(f"need at least one real and one fake sample on each side of the split, got {r.shape[0]} "
                         f"real and {f.shape[0]} fake with train_fraction = {train_fraction}")
    r = r[torch.randperm(r.shape[0], generator=generator)]
    f = f[torch.randperm(f.shape[0], generator=generator)]
    r_train, r_test, f_train, f_test = r[:n_r], r[n_r:], f[:n_f], f[n_f:]
    both = torch.cat([r_train, f_train])
    mean, std = both.mean(0), both.std(0).clamp_min(1e-8)
    z = lambda t: (t - mean) / std  # noqa: E731
    w = torch.zeros(r.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    zr, zf = z(r_train), z(f_train)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = 0.5 * minimax_discriminator_loss(zr @ w + b, zf @ w + b) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        d_r, d_f = torch.sigmoid(z(r_test) @ w + b), torch.sigmoid(z(f_test) @ w + b)
        acc = 0.5 * (float((d_r > 0.5).double().mean()) + float((d_f <= 0.5).double().mean()))
    return FreshDiscriminatorCheck(d_real=float(d_r.mean()), d_fake=float(d_f.mean()), accuracy=acc,
                                   n_train=(n_r, n_f), n_test=(r.shape[0] - n_r, f.shape[0] - n_f))


@torch.no_grad()
def _generate(model: torch.nn.Module, n: int, generator: torch.Generator, batch_size: int,
              labels: Tensor | None) -> Tensor:
    from elbolab.gan.gan import sample_gan  # the GAN module imports the losses this module uses

    out = []
    for start in range(0, n, batch_size):
        y = None if labels is None else labels[start:start + batch_size]
        out.append(sample_gan(model, min(batch_size, n - start), generator, labels=y).images)
    return torch.cat(out)


def gan_dstar_check(model: torch.nn.Module, real: Tensor, generator: torch.Generator, *,
                    feature_fn: Callable[[Tensor], Tensor] | None = None, labels: Tensor | None = None,
                    batch_size: int = 256, train_fraction: float = 0.5) -> FreshDiscriminatorCheck:
    """The D* = 1/2 check of lecture notes 003 for a trained GAN (any game, the hinge included): draw as many
    generated images as ``real: (N, ...)`` held-out real images (in eval mode, from ``generator``; ``labels: (N,)``
    for a conditional GAN: the real images' classes), optionally map both through ``feature_fn`` (e.g. the
    shipped MNIST feature network), and fit a fresh logistic discriminator (:func:`fresh_discriminator_check`).
    ``d_real`` near 1/2 means the logistic model cannot tell generated from real."""
    was_training = model.training
    model.eval()
    try:
        fake = _generate(model, real.shape[0], generator, batch_size, labels).to(real.dtype)
        with torch.no_grad():
            r, f = (real, fake) if feature_fn is None else (feature_fn(real), feature_fn(fake))
    finally:
        model.train(was_training)
    split = generator
    if generator.device.type != "cpu":  # the fit runs on the CPU: a CPU generator seeded from the given one
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        split = torch.Generator().manual_seed(seed)
    return fresh_discriminator_check(r.cpu(), f.cpu(), split, train_fraction=train_fraction)
