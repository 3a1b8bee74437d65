"""Configuration of the autoregressive PixelCNN family (the ``[pixelcnn]`` section of a run's config)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from elbolab.config import ConfigError

__all__ = ["PixelCNNOutput", "PixelCNNConfig"]


class PixelCNNOutput(str, enum.Enum):
    """The distribution of one sub-pixel given the past.

    ``softmax``: a categorical over the ``num_levels`` values (van den Oord et al. 2016a, Sec. 5.3: 256-way);
    ``logistic_mixture``: a mixture of ``num_mixtures`` discretised logistics (Salimans et al. 2017,
    PixelCNN++, Sec. 2.1; here one mixture per channel, conditioned on the earlier channels by the masks).
    """

    SOFTMAX = "softmax"
    LOGISTIC_MIXTURE = "logistic_mixture"


@dataclass
class PixelCNNConfig:
    """A gated PixelCNN (van den Oord et al. 2016b).

    ``in_channels`` / ``image_size`` are set from the data. ``channels``: features per stack (a multiple
    of ``in_channels``: one group per colour channel); ``num_layers``: gated layers after the first (mask A)
    one; ``kernel_size``: odd side k of the vertical k x k and horizontal 1 x k kernels; ``num_classes > 0``
    conditions every gate on the class (the h-term of eq. 4); ``num_levels``: values per sub-pixel (256 for
    8-bit data, 2 for binary); ``num_mixtures``: logistic components (``logistic_mixture`` only).
    """

    in_channels: int = 1
    image_size: int = 28
    channels: int = 64
    num_layers: int = 7
    kernel_size: int = 5
    num_classes: int = 0
    output: PixelCNNOutput = PixelCNNOutput.SOFTMAX
    num_levels: int = 256
    num_mixtures: int = 5

    def validate(self, prefix: str) -> None:
        """Raise :class:`~elbolab.config.ConfigError` naming ``<prefix>.<field>`` for a value out of range."""

        def bad(name: str, must: str) -> ConfigError:
            return ConfigError(f"{prefix}.{name} = {getattr(self, name)!r} must be {must}")

        def integer(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, int) and not isinstance(v, bool)

        for name, low in (("in_channels", 1), ("image_size", 1), ("channels", 1), ("num_layers", 0),
                          ("num_levels", 2), ("num_mixtures", 1)):
            if not integer(name) or getattr(self, name) < low:
                raise bad(name, f"an integer >= {low}")
        if not integer("num_classes") or self.num_classes < 0:
            raise bad("num_classes", "an integer >= 0 (0 = unconditional)")
        if not integer("kernel_size") or self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise bad("kernel_size", "an odd integer >= 3")
        if self.channels % self.in_channels:
            raise bad("channels", f"a multiple of in_channels = {self.in_channels} (one feature group per channel)")
        try:
            PixelCNNOutput(self.output)
        except ValueError:
            raise bad("output", "one of " + ", ".join(repr(o.value) for o in PixelCNNOutput)) from None
