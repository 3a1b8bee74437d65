"""Toy distributions with exact densities, for tests and teaching.

- :class:`GaussianMixture` in R^D (especially 2-D): exact ``log_prob``, exact ``score`` = grad_x log p(x), and
  its diffused versions. If x0 ~ sum_k w_k N(mu_k, Sigma_k) and x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
  (eq. 70 of Luo 2022 / eq. 4 of Ho et al. 2020), then x_t ~ sum_k w_k N(sqrt(alpha_bar) mu_k,
  alpha_bar Sigma_k + (1 - alpha_bar) I): :meth:`GaussianMixture.noised`. So the exact noisy score, the exact
  denoiser E[x0 | x_t] (Tweedie: (x_t + (1 - alpha_bar) grad log p_t(x_t)) / sqrt(alpha_bar)) and the exact
  optimal eps-prediction -sqrt(1 - alpha_bar) grad log p_t(x_t) are available to check diffusion/score code.
- :class:`Checkerboard`: uniform on the black cells of a board (exact, piecewise-constant density).
- :class:`TwoMoons`, :class:`SwissRoll`: samplers only (their noisy densities have no closed form).
- :class:`Mixture1D`: a 1-D Gaussian mixture sampled by the inverse CDF, the "data generation 101" of the
  lecture notes (001): u ~ U(0, 1), x = P^{-1}(u) where P(x) = int_{-inf}^x p; P^{-1} by safeguarded Newton.

All samplers take an explicit ``torch.Generator``. Parameters are float64; densities and scores are computed
in float64 and returned in the input's dtype (differentiable, so autograd checks work).
"""

from __future__ import annotations

import abc
import enum
import math
from typing import Sequence, Union

import torch

from elbolab.data.datasets import PointDataset

