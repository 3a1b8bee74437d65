"""Four equivalent parameterisations of the reverse mean: predict x0, the noise eps, the score, or v.

With x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4; Luo 2022, eq. 69), writing
a = sqrt(alpha_bar_t) and s = sqrt(1 - alpha_bar_t) (so a^2 + s^2 = 1):

- x0 from eps:   x0 = (x_t - s eps) / a                    (Luo 2022, eq. 115)
- eps from x0:   eps = (x_t - a x0) / s
- score:         grad log q(x_t) = -eps / s                 (Tweedie; Luo 2022, eq. 151)
- v:             v = a eps - s x0                            (Salimans & Ho 2022, "v-prediction")
                 x0 = a x_t - s v,   eps = s x_t + a v

Every function takes ``alpha_bar`` broadcastable to ``x_t`` (e.g. ``(B, 1, 1, 1)``) and is exact up to
floating-point rounding; :func:`convert` goes between any two kinds through eps. The coefficients a and s
are computed in ``alpha_bar``'s dtype and then cast to the data's dtype: pass a float64 ``alpha_bar`` (as
:class:`~elbolab.diffusion.process.GaussianDiffusion` does), because 1 - alpha_bar_t computed in float32 loses
~3 significant digits at small t (alpha_bar_1 = 0.9999).

:data:`Prediction` is :class:`elbolab.config.PredictionKind` (one definition, two names): ``EPS``, ``X0``,
``V``, ``SCORE`` with values ``"eps"``, ``"x0"``, ``"v"``, ``"score"``.
"""

from __future__ import annotations

from torch import Tensor

from elbolab.config import coerce
from elbolab.diffusion.config import PredictionKind

__all__ = [
    "Prediction",
    "convert",
    "eps_from_prediction",
    "eps_from_score",
    "eps_from_v",
    "eps_from_x0",
    "parse_prediction",
    "prediction_from_eps",
    "score_from_eps",
    "target",
    "v_from_eps_x0",
    "x0_from_eps",
    "x0_from_v",
]

Prediction = PredictionKind


def parse_prediction(kind: Prediction | str) -> Prediction:
    """``kind`` as a :data:`Prediction` member; raises a ValueError listing the choices."""
    return coerce(kind, Prediction, "prediction")


def _a_s(alpha_bar: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(alpha_bar), sqrt(1 - alpha_bar)) computed in alpha_bar's precision, cast to ``like.dtype``."""
    return alpha_bar.sqrt().to(like.dtype), (1.0 - alpha_bar).sqrt().to(like.dtype)


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)."""
    a, s = _a_s(alpha_bar, x_t)
    return (x_t - s * eps) / a


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar)."""
    a, s = _a_s(alpha_bar, x_t)
    return (x_t - a * x0) / s


def score_from_eps(eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """score = grad_{x_t} log q(x_t) = -eps / sqrt(1 - alpha_bar)."""
    return -eps / _a_s(alpha_bar, eps)[1]


def eps_from_score(score: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = -sqrt(1 - alpha_bar) score."""
    return -_a_s(alpha_bar, score)[1] * score


def v_from_eps_x0(eps: Tensor, x0: Tensor, alpha_bar: Tensor) -> Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0."""
    a, s = _a_s(alpha_bar, eps)
    return a * eps - s * x0


def x0_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """x0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
    a, s = _a_s(alpha_bar, x_t)
    return a * x_t - s * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
    a, s = _a_s(alpha_bar, x_t)
    return s * x_t + a * v


def eps_from_prediction(kind: Prediction, out: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """The noise estimate implied by a network output ``out`` of the given kind."""
    kind = parse_prediction(kind)
    if kind is Prediction.EPS:
        return out
    if kind is Prediction.X0:
        return eps_from_x0(x_t, out, alpha_bar)
    if kind is Prediction.V:
        return eps_from_v(x_t, out, alpha_bar)
    return eps_from_score(out, alpha_bar)


def prediction_from_eps(kind: Prediction, eps: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """The output of the given kind that corresponds to the noise estimate ``eps`` at ``x_t``."""
    kind = parse_prediction(kind)
    if kind is Prediction.EPS:
        return eps
    if kind is Prediction.SCORE:
        return score_from_eps(eps, alpha_bar)
    x0 = x0_from_eps(x_t, eps, alpha_bar)
    if kind is Prediction.X0:
        return x0
    return v_from_eps_x0(eps, x0, alpha_bar)


def convert(out: Tensor, source: Prediction, target_kind: Prediction, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """Convert a prediction of kind ``source`` at ``(x_t, alpha_bar)`` to kind ``target_kind``."""
    source, target_kind = parse_prediction(source), parse_prediction(target_kind)
    if source is target_kind:
        return out
    return prediction_from_eps(target_kind, eps_from_prediction(source, out, x_t, alpha_bar), x_t, alpha_bar)


def target(kind: Prediction, x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The regression target of a network of the given kind for x_t = sqrt(alpha_bar) x0 + sqrt(1-alpha_bar) eps.

    EPS: eps (Algorithm 1 of Ho et al. 2020); X0: x0; V: sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0;
    SCORE: grad log q(x_t | x0) = -eps / sqrt(1 - alpha_bar) (denoising score matching, Vincent 2011).
    """
    kind = parse_prediction(kind)
    if kind is Prediction.EPS:
        return eps
    if kind is Prediction.X0:
        return x0
    if kind is Prediction.V:
        return v_from_eps_x0(eps, x0, alpha_bar)
    return score_from_eps(eps, alpha_bar)
