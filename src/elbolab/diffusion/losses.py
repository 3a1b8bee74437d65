"""Training losses of a DDPM and the objective the Trainer calls.

- ``LossKind.SIMPLE``: L_simple of Algorithm 1 of Ho et al. 2020 for any parameterisation: the mean squared
  error between the network output and its target (eps, x0, v or the score grad log q(x_t|x_0)), averaged
  over the data dimensions, with t ~ U{1..T}. (For ``SCORE`` this is unweighted denoising score matching, whose
  target -eps / sqrt(1 - alpha_bar_t) is large at small t.)
- ``LossKind.ELBO``: the true variational bound: T * L_{t-1} / D nats per dimension with t ~ U{1..T}, where
  L_{t-1} is the Gaussian KL of the denoising-matching term (t >= 2) or the decoder NLL (t = 1). Its mean
  is the negative ELBO minus the (constant) prior term. For t >= 2 it equals :func:`elbo_weight` times the
  squared error of the prediction plus a constant: for eps, beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))
  (Ho et al. 2020, eq. 12) and for x0, alpha_bar_{t-1} beta_t^2 / (2 sigma_t^2 (1 - alpha_bar_t)^2) (Luo 2022,
  eq. 99 with sigma_t^2 = sigma_q^2).
- ``LossKind.MIN_SNR``: Min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
  Weighting Strategy"): L_simple of each example times :func:`min_snr_weight`, so that the loss equals
  min(SNR_t, gamma) ||x0 - x0_hat||^2 whatever is predicted (eps: min(SNR_t, gamma) / SNR_t; x0:
  min(SNR_t, gamma); v: min(SNR_t, gamma) / (SNR_t + 1); score: min(SNR_t, gamma) (1 - alpha_bar_t) / SNR_t).
- ``TimeSampling.LOGNORMAL`` (:class:`LogNormalTimestepSampler`): EDM's training noise distribution (Karras et
  al. 2022, Table 1: ln sigma ~ N(P_mean = -1.2, P_std^2 = 1.2^2)) in the VE coordinates of the process,
  sigma = sigma_VE(t), read back as a float t in [1, T] (:meth:`GaussianDiffusion.t_from_sigma_ve`): the
  network is trained at continuous times, as the fractional-time samplers call it. With L_simple on v this is
  EDM's loss weighting for sigma_data = 1 (its F-target with c_skip = alpha^2, c_out = sigma_VP is -v).
- Importance sampling of t (Nichol & Dhariwal 2021, Sec. 3.3): p_t proportional to sqrt(E[L_t^2]) over the
  last 10 losses at each t, uniform until every t has 10 losses, mixed with 0.1 % of the uniform
  distribution; each example is weighted by 1 / (T p_t) so that the loss keeps its expectation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from elbolab.config import coerce
from elbolab.diffusion import parameterization as param
from elbolab.diffusion.config import DiffusionConfig, LossKind, TimeSampling
from elbolab.diffusion.elbo import DecoderKind, parse_decoder, timestep_terms
from elbolab.diffusion.parameterization import Prediction, parse_prediction
from elbolab.diffusion.process import GaussianDiffusion
from elbolab.diffusion.schedules import NoiseSchedule
from elbolab.math import append_dims, mean_flat, num_dims
from elbolab.objectives import LossOutput, Objective

__all__ = [
    "DiffusionObjective",
    "LogNormalTimestepSampler",
    "LossAwareTimestepSampler",
    "UniformTimestepSampler",
    "build_diffusion",
    "elbo_weight",
    "min_snr_weight",
    "simple_loss",
]


def parse_loss(kind: LossKind | str) -> LossKind:
    """``kind`` as a :class:`~elbolab.config.LossKind`; raises a ValueError listing the choices."""
    return coerce(kind, LossKind, "loss")


def build_diffusion(cfg: DiffusionConfig) -> GaussianDiffusion:
    """The :class:`GaussianDiffusion` of a :class:`~elbolab.config.DiffusionConfig` (schedule, T, prediction,
    variance). The loss settings are read by :meth:`DiffusionObjective.from_config`."""
    schedule = NoiseSchedule.from_kind(
        cfg.schedule, cfg.T, beta_start=cfg.beta_start, beta_end=cfg.beta_end, s=cfg.cosine_s
    )
    return GaussianDiffusion(schedule, prediction=cfg.prediction, variance=cfg.variance)


def elbo_weight(diffusion: GaussianDiffusion, t: Tensor, kind: Prediction | str | None = None) -> Tensor:
    """lambda_t with L_{t-1} = lambda_t ||target - prediction||^2 + C_t for t >= 2, float64 ``(B,)``.

    eps: beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)); x0: that times SNR_t (= alpha_bar_{t-1} beta_t^2 /
    (2 sigma_t^2 (1 - alpha_bar_t)^2)); v: times alpha_bar_t; score: times (1 - alpha_bar_t). ``kind`` defaults
    to the diffusion's prediction. C_t = D (log(sigma_t^2 / sigma_q2) + sigma_q2 / sigma_t^2 - 1) / 2 does not
    depend on the network. At t = 1 the decoder term is not of this form (the weight returned is for eps).
    """
    kind = diffusion.prediction if kind is None else parse_prediction(kind)
    t = t.detach().cpu().long()
    betas = diffusion.table("betas")[t]
    alphas = diffusion.table("alphas")[t]
    abar = diffusion.table("alpha_bars")[t]
    sigma2 = diffusion.table("reverse_variance")[t]
    w = betas**2 / (2.0 * sigma2 * alphas * (1.0 - abar))
    factor = {
        Prediction.EPS: torch.ones_like(abar),
        Prediction.X0: abar / (1.0 - abar),
        Prediction.V: abar,
        Prediction.SCORE: 1.0 - abar,
    }[kind]
    return w * factor


def min_snr_weight(diffusion: GaussianDiffusion, t: Tensor, gamma: float,
                   kind: Prediction | str | None = None) -> Tensor:
    """Min-SNR-gamma weight of the L_simple of ``kind`` (default: the diffusion's prediction) at ``t: (B,)``,
    float64 ``(B,)``: min(SNR_t, gamma) times ||x0 error||^2 / ||target error||^2 (Hang et al. 2023, eq. 5)."""
    if not gamma > 0:
        raise ValueError(f"min_snr_gamma = {gamma!r} must be > 0")
    kind = diffusion.prediction if kind is None else parse_prediction(kind)
    t = t.detach().cpu().long()
    abar = diffusion.table("alpha_bars")[t]
    snr = abar / (1.0 - abar)
    clipped = torch.clamp(snr, max=gamma)
    factor = {
        Prediction.EPS: 1.0 / snr,
        Prediction.X0: torch.ones_like(snr),
        Prediction.V: 1.0 / (snr + 1.0),
        Prediction.SCORE: (1.0 - abar) / snr,
    }[kind]
    return clipped * factor


def simple_loss(diffusion: GaussianDiffusion, model_out: Tensor, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Per-example L_simple ``(B,)``: mean over dimensions of (target - model_out)^2 (Algorithm 1, line 5)."""
    target = diffusion.training_target(x0, noise, t)
    return mean_flat((target - model_out) ** 2)


class _StatelessSampler:
    """A timestep sampler that learns nothing and checkpoints nothing."""

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Nothing to learn."""

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class UniformTimestepSampler(_StatelessSampler):
    """t ~ U{1..T} with unit weights (Algorithm 1, line 3). Stateless."""

    def __init__(self, T: int) -> None:
        self.T = T

    def sample(self, batch: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(t: (B,) long in 1..T, weights: (B,) float32)``."""
        t = torch.randint(1, self.T + 1, (batch,), generator=generator, device=device)
        return t, torch.ones(batch, device=device)


class LogNormalTimestepSampler(_StatelessSampler):
    """ln sigma_VE ~ N(``mean``, ``std``^2) (Karras et al. 2022), clamped to the process's [sigma_VE(1),
    sigma_VE(T)] and read as float t = t(sigma) in [1, T]. Unit weights, stateless. The time inversion runs on the
    CPU in float64 (one small transfer per step on a GPU)."""

    def __init__(self, diffusion: GaussianDiffusion, mean: float = -1.2, std: float = 1.2) -> None:
        if not std > 0:
            raise ValueError(f"std = {std!r} must be > 0")
        self.diffusion, self.mean, self.std = diffusion, float(mean), float(std)
        self.log_sigma_min = math.log(float(diffusion.sigma_ve_at(1.0)))
        self.log_sigma_max = math.log(float(diffusion.sigma_ve_at(float(diffusion.T))))

    def sample(self, batch: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(t: (B,) float64 in [1, T], weights: (B,) float32)``."""
        z = torch.randn(batch, generator=generator, device=device, dtype=torch.float32)
        log_sigma = (self.mean + self.std * z.double().cpu()).clamp(self.log_sigma_min, self.log_sigma_max)
        t = self.diffusion.t_from_sigma_ve(torch.exp(log_sigma)).clamp(1.0, float(self.diffusion.T))
        return t.to(device), torch.ones(batch, device=device)


def continuous_simple_loss(diffusion: GaussianDiffusion, model: nn.Module, x0: Tensor, noise: Tensor, t: Tensor,
                           y: Tensor | None) -> Tensor:
    """Per-example L_simple ``(B,)`` at float times ``t: (B,)`` in (0, T]: x_t from alpha_bar(t) of the
    continuous-time process (:meth:`GaussianDiffusion.alpha_bar_at`), the network called at the unrounded t."""
    ab = append_dims(diffusion.alpha_bar_at(t.detach().double().cpu()).to(x0.device), x0.ndim)
    x_t = (ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise).to(x0.dtype)
    out = model(x_t, t.to(torch.float32), y)
    if out.shape != x_t.shape:
        raise ValueError(f"model output has shape {tuple(out.shape)}, expected x_t's {tuple(x_t.shape)}")
    target = param.target(diffusion.prediction, x0, noise, ab).to(out.dtype)
    return mean_flat((target - out) ** 2)


class LossAwareTimestepSampler:
    """Importance sampling of t by the running second moment of the loss (Nichol & Dhariwal 2021, Sec. 3.3).

    Keeps the last ``history`` (10) per-example losses of every t in ``loss_history: (T, history)`` with
    ``loss_counts: (T,)``; until every t has ``history`` losses it samples uniformly (the warm-up). Then
    p_t = (1 - uniform_prob) sqrt(mean L_t^2) / sum + uniform_prob / T. The state is two tensors
    (:meth:`state_dict`), so it goes into a safetensors checkpoint.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        if history < 1:
            raise ValueError(f"history = {history!r} must be >= 1")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob = {uniform_prob!r} must be in [0, 1]")
        self.T = T
        self.history = history
        self.uniform_prob = uniform_prob
        self.loss_history = torch.zeros(T, history, dtype=torch.float64)
        self.loss_counts = torch.zeros(T, dtype=torch.long)

    @property
    def warmed_up(self) -> bool:
        return bool((self.loss_counts >= self.history).all())

    def probabilities(self) -> Tensor:
        """p_t for t = 1..T, ``(T,)`` float64, summing to one."""
        if not self.warmed_up:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = torch.sqrt((self.loss_history**2).mean(dim=1))
        if not torch.isfinite(w).all() or w.sum() <= 0:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, batch: int, generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(t: (B,) long in 1..T, weights: (B,) = 1 / (T p_t))``."""
        p = self.probabilities().to(device)
        idx = torch.multinomial(p, batch, replacement=True, generator=generator)
        weights = (1.0 / (self.T * p[idx])).float()
        return idx + 1, weights

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record the per-example (unweighted) losses ``losses: (B,)`` observed at ``t: (B,)``."""
        for ti, li in zip(t.detach().cpu().tolist(), losses.detach().double().cpu().tolist()):
            row = ti - 1
            c = int(self.loss_counts[row])
            if c >= self.history:
                self.loss_history[row, :-1] = self.loss_history[row, 1:].clone()
                self.loss_history[row, -1] = li
            else:
                self.loss_history[row, c] = li
            self.loss_counts[row] = c + 1

    def state_dict(self) -> dict[str, Tensor]:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = {"loss_history": (self.T, self.history), "loss_counts": (self.T,)}
        if set(state) != set(expected):
            raise ValueError(f"timestep sampler state must have keys {sorted(expected)}, got {sorted(state)}")
        for k, shape in expected.items():
            if tuple(state[k].shape) != shape:
                raise ValueError(f"timestep sampler state {k!r} has shape {tuple(state[k].shape)}, expected {shape}")
        self.loss_history = state["loss_history"].detach().to(torch.float64).cpu().clone()
        self.loss_counts = state["loss_counts"].detach().to(torch.long).cpu().clone()


class DiffusionObjective(Objective):
    """The DDPM loss for the Trainer (implements :class:`elbolab.objectives.Objective`).

    ``loss(model, x, y, generator)`` draws t (uniformly or by importance) and eps ~ N(0, I), forms
    x_t = sqrt(alpha_bar_t) x + sqrt(1 - alpha_bar_t) eps and returns the weighted mean of the per-example
    loss (``LossKind.SIMPLE``, ``MIN_SNR`` or ``ELBO``, see the module docstring) with metrics ``loss``, ``mse``
    (L_simple of the batch, before any Min-SNR weight) and, for the ELBO loss, ``elbo_bpd`` (the batch estimate
    of the bound without the prior term, in bits/dim). ``decoder`` is the reconstruction decoder of the ELBO
    loss (8-bit images: ``discretized``; continuous toy data: ``gaussian``). ``min_snr_gamma`` is the gamma of
    ``LossKind.MIN_SNR``.
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        loss: LossKind | str = LossKind.SIMPLE,
        importance_sampling: bool = False,
        decoder: DecoderKind | str = DecoderKind.DISCRETIZED,
        min_snr_gamma: float = 5.0,
        t_sampling: TimeSampling | str = TimeSampling.UNIFORM,
        lognormal: tuple[float, float] = (-1.2, 1.2),
    ) -> None:
        self.diffusion = diffusion
        self.loss_kind = parse_loss(loss)
        if not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma = {min_snr_gamma!r} must be > 0")
        self.min_snr_gamma = float(min_snr_gamma)
        self.decoder = parse_decoder(decoder)
        self.importance_sampling = bool(importance_sampling)
        self.t_sampling = coerce(t_sampling, TimeSampling, "t_sampling")
        if self.t_sampling is TimeSampling.LOGNORMAL and (self.loss_kind is not LossKind.SIMPLE or importance_sampling):
            raise ValueError("t_sampling = 'lognormal' needs loss = 'simple' without importance sampling, got "
                             f"loss = {self.loss_kind.value!r}, importance_sampling = {bool(importance_sampling)}")
        self.timestep_sampler: UniformTimestepSampler | LossAwareTimestepSampler | LogNormalTimestepSampler
        if self.t_sampling is TimeSampling.LOGNORMAL:
            self.timestep_sampler = LogNormalTimestepSampler(diffusion, *lognormal)
        elif importance_sampling:
            self.timestep_sampler = LossAwareTimestepSampler(diffusion.T)
        else:
            self.timestep_sampler = UniformTimestepSampler(diffusion.T)

    @classmethod
    def from_config(
        cls, cfg: DiffusionConfig, decoder: DecoderKind | str = DecoderKind.DISCRETIZED
    ) -> DiffusionObjective:
        return cls(build_diffusion(cfg), cfg.loss, cfg.importance_sampling, decoder, cfg.min_snr_gamma,
                   cfg.t_sampling, (cfg.lognormal_mean, cfg.lognormal_std))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        """x: (B, C, H, W) float in [-1, 1] (or (B, D) toy data); y: (B,) long labels or None."""
        d = self.diffusion
        B = x.shape[0]
        t, weights = self.timestep_sampler.sample(B, generator, x.device)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        metrics: dict[str, float] = {}
        if t.is_floating_point():  # continuous t (lognormal)
            per_example = continuous_simple_loss(d, model, x, noise, t, y)
            metrics["mse"] = float(per_example.detach().mean())
        elif self.loss_kind in (LossKind.SIMPLE, LossKind.MIN_SNR):
            x_t = d.q_sample(x, t, noise)
            out = d.model_forward(model, x_t, t, y)
            per_example = simple_loss(d, out, x, noise, t)
            metrics["mse"] = float(per_example.detach().mean())
            if self.loss_kind is LossKind.MIN_SNR:
                w = min_snr_weight(d, t, self.min_snr_gamma).to(per_example.device, per_example.dtype)
                per_example = w * per_example
        else:
            nats = timestep_terms(d, model, x, t, noise, y=y, decoder=self.decoder)
            per_example = d.T * nats / num_dims(x)
        self.timestep_sampler.update(t, per_example)
        loss = (weights.to(per_example.dtype) * per_example).mean()
        if self.loss_kind is LossKind.ELBO:
            metrics["elbo_bpd"] = float(loss.detach()) / math.log(2.0)
        metrics["loss"] = float(loss.detach())
        return LossOutput(loss=loss, metrics=metrics)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint (the importance sampler's loss history; empty for uniform sampling)."""
        return self.timestep_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.timestep_sampler.load_state_dict(state)