Scalar = Union[float, torch.Tensor]


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"pass an explicit torch.Generator for sampling, got {generator!r}")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n = {n!r}: expected an integer >= 0")


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, Sigma_k) in R^D.

    ``weights: (K,)`` (normalised here), ``means: (K, D)``, ``covariances: (K, D, D)`` symmetric positive definite.
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor, means: Sequence[Sequence[float]] | torch.Tensor,
                 covariances: torch.Tensor | Sequence) -> None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        mu = torch.as_tensor(means, dtype=torch.float64)
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        if w.ndim != 1 or mu.ndim != 2 or mu.shape[0] != w.shape[0] or cov.shape != (*mu.shape, mu.shape[1]):
            raise ValueError(f"GaussianMixture expects weights (K,), means (K, D), covariances (K, D, D); got "
                             f"{tuple(w.shape)}, {tuple(mu.shape)}, {tuple(cov.shape)}")
        if (w < 0).any() or float(w.sum()) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {w.tolist()}")
        if not torch.allclose(cov, cov.transpose(-1, -2)):
            raise ValueError("covariances must be symmetric")
        # Sigma_k = U_k diag(lambda_k) U_k^T; then scale^2 Sigma_k + sigma^2 I = U_k diag(scale^2 lambda_k + sigma^2) U_k^T,
        # so every noisy version is diagonal in the same basis (no per-noise-level factorisation needed).
        evals, evecs = torch.linalg.eigh(cov)
        if (evals <= 0).any():
            bad = torch.nonzero((evals <= 0).any(1)).flatten().tolist()
            raise ValueError(f"covariance(s) {bad} are not positive definite")
        self.weights = w / w.sum()
        self.means = mu
        self.covariances = cov
        self._evals, self._evecs = evals, evecs  # (K, D), (K, D, D) with eigenvectors as columns

    # ---- constructors -----------------------------------------------------------------------------
    @classmethod
    def isotropic(cls, weights: Sequence[float], means: Sequence[Sequence[float]] | torch.Tensor,
                  std: float | Sequence[float]) -> "GaussianMixture":
        """Components N(mu_k, std_k^2 I); ``std`` a scalar or one per component."""
        mu = torch.as_tensor(means, dtype=torch.float64)
        k, d = mu.shape
        s = torch.as_tensor(std, dtype=torch.float64).expand(k)
        if (s <= 0).any():
            raise ValueError(f"std must be > 0, got {s.tolist()}")
        return cls(weights, mu, s[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64))

    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.0, std: float = 0.2) -> "GaussianMixture":
        """``k`` equal-weight isotropic Gaussians evenly spaced on a circle (the classic 2-D toy)."""
        if k < 1:
            raise ValueError(f"k = {k}: need at least one component")
        angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
        means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        return cls.isotropic(torch.ones(k), means, std)

    # ---- basic properties -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    def mean(self) -> torch.Tensor:
        """E[x]: (D,)."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Cov[x] = sum_k w_k (Sigma_k + mu_k mu_k^T) - E[x] E[x]^T: (D, D)."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covariances + self.means[:, :, None] * self.means[:, None])
        return second - torch.outer(m, m)

    # ---- sampling ---------------------------------------------------------------------------------
    def sample_with_labels(self, n: int, generator: torch.Generator,
                           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x: (n, D), k: (n,) long)``: component k ~ Cat(w), then x = mu_k + L_k eps, Sigma_k = L_k L_k^T."""
        _check_n(n)
        _check_generator(generator)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator) if n else \
            torch.zeros(0, dtype=torch.long)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self._evecs[k], self._evals[k].sqrt() * eps)
        return x.to(dtype), k

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(n, D)`` samples."""
        return self.sample_with_labels(n, generator, dtype)[0]

    # ---- exact density and score ------------------------------------------------------------------
    def _check_x(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")

    def _terms(self, x: torch.Tensor, scale: Scalar = 1.0, sigma: Scalar = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """For the law of scale * x0 + sigma * eps (scale, sigma: scalars or (B,)), with C_k = scale^2 Sigma_k + sigma^2 I
        and m_k = scale mu_k: log(w_k N(x; m_k, C_k)): (B, K), and -C_k^{-1}(x - m_k): (B, K, D)."""
        self._check_x(x)
        x64 = x.to(torch.float64)
        b = x.shape[0]
        s = torch.as_tensor(scale, dtype=torch.float64).reshape(-1, 1, 1)  # (1 or B, 1, 1)
        v = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1) ** 2
        if s.shape[0] not in (1, b) or v.shape[0] not in (1, b):
            raise ValueError(f"scale/sigma must be scalars or have shape ({b},)")
        lam = s ** 2 * self._evals[None] + v  # eigenvalues of C_k: (1|B, K, D)
        diff = x64[:, None, :] - s * self.means[None]  # (B, K, D)
        proj = torch.einsum("kdi,bkd->bki", self._evecs, diff)  # U_k^T (x - m_k)
        log_comp = (-0.5 * (proj ** 2 / lam).sum(-1) - 0.5 * torch.log(lam).sum(-1)
                    - 0.5 * self.dim * math.log(2 * math.pi) + torch.log(self.weights))
        grad = -torch.einsum("kid,bkd->bki", self._evecs, proj / lam)  # -U_k diag(1/lam) U_k^T (x - m_k)
        return log_comp, grad

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x): (B,) for x: (B, D)."""
        log_comp, _ = self._terms(x)
        return torch.logsumexp(log_comp, dim=1).to(x.dtype)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities p(k | x): (B, K)."""
        log_comp, _ = self._terms(x)
        return torch.softmax(log_comp, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = sum_k p(k|x) (-Sigma_k^{-1} (x - mu_k)): (B, D), exact."""
        return self._score(x, 1.0, 0.0)

    def _score(self, x: torch.Tensor, scale: Scalar, sigma: Scalar) -> torch.Tensor:
        log_comp, grad = self._terms(x, scale, sigma)
        r = torch.softmax(log_comp, dim=1)
        return (r[..., None] * grad).sum(1).to(x.dtype)

    # ---- diffused versions ------------------------------------------------------------------------
    def affine(self, scale: float, sigma: float) -> "GaussianMixture":
        """The law of ``scale * x + sigma * eps``, eps ~ N(0, I): means scale mu_k, covariances scale^2 Sigma_k + sigma^2 I."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, scale * self.means, scale ** 2 * self.covariances + sigma ** 2 * eye)

    @staticmethod
    def _alpha_bar(alpha_bar: Scalar) -> torch.Tensor:
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        if (ab <= 0).any() or (ab > 1).any():
            raise ValueError(f"alpha_bar must lie in (0, 1], got {alpha_bar!r}")
        return ab

    def noised(self, alpha_bar: float) -> "GaussianMixture":
        """Marginal q(x_t) of x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps: again a Gaussian mixture."""
        ab = float(self._alpha_bar(alpha_bar))
        return self.affine(math.sqrt(ab), math.sqrt(1.0 - ab))

    def perturbed(self, sigma: float) -> "GaussianMixture":
        """Marginal of x + sigma * eps (variance-exploding noise of score-based models, Song & Ermon 2019)."""
        if sigma < 0:
            raise ValueError(f"sigma = {sigma}: must be >= 0")
        return self.affine(1.0, sigma)

    def noisy_score(self, x_t: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
        """grad log q(x_t) for x_t: (B, D); ``alpha_bar`` a float or a (B,) tensor (one per example)."""
        ab = self._alpha_bar(alpha_bar)
        return self._score(x_t, ab.sqrt(), (1 - ab).sqrt())

    def denoise(self, x_t: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
        """E[x0 | x_t] = (x_t + (1 - alpha_bar) grad log q(x_t)) / sqrt(alpha_bar) (Tweedie's formula): (B, D)."""
        ab = self._alpha_bar(alpha_bar).to(x_t.dtype).reshape(-1, 1)
        return (x_t + (1 - ab) * self.noisy_score(x_t, alpha_bar)) / ab.sqrt()

    def optimal_eps(self, x_t: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
        """E[eps | x_t] = -sqrt(1 - alpha_bar) grad log q(x_t): the minimiser of the eps-prediction loss: (B, D)."""
        ab = self._alpha_bar(alpha_bar).to(x_t.dtype).reshape(-1, 1)
        return -(1 - ab).sqrt() * self.noisy_score(x_t, alpha_bar)


class Mixture1D:
    """p(x) = sum_k w_k N(x; mu_k, sigma_k^2) on the real line, with cdf, inverse cdf and inverse-CDF sampling.

    Tensors are 1-D here: ``x: (N,)``. ``self.mixture`` is the same law as a 1-D :class:`GaussianMixture`.
    """

    def __init__(self, weights: Sequence[float], means: Sequence[float], stds: Sequence[float]) -> None:
        mu = torch.as_tensor(means, dtype=torch.float64)
        s = torch.as_tensor(stds, dtype=torch.float64)
        if mu.ndim != 1 or s.shape != mu.shape:
            raise ValueError(f"Mixture1D expects means (K,) and stds (K,), got {tuple(mu.shape)}, {tuple(s.shape)}")
        if (s <= 0).any():
            raise ValueError(f"stds must be > 0, got {s.tolist()}")
        self.mixture = GaussianMixture(weights, mu[:, None], (s ** 2)[:, None, None])
        self.weights, self.means, self.stds = self.mixture.weights, mu, s

    @staticmethod
    def _flat(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 1:
            raise ValueError(f"Mixture1D works on 1-D tensors (N,), got shape {tuple(x.shape)}")
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_prob(self._flat(x)[:, None])

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prob(x).exp()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixture.score(self._flat(x)[:, None])[:, 0]

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """P(x) = sum_k w_k Phi((x - mu_k) / sigma_k): (N,)."""
        x64 = self._flat(x).to(torch.float64)
        return (self.weights * torch.special.ndtr((x64[:, None] - self.means) / self.stds)).sum(1).to(x.dtype)

    def icdf(self, u: torch.Tensor, tol: float = 1e-12, max_iter: int = 100, grid: int = 2048) -> torch.Tensor:
        """P^{-1}(u) for u: (N,) in [0, 1], by Newton's method safeguarded with bisection.

        A table of P on ``grid`` points over [min mu - 40 sigma, max mu + 40 sigma] gives each u a bracket
        [lo, hi] with P(lo) <= u <= P(hi); Newton steps x - (P(x) - u) / p(x) that leave the bracket are replaced by
        its midpoint, so the iteration always converges (typically in 3-5 steps).
        """
        u64 = self._flat(u).to(torch.float64)
        if (u64 < 0).any() or (u64 > 1).any():
            raise ValueError("icdf: u must lie in [0, 1]")
        knots = torch.linspace(float((self.means - 40 * self.stds).min()), float((self.means + 40 * self.stds).max()),
                               grid, dtype=torch.float64)
        table = self.cdf(knots)
        j = torch.searchsorted(table, u64).clamp(1, grid - 1)
        lo, hi = knots[j - 1], knots[j]
        x = 0.5 * (lo + hi)
        for _ in range(max_iter):
            f = self.cdf(x) - u64
            lo = torch.where(f <= 0, x, lo)
            hi = torch.where(f >= 0, x, hi)
            newton = x - f / self.prob(x)
            ok = torch.isfinite(newton) & (newton >= lo) & (newton <= hi)
            x_new = torch.where(ok, newton, 0.5 * (lo + hi))
            step = float((x_new - x).abs().max()) if x.numel() else 0.0
            x = x_new
            if step <= tol * (1 + float(x.abs().max())):
                break
        return x.to(u.dtype if torch.is_floating_point(u) else torch.float64)

    def sample_inverse_cdf(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """x = P^{-1}(u), u ~ U(0, 1): (n,) samples (the notes' "data generation 101")."""
        _check_n(n)
        _check_generator(generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.icdf(u).to(dtype)

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ancestral sampling (component, then Gaussian): (n,). Same law as :meth:`sample_inverse_cdf`."""
        return self.mixture.sample(n, generator, dtype)[:, 0]

    def noised(self, alpha_bar: float) -> "Mixture1D":
        """Law of sqrt(alpha_bar) x + sqrt(1 - alpha_bar) eps."""
        g = self.mixture.noised(alpha_bar)
        return Mixture1D(g.weights, g.means[:, 0], g.covariances[:, 0, 0].sqrt())


class Checkerboard:
    """Uniform density on the black cells of an ``n x n`` board covering [-side/2, side/2]^2.

    Cell (i, j) (column i, row j from the lower-left corner) is black when i + j is even; the density is
    1 / (number of black cells * cell area) there and 0 elsewhere (n = 4, side = 4: 1/8 on 8 unit squares).
    """

    def __init__(self, n: int = 4, side: float = 4.0) -> None:
        if n < 1 or side <= 0:
            raise ValueError(f"Checkerboard needs n >= 1 and side > 0, got n = {n}, side = {side}")
        self.n, self.side = n, float(side)
        self.cell = self.side / n
        ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        black = (ii + jj) % 2 == 0
        self.black_cells = torch.stack([ii[black], jj[black]], dim=1)  # (M, 2) of (i, j)
        self.log_density = -math.log(len(self.black_cells) * self.cell ** 2)

    dim = 2

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Pick a black cell uniformly, then a uniform point in it: (n, 2)."""
        _check_n(n)
        _check_generator(generator)
        c = torch.randint(len(self.black_cells), (n,), generator=generator)
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        return ((self.black_cells[c].to(torch.float64) + u) * self.cell - self.side / 2).to(dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x): log_density on black cells, -inf elsewhere: (B,) for x: (B, 2)."""
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x must have shape (B, 2), got {tuple(x.shape)}")
        idx = torch.floor((x.detach().to(torch.float64) + self.side / 2) / self.cell).long()
        inside = ((idx >= 0) & (idx < self.n)).all(1)
        black = inside & ((idx.sum(1) % 2) == 0)
        out = torch.full((x.shape[0],), -math.inf, dtype=x.dtype)
        out[black] = self.log_density
        return out


class _NoisyCurve(abc.ABC):
    """A 2-D curve sampler plus isotropic Gaussian noise of std ``noise``; subclasses define :meth:`_curve`."""

    dim = 2
    num_classes = 0

    def __init__(self, noise: float) -> None:
        if noise < 0:
            raise ValueError(f"noise = {noise}: must be >= 0")
        self.noise = noise

    @abc.abstractmethod
    def _curve(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise-free points (n, 2) float64 and labels (n,) long."""

    def sample_with_labels(self, n: int, generator: torch.Generator,
                           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x: (n, 2), y: (n,) long)``."""
        _check_n(n)
        _check_generator(generator)
        x, y = self._curve(n, generator)
        x = x + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return x.to(dtype), y

    def sample(self, n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(n, 2)`` samples."""
        return self.sample_with_labels(n, generator, dtype)[0]


class TwoMoons(_NoisyCurve):
    """Two interleaving half circles (as scikit-learn's make_moons), centred, plus Gaussian noise; labels = moon."""

    num_classes = 2

    def __init__(self, noise: float = 0.05) -> None:
        super().__init__(noise)

    def _curve(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        moon = torch.randint(2, (n,), generator=generator)
        theta = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        upper = torch.stack([theta.cos(), theta.sin()], 1)
        lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], 1)
        return torch.where(moon[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25], dtype=torch.float64), moon


class SwissRoll(_NoisyCurve):
    """2-D swiss roll: t = 1.5 pi (1 + 2 u), x = (t cos t, t sin t) / 5 + noise * eps (FFJORD's toy scaling);
    unlabelled (-1)."""

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__(noise)

    def _curve(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        return torch.stack([t * t.cos(), t * t.sin()], 1) / 5, torch.full((n,), -1, dtype=torch.long)


class ToyName(str, enum.Enum):
    """Names accepted by :func:`load_toy` (and by ``DataConfig.name``)."""

    GAUSSIAN_MIXTURE = "gaussian-mixture"  # 8 Gaussians on a ring of radius 2, std 0.2
    TWO_MOONS = "two-moons"
    SWISS_ROLL = "swiss-roll"
    CHECKERBOARD = "checkerboard"  # 4 x 4 board on [-2, 2]^2
    MIXTURE_1D = "mixture-1d"  # 3 components, sampled by the inverse CDF

    @classmethod
    def parse(cls, name: "str | ToyName") -> "ToyName":
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown toy distribution {name!r}; choices: {', '.join(m.value for m in cls)}") from None


ToyDistribution = Union[GaussianMixture, Mixture1D, Checkerboard, TwoMoons, SwissRoll]


def make_toy(name: str | ToyName) -> ToyDistribution:
    """The distribution object behind a toy name, with its default parameters."""
    name = ToyName.parse(name)
    if name is ToyName.GAUSSIAN_MIXTURE:
        return GaussianMixture.ring(k=8, radius=2.0, std=0.2)
    if name is ToyName.TWO_MOONS:
        return TwoMoons()
    if name is ToyName.SWISS_ROLL:
        return SwissRoll()
    if name is ToyName.CHECKERBOARD:
        return Checkerboard()
    return Mixture1D(weights=(0.3, 0.5, 0.2), means=(-2.0, 0.5, 2.5), stds=(0.5, 0.7, 0.3))


def load_toy_dataset(name: str | ToyName, n: int, generator: torch.Generator) -> PointDataset:
    """``n`` points of a toy distribution as a :class:`PointDataset` ``(n, D)`` float32.

    Labels: the mixture component (gaussian-mixture), the moon (two-moons), -1 otherwise (mixture-1d is
    sampled by the inverse CDF, which draws no component).
    """
    dist = make_toy(name)
    name = ToyName.parse(name)
    if isinstance(dist, GaussianMixture):
        x, y = dist.sample_with_labels(n, generator)
        return PointDataset(x, y, name=name.value, num_classes=dist.num_components)
    if isinstance(dist, _NoisyCurve):
        x, y = dist.sample_with_labels(n, generator)
        return PointDataset(x, y, name=name.value, num_classes=dist.num_classes)
    if isinstance(dist, Mixture1D):
        return PointDataset(dist.sample_inverse_cdf(n, generator)[:, None], name=name.value)
    return PointDataset(dist.sample(n, generator), name=name.value)


def load_toy(name: str | ToyName, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` samples ``(n, D)`` float32 of a toy distribution (D = 1 for mixture-1d, else 2)."""
    return load_toy_dataset(name, n, generator).points
