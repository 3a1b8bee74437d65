"""GAN losses as pure functions of discriminator logits (minimax, non-saturating, Wasserstein, hinge), the
gradient penalty of WGAN-GP and the R1 penalty of Mescheder et al. 2018.

Notation of the lecture notes (003): D(x) = sigmoid(l(x)) is the probability that x is real, with logit
l = ``real_logits`` for x ~ p_r and l = ``fake_logits`` for x = G(z), z ~ p_z. The value of the game is

    L(D, G) = E_{x ~ p_r}[log D(x)] + E_{z ~ p_z}[log(1 - D(G(z)))]          (min_G max_D L)

Each function returns the scalar (mean over the batch) that the named player *minimises*; with
log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l) everything is computed stably from
logits. Shapes: logits ``(B,)`` (any shape is accepted and averaged); losses are 0-dim tensors, in the
dtype of the logits promoted to at least float32.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from elbolab.gan.config import GANLoss

__all__ = [
    "minimax_discriminator_loss",
    "minimax_generator_loss",
    "non_saturating_generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "HINGE",
    "game",
    "discriminator_loss",
    "generator_loss",
    "interpolates",
    "gradient_penalty",
    "r1_penalty",
    "squared_input_gradient_norm",
]

#: value of the hinge game (``GANLoss.HINGE`` once the config enum has it; the string is accepted everywhere)
HINGE = "hinge"


def _f32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def minimax_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-L(D, G) = -E log D(x) - E log(1 - D(G(z))) = mean softplus(-l_real) + mean softplus(l_fake).

    The discriminator's loss for the minimax and the non-saturating games alike (the binary cross-entropy
    of "real" vs "fake"). Its minimum over D is -L(G, D*) = 2 log 2 - 2 JS(p_r || p_g).
    """
    return F.softplus(-_f32(real_logits)).mean() + F.softplus(_f32(fake_logits)).mean()


def minimax_generator_loss(fake_logits: Tensor) -> Tensor:
    """E log(1 - D(G(z))) = -mean softplus(l_fake): the generator's side of the notes' min_G max_D L.

    Its gradient with respect to the logit is -sigmoid(l) = -D(G(z)), which vanishes when the discriminator
    confidently rejects the samples (D(G(z)) -> 0): the saturation of Goodfellow et al. 2014, Sec. 3.
    """
    return -F.softplus(_f32(fake_logits)).mean()


def non_saturating_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E log D(G(z)) = mean softplus(-l_fake) (Goodfellow et al. 2014, Sec. 3).

    Same fixed point as the minimax loss, but the gradient with respect to the logit is -(1 - D(G(z))),
    close to -1 exactly where the minimax gradient vanishes.
    """
    return F.softplus(-_f32(fake_logits)).mean()


def wasserstein_critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E f(G(z)) - E f(x): the critic f maximises E f(x) - E f(G(z)), the Kantorovich-Rubinstein estimate of
    W_1(p_r, p_g) over 1-Lipschitz f (Arjovsky et al. 2017, eq. 3). Add :func:`gradient_penalty` for WGAN-GP."""
    return _f32(fake_logits).mean() - _f32(real_logits).mean()


def wasserstein_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E f(G(z)): the generator lowers the critic's estimate of W_1."""
    return -_f32(fake_logits).mean()


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E max(0, 1 - l(x)) + E max(0, 1 + l(G(z))): the hinge loss of the discriminator (Lim & Ye 2017;
    Miyato et al. 2018, eq. 17, with spectral normalisation). Real logits above 1 and fake logits below -1
    cost nothing; its minimiser over all D is the sign of p_r - p_g, so D* = 1/2 of the notes is not read
    off its output (use :func:`elbolab.gan.theory.fresh_discriminator_check`)."""
    return F.relu(1 - _f32(real_logits)).mean() + F.relu(1 + _f32(fake_logits)).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E l(G(z)): the generator's side of the hinge game (Miyato et al. 2018, eq. 18)."""
    return -_f32(fake_logits).mean()


