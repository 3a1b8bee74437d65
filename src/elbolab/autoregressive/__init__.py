"""The autoregressive family: a gated PixelCNN that computes p(x) exactly (lecture notes 004 set the VAE
against PixelRNN/PixelCNN, the models whose likelihood needs no bound).

- :mod:`elbolab.autoregressive.config`: :class:`PixelCNNConfig`, :class:`PixelCNNOutput`;
- :mod:`elbolab.autoregressive.network`: :class:`GatedPixelCNN` (masked convolutions in :mod:`elbolab.nn.masked`);
- :mod:`elbolab.autoregressive.distributions`: the softmax and discretised logistic mixture outputs;
- :mod:`elbolab.autoregressive.likelihood`: :func:`log_likelihood` (nats), :func:`bits_per_dim`,
  :class:`PixelCNNObjective`;
- :mod:`elbolab.autoregressive.sampling`: :func:`sample`, sub-pixel by sub-pixel, timed.
"""

from elbolab.autoregressive.config import PixelCNNConfig, PixelCNNOutput
from elbolab.autoregressive.distributions import CategoricalOutput, LogisticMixtureOutput, from_levels, to_levels
from elbolab.autoregressive.likelihood import PixelCNNObjective, bits_per_dim, log_likelihood
from elbolab.autoregressive.network import GatedLayer, GatedPixelCNN, build_pixelcnn
from elbolab.autoregressive.sampling import PixelCNNSamples, sample

__all__ = [
    "PixelCNNConfig", "PixelCNNOutput", "CategoricalOutput", "LogisticMixtureOutput", "from_levels", "to_levels",
    "PixelCNNObjective", "bits_per_dim", "log_likelihood", "GatedLayer", "GatedPixelCNN", "build_pixelcnn",
    "PixelCNNSamples", "sample",
]
