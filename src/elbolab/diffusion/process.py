"""The Gaussian diffusion process of a variational diffusion model (Ho et al. 2020; Luo 2022, Sec. "VDM").

Forward (encoder, fixed):   q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, (1 - alpha_t) I)
Closed form:                q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
Posterior (notes 000/001):  q(x_{t-1} | x_t, x_0) = N(mu_q(x_t, x_0), sigma_q2(t) I) with
    mu_q = [sqrt(alpha_t)(1 - alpha_bar_{t-1}) x_t + sqrt(alpha_bar_{t-1})(1 - alpha_t) x_0] / (1 - alpha_bar_t)
    sigma_q2 = beta_tilde_t = (1 - alpha_t)(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
Reverse (decoder, learned): p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I), mu_theta = mu_q(x_t, x0_hat),
    sigma_t^2 = beta_t ("fixed large") or beta_tilde_t ("fixed small"), Ho et al. 2020, Sec. 3.2.

Continuous time (same units, DESIGN.md): a float t in (0, T] with alpha_bar(t) = sigmoid(lambda(t)) the
log-SNR interpolation of :meth:`NoiseSchedule.log_snr_at` (:meth:`GaussianDiffusion.alpha_bar_at`, the one
interpolation every ODE solver and the likelihood use). The VE coordinates of the same process (NCSN's sigma
levels, Karras et al. 2022) are x_VE = x / sqrt(alpha_bar), sigma_VE = sqrt((1 - alpha_bar) / alpha_bar) =
exp(-lambda / 2), so one denoiser x0_hat(x, t) serves both (:mod:`elbolab.diffusion.loop`).

Shapes: data ``x: (B, ...)`` (images ``(B, C, H, W)``, toy data ``(B, D)``); times ``t: (B,)`` long in 1..T
(a Python int is broadcast to the batch). Per-time coefficients are gathered from float64 tables and cast
to the data's dtype, broadcastable as ``(B, 1, ..., 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from elbolab.config import coerce
from elbolab.diffusion.config import VarianceKind
from elbolab.diffusion import parameterization as param
from elbolab.diffusion.parameterization import Prediction
from elbolab.diffusion.schedules import NoiseSchedule
from elbolab.math import append_dims, normal_kl, sum_flat

if TYPE_CHECKING:
    from elbolab.diffusion.elbo import ELBOTerms

__all__ = ["Gaussian", "GaussianDiffusion", "Posterior", "ReverseStep", "parse_variance"]


@dataclass(frozen=True)
class Gaussian:
    """A diagonal Gaussian: ``mean: (B, ...)``; ``variance``, ``log_variance`` broadcastable to ``mean``."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor


@dataclass(frozen=True)
class Posterior(Gaussian):
    """The forward-process posterior q(x_{t-1} | x_t, x_0) = N(mu_q, sigma_q2 I).

    At t = 1 the posterior is a point mass at x_0: ``variance = 0`` and ``log_variance = -inf``.
    """


@dataclass(frozen=True)
class ReverseStep(Gaussian):
    """The reverse model p_theta(x_{t-1} | x_t) = N(mean, variance I) with the predictions it came from.

    ``x0``: x0_hat(x_t, t) (clipped to [-1, 1] when asked); ``eps``: the noise estimate consistent with ``x0``.
    """

    x0: Tensor
    eps: Tensor


def parse_variance(kind: VarianceKind | str) -> VarianceKind:
    """``kind`` as a :class:`~elbolab.config.VarianceKind`; raises a ValueError listing the choices."""
    return coerce(kind, VarianceKind, "variance")