def game(kind: GANLoss | str) -> str:
    """The validated value of a game: a :class:`~elbolab.gan.config.GANLoss` member or one of its values, or
    ``"hinge"``. ValueError lists the choices."""
    value = kind.value if isinstance(kind, GANLoss) else kind
    choices = [k.value for k in GANLoss] + ([] if HINGE in {k.value for k in GANLoss} else [HINGE])
    if value not in choices:
        raise ValueError(f"GAN loss {kind!r}; choices: {', '.join(choices)}")
    return str(value)


def discriminator_loss(kind: GANLoss | str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's (critic's) loss of game ``kind``, without any gradient penalty."""
    kind = game(kind)
    if kind == GANLoss.WASSERSTEIN_GP.value:
        return wasserstein_critic_loss(real_logits, fake_logits)
    if kind == HINGE:
        return hinge_discriminator_loss(real_logits, fake_logits)
    return minimax_discriminator_loss(real_logits, fake_logits)


def generator_loss(kind: GANLoss | str, fake_logits: Tensor) -> Tensor:
    """The generator's loss of game ``kind``."""
    kind = game(kind)
    if kind == GANLoss.MINIMAX.value:
        return minimax_generator_loss(fake_logits)
    if kind == GANLoss.NON_SATURATING.value:
        return non_saturating_generator_loss(fake_logits)
    if kind == HINGE:
        return hinge_generator_loss(fake_logits)
    return wasserstein_generator_loss(fake_logits)


def interpolates(real: Tensor, fake: Tensor, generator: torch.Generator) -> Tensor:
    """x_hat = eps x + (1 - eps) x~ with one eps ~ U[0, 1] per example (Algorithm 1 of Gulrajani et al. 2017).

    ``real``, ``fake``: (B, ...) of the same shape; returns (B, ...).
    """
    if real.shape != fake.shape:
        raise ValueError(f"interpolates: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator, device=real.device,
                     dtype=real.dtype)
    return eps * real + (1 - eps) * fake


def gradient_penalty(critic: Callable[[Tensor], Tensor], x_hat: Tensor) -> Tensor:
    """E[(||grad_x f(x_hat)||_2 - 1)^2] over the points ``x_hat: (B, ...)`` (Gulrajani et al. 2017, eq. 3).

    ``critic(x) -> (B,)`` scores. The input gradient is taken with ``create_graph=True``, so the penalty is
    differentiable with respect to the critic's parameters (a double backward pass). Computed in float32.
    """
    x_hat = x_hat.detach().requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(_f32(scores).sum(), x_hat, create_graph=True)
    norms = _f32(grad).flatten(1).norm(2, dim=1)
    return (norms - 1).pow(2).mean()


def squared_input_gradient_norm(logits: Tensor, x: Tensor) -> Tensor:
    """``(B,)`` ||grad_x l(x_b)||_2^2 per example, for ``logits: (B,)`` computed from ``x: (B, ...)`` (which must
    require grad); the graph is kept (``create_graph=True``) so a penalty on it trains the discriminator."""
    (grad,) = torch.autograd.grad(_f32(logits).sum(), x, create_graph=True)
    return _f32(grad).flatten(1).pow(2).sum(1)


def r1_penalty(discriminator: Callable[[Tensor], Tensor], x_real: Tensor) -> Tensor:
    """E_{x ~ p_r} ||grad_x l(x)||_2^2 on real data ``x_real: (B, ...)`` (Mescheder et al. 2018, eq. 9: the
    regulariser is R1 = gamma / 2 times this). ``discriminator(x) -> (B,)`` logits; differentiable with respect
    to the discriminator's parameters. Computed in float32."""
    x = x_real.detach().requires_grad_(True)
    return squared_input_gradient_norm(discriminator(x), x).mean()
