"""GAN losses as pure functions of discriminator logits, and the gradient penalty of WGAN-GP.

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

from elbolab.config import GANLoss

__all__ = [
    "minimax_discriminator_loss",
    "minimax_generator_loss",
    "non_saturating_generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "discriminator_loss",
    "generator_loss",
    "interpolates",
    "gradient_penalty",
]


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


def discriminator_loss(kind: GANLoss | str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's (critic's) loss of game ``kind``, without any gradient penalty."""
    kind = _kind(kind)
    if kind is GANLoss.WASSERSTEIN_GP:
        return wasserstein_critic_loss(real_logits, fake_logits)
    return minimax_discriminator_loss(real_logits, fake_logits)


def generator_loss(kind: GANLoss | str, fake_logits: Tensor) -> Tensor:
    """The generator's loss of game ``kind``."""
    kind = _kind(kind)
    if kind is GANLoss.MINIMAX:
        return minimax_generator_loss(fake_logits)
    if kind is GANLoss.NON_SATURATING:
        return non_saturating_generator_loss(fake_logits)
    return wasserstein_generator_loss(fake_logits)


def _kind(kind: GANLoss | str) -> GANLoss:
    try:
        return GANLoss(kind)
    except ValueError:
        raise ValueError(f"GAN loss {kind!r}; choices: {', '.join(k.value for k in GANLoss)}") from None


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