class GaussianDiffusion:
    """A DDPM: a fixed noise schedule, what the network predicts and the reverse-process variance.

    ``GaussianDiffusion(NoiseSchedule.linear(1000), prediction=Prediction.EPS, variance=VarianceKind.BETA_TILDE)``.

    Reverse variance sigma_t^2 (Ho et al. 2020, Sec. 3.2): ``BETA`` uses beta_t, ``BETA_TILDE`` uses beta_tilde_t.
    For the decoder p_theta(x_0 | x_1), beta_tilde_1 = 0 would be degenerate, so ``BETA_TILDE`` uses
    beta_tilde_2 there, as Ho et al.'s code does (``posterior_log_variance_clipped``); ``BETA`` uses beta_1.
    Sampling never adds noise at t = 1 (Algorithm 2: z = 0), so this choice only affects the likelihood.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        prediction: Prediction | str = Prediction.EPS,
        variance: VarianceKind | str = VarianceKind.BETA_TILDE,
    ) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"GaussianDiffusion: schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.prediction = param.parse_prediction(prediction)
        self.variance = parse_variance(variance)
        T = schedule.T
        betas, alphas, abar = schedule.betas, schedule.alphas, schedule.alpha_bars
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        beta_tilde = schedule.posterior_variances
        one_minus = (1.0 - abar).clone()
        one_minus[0] = 1.0  # index 0 is never used as a divisor; avoid 0/0 in the tables
        coef_x0 = abar_prev.sqrt() * betas / one_minus
        coef_xt = alphas.sqrt() * (1.0 - abar_prev) / one_minus
        if self.variance is VarianceKind.BETA:
            rev_var = betas.clone()
        else:
            rev_var = beta_tilde.clone()
            rev_var[1] = beta_tilde[2] if T >= 2 else betas[1]
        rev_var[0] = 0.0
        self._tables: dict[str, Tensor] = {
            "betas": betas,
            "alphas": alphas,
            "alpha_bars": abar,
            "alpha_bars_prev": abar_prev,
            "sqrt_alpha_bars": abar.sqrt(),
            "sqrt_one_minus_alpha_bars": (1.0 - abar).sqrt(),
            "one_minus_alpha_bars": 1.0 - abar,
            "sqrt_alphas": alphas.sqrt(),
            "sqrt_betas": betas.sqrt(),
            "recip_sqrt_alphas": 1.0 / alphas.sqrt(),
            "eps_coef": betas / one_minus.sqrt(),  # beta_t / sqrt(1 - alpha_bar_t), Algorithm 2 line 4
            "posterior_variance": beta_tilde,
            "posterior_log_variance": torch.log(beta_tilde),
            "posterior_coef_x0": coef_x0,
            "posterior_coef_xt": coef_xt,
            "reverse_variance": rev_var,
            "reverse_log_variance": torch.log(rev_var),
        }
        self._device_cache: dict[tuple[str, str], Tensor] = {}

    # ---------------------------------------------------------------------------------------------
    # bookkeeping
    # ---------------------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self.schedule.T

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion({self.schedule!r}, prediction={self.prediction.value!r}, "
            f"variance={self.variance.value!r})"
        )

    def table(self, name: str) -> Tensor:
        """A float64 (T+1,) table: betas, alphas, alpha_bars, alpha_bars_prev, posterior_variance, ...,
        reverse_variance (sigma_t^2 including the decoder variance at t = 1), reverse_log_variance."""
        if name not in self._tables:
            raise KeyError(f"unknown table {name!r}; available: {', '.join(sorted(self._tables))}")
        return self._tables[name]

    def timesteps(self, t: Tensor | int, x: Tensor, *, low: int = 1) -> Tensor:
        """Validate ``t`` for a batch ``x: (B, ...)``: a (B,) long tensor with values in ``low..T``.

        Type and shape are checked always (no cost). The value range is checked for ``t`` on the CPU only:
        reading t.min() of a GPU tensor is a host synchronisation, and the methods below run it on every call of
        a sampler's or trainer's inner loop. There the times are checked once where they are made: the samplers
        build their grid on the CPU (:func:`elbolab.diffusion.samplers.time_grid`) and the objective draws t
        in range by construction."""
        B = x.shape[0]
        if isinstance(t, int) and not isinstance(t, bool):
            t = torch.full((B,), t, dtype=torch.long, device=x.device)
        if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"t must be an int or an integer tensor of shape ({B},), got {t!r:.80}")
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},) to match the batch, got {tuple(t.shape)}")
        if t.numel() and t.device.type == "cpu" and (int(t.min()) < low or int(t.max()) > self.T):
            raise ValueError(
                f"t must lie in {low}..{self.T} (T = {self.T}), got values in {int(t.min())}..{int(t.max())}"
            )
        return t.to(device=x.device, dtype=torch.long)

    # ---------------------------------------------------------------------------------------------
    # continuous time
    # ---------------------------------------------------------------------------------------------
    def log_snr_at(self, t: Tensor | float) -> Tensor:
        """lambda(t) = log(alpha_bar(t) / (1 - alpha_bar(t))) for float t in (0, T], float64 (CPU)."""
        return self.schedule.log_snr_at(t)

    def alpha_bar_at(self, t: Tensor | float) -> Tensor:
        """alpha_bar(t) for float t in (0, T] (any shape), float64 on the CPU: ``alpha_bars[t]`` at integer t,
        the monotone C^1 log-SNR interpolation in between (:meth:`NoiseSchedule.log_snr_at`)."""
        return self.schedule.alpha_bar_at(t)

    def sigma_ve_at(self, t: Tensor | float) -> Tensor:
        """sigma_VE(t) = sqrt((1 - alpha_bar(t)) / alpha_bar(t)) = exp(-lambda(t) / 2), float64."""
        return torch.exp(-0.5 * self.schedule.log_snr_at(t))

    def t_from_sigma_ve(self, sigma: Tensor | float) -> Tensor:
        """The t in (0, T] with sigma_VE(t) = ``sigma`` (float64), the inverse of :meth:`sigma_ve_at`."""
        return self.schedule.t_from_log_snr(-2.0 * torch.log(torch.as_tensor(sigma, dtype=torch.float64)))

    def split_output(self, model_out: Tensor, x_t: Tensor, alpha_bar: Tensor) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) of a network output at ``x_t`` whose noise level is ``alpha_bar`` (float64,
        broadcastable to ``x_t``, e.g. a 0-dim tensor from :meth:`alpha_bar_at`). No validation of t: the
        samplers check their times once, where they are entered."""
        kind = self.prediction
        if kind is Prediction.EPS:
            return param.x0_from_eps(x_t, model_out, alpha_bar), model_out
        if kind is Prediction.X0:
            return model_out, param.eps_from_x0(x_t, model_out, alpha_bar)
        if kind is Prediction.V:
            return param.x0_from_v(x_t, model_out, alpha_bar), param.eps_from_v(x_t, model_out, alpha_bar)
        eps = param.eps_from_score(model_out, alpha_bar)
        return param.x0_from_eps(x_t, eps, alpha_bar), eps

    def coef(self, name: str, t: Tensor, x: Tensor) -> Tensor:
        """Gather table ``name`` at ``t: (B,)`` as ``x.dtype`` on ``x.device``, shaped ``(B, 1, ..., 1)``.

        Every coefficient is precomputed in float64 and rounded once, so that float32 data never sees
        1 - alpha_bar_t formed in float32."""
        return self.coef64(name, t, x).to(x.dtype)

    def coef64(self, name: str, t: Tensor, x: Tensor) -> Tensor:
        """As :meth:`coef` but float64 (float32 on MPS, which has no float64)."""
        key = (name, str(t.device))
        table = self._device_cache.get(key)
        if table is None:
            src = self.table(name)
            table = src.to(t.device) if t.device.type != "mps" else src.float().to(t.device)
            self._device_cache[key] = table
        return append_dims(table[t], x.ndim)

    # ---------------------------------------------------------------------------------------------
    # forward process
    # ---------------------------------------------------------------------------------------------
    def q_mean_variance(self, x0: Tensor, t: Tensor | int) -> Gaussian:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) for t in 0..T."""
        t = self.timesteps(t, x0, low=0)
        var = self.coef("one_minus_alpha_bars", t, x0).expand_as(x0)
        return Gaussian(self.coef("sqrt_alpha_bars", t, x0) * x0, var, torch.log(var))

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a draw of q(x_t | x_0) (t in 0..T)."""
        t = self.timesteps(t, x0, low=0)
        _same_shape(noise, x0, "noise", "x0")
        return self.coef("sqrt_alpha_bars", t, x0) * x0 + self.coef("sqrt_one_minus_alpha_bars", t, x0) * noise

    def q_step(self, x_prev: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) eps, one forward step q(x_t | x_{t-1}) (t in 1..T)."""
        t = self.timesteps(t, x_prev)
        _same_shape(noise, x_prev, "noise", "x_prev")
        return self.coef("sqrt_alphas", t, x_prev) * x_prev + self.coef("sqrt_betas", t, x_prev) * noise

    def q_step_mean_variance(self, x_prev: Tensor, t: Tensor | int) -> Gaussian:
        """q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I) (t in 1..T)."""
        t = self.timesteps(t, x_prev)
        beta = self.coef("betas", t, x_prev)
        return Gaussian(self.coef("sqrt_alphas", t, x_prev) * x_prev, beta, torch.log(beta))

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> Posterior:
        """q(x_{t-1} | x_t, x_0) = N(mu_q(x_t, x_0), beta_tilde_t I) (Ho et al. 2020, eqs. 6-7; t in 1..T)."""
        t = self.timesteps(t, x_t)
        _same_shape(x0, x_t, "x0", "x_t")
        mean = self.coef("posterior_coef_x0", t, x_t) * x0 + self.coef("posterior_coef_xt", t, x_t) * x_t
        return Posterior(
            mean, self.coef("posterior_variance", t, x_t), self.coef("posterior_log_variance", t, x_t)
        )

    def prior_kl(self, x0: Tensor) -> Tensor:
        """Prior matching term KL(q(x_T | x_0) || N(0, I)) in nats per example: ``(B, ...) -> (B,)``."""
        q = self.q_mean_variance(x0, self.T)
        zeros = torch.zeros_like(x0)
        return sum_flat(normal_kl(q.mean, q.log_variance, zeros, zeros))

    # ---------------------------------------------------------------------------------------------
    # parameterisations
    # ---------------------------------------------------------------------------------------------
    def x0_and_eps(self, model_out: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """(x0_hat, eps_hat) implied by a network output of this diffusion's prediction kind."""
        t = self.timesteps(t, x_t)
        _same_shape(model_out, x_t, "model output", "x_t")
        return self.split_output(model_out, x_t, self.coef64("alpha_bars", t, x_t))

    def predict_x0(self, model_out: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """x0_hat(x_t, t) from a network output (any parameterisation)."""
        return self.x0_and_eps(model_out, x_t, t)[0]

    def predict_eps(self, model_out: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """eps_hat(x_t, t) from a network output (any parameterisation)."""
        return self.x0_and_eps(model_out, x_t, t)[1]

    def predict_score(self, model_out: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """score_hat = grad log q(x_t) estimate = -eps_hat / sqrt(1 - alpha_bar_t)."""
        t = self.timesteps(t, x_t)
        return param.score_from_eps(self.predict_eps(model_out, x_t, t), self.coef64("alpha_bars", t, x_t))

    def predict_v(self, model_out: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """v_hat = sqrt(alpha_bar_t) eps_hat - sqrt(1 - alpha_bar_t) x0_hat."""
        t = self.timesteps(t, x_t)
        x0, eps = self.x0_and_eps(model_out, x_t, t)
        return param.v_from_eps_x0(eps, x0, self.coef64("alpha_bars", t, x_t))

    def model_output_from_eps(self, eps: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
        """The inverse: the network output (of this diffusion's kind) that corresponds to ``eps`` at ``x_t``."""
        t = self.timesteps(t, x_t)
        return param.prediction_from_eps(self.prediction, eps, x_t, self.coef64("alpha_bars", t, x_t))

    def training_target(self, x0: Tensor, noise: Tensor, t: Tensor | int) -> Tensor:
        """What the network should output for x_t = q_sample(x0, t, noise) (the L_simple regression target)."""
        t = self.timesteps(t, x0)
        return param.target(self.prediction, x0, noise, self.coef64("alpha_bars", t, x0))

    # ---------------------------------------------------------------------------------------------
    # reverse process
    # ---------------------------------------------------------------------------------------------
    def p_mean_variance(
        self, model_out: Tensor, x_t: Tensor, t: Tensor | int, *, clip_x0: bool = False
    ) -> ReverseStep:
        """p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) from a network output at ``(x_t, t)``.

        mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) (line 4 of Algorithm 2 of
        Ho et al. 2020), which equals mu_q(x_t, x0_hat). With ``clip_x0`` the x0 estimate is clipped to
        [-1, 1] first (image data), and mu_q(x_t, clip(x0_hat)) is used with the matching eps_hat.
        """
        t = self.timesteps(t, x_t)
        x0, eps = self.x0_and_eps(model_out, x_t, t)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = param.eps_from_x0(x_t, x0, self.coef64("alpha_bars", t, x_t))
            mean = self.coef("posterior_coef_x0", t, x_t) * x0 + self.coef("posterior_coef_xt", t, x_t) * x_t
        else:
            mean = self.coef("recip_sqrt_alphas", t, x_t) * (x_t - self.coef("eps_coef", t, x_t) * eps)
        return ReverseStep(
            mean, self.coef("reverse_variance", t, x_t), self.coef("reverse_log_variance", t, x_t), x0, eps
        )

    def model_forward(self, model: nn.Module, x_t: Tensor, t: Tensor | int, y: Tensor | None = None) -> Tensor:
        """``model(x_t, t, y)`` with ``t`` validated; raises ValueError if the output shape differs from x_t."""
        t = self.timesteps(t, x_t)
        out = model(x_t, t, y)
        _same_shape(out, x_t, "model output", "x_t")
        return out

    # ---------------------------------------------------------------------------------------------
    # ELBO
    # ---------------------------------------------------------------------------------------------
    def elbo_terms(self, model: nn.Module, x0: Tensor, **kwargs: Any) -> ELBOTerms:
        """The ELBO of ``x0`` in bits/dim; see :func:`elbolab.diffusion.elbo.elbo_terms` for the keywords."""
        from elbolab.diffusion.elbo import elbo_terms

        return elbo_terms(self, model, x0, **kwargs)


def _same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")

