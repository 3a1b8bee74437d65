"""Configuration of the U-Net (``elbolab.nn.unet``): widths, depth, attention, time and label conditioning."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from elbolab.config import ConfigError, check_range


class TimeEmbedding(str, enum.Enum):
    SINUSOIDAL = "sinusoidal"
    FOURIER = "fourier"  # random Fourier features


class TimeInjection(str, enum.Enum):
    ADD = "add"  # h + W e(t)
    SCALE_SHIFT = "scale_shift"  # adaptive group norm: (1 + s) GN(h) + b


class Activation(str, enum.Enum):
    """Hidden-layer non-linearity of the fully-connected networks (:class:`elbolab.nn.convnets.FeedForward`)."""

    RELU = "relu"
    TANH = "tanh"  # Burda, Grosse & Salakhutdinov 2016 (the VAE/IWAE of their Table 1)


class Upsampling(str, enum.Enum):
    """How the U-Net decoder doubles the resolution."""

    CONV = "conv"  # nearest-neighbour x2 then a 3x3 conv (Ho et al. 2020)
    TRANSPOSED = "transposed"  # 2x2 stride-2 transposed conv (9x fewer FLOPs than CONV)
    NEAREST = "nearest"  # nearest-neighbour x2 only (improved-diffusion conv_resample=False)


@dataclass
class UNetConfig:
    """U-Net of the lecture notes (residual blocks, self-attention, time embedding).

    ``attention_resolutions`` are feature-map sizes in pixels *at this config's* ``image_size``: when a run's data
    has another size, the family moves each entry to the same level of the U-Net (``adapt_attention``)."""

    in_channels: int = 1
    out_channels: int = 0  # 0 means same as in_channels
    image_size: int = 28
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    # residual blocks per level on the way down, one entry per channel_mults entry (the way up has one more at
    # each level); empty = num_res_blocks at every level. Fewer blocks at the full resolution cut most FLOPs.
    level_res_blocks: tuple[int, ...] = ()
    attention_resolutions: tuple[int, ...] = (7,)
    head_dim: int = 32  # fewer, wider heads: SDPA backward with many small heads is slow on CPU
    dropout: float = 0.0
    groups: int = 8  # GroupNorm groups
    time_embedding: TimeEmbedding = TimeEmbedding.SINUSOIDAL
    time_injection: TimeInjection = TimeInjection.SCALE_SHIFT
    num_classes: int = 0  # 0 = unconditional; otherwise a label embedding with a learned null class
    mid_attention: bool = True  # self-attention in the middle block (lowest resolution)
    attention_fp32: bool = True  # run SDPA in fp32 inside bf16 autocast (faster backward on CPU)
    upsampling: Upsampling = Upsampling.CONV
    input_fourier: bool = False  # Fourier features of the input z_t (VDM, Kingma et al. 2021, Appendix C)
    fourier_min: int = 7  # exponents n of the sin/cos(2^n pi z) channels, fourier_min..fourier_max inclusive
    fourier_max: int = 8

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("in_channels", "image_size", "base_channels", "num_res_blocks",
                                            "head_dim", "groups"),
                    non_negative=("out_channels", "num_classes", "dropout"))
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            raise ConfigError(f"{prefix}.channel_mults = {list(self.channel_mults)}: need positive integers")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{prefix}.dropout = {self.dropout!r} must be in [0, 1)")
        if self.input_fourier and self.fourier_max < self.fourier_min:
            raise ConfigError(f"{prefix}.fourier_max = {self.fourier_max} must be >= {prefix}.fourier_min = "
                              f"{self.fourier_min}")

    def blocks_per_level(self) -> list[int]:
        """Residual blocks of each level on the way down (``level_res_blocks`` or ``num_res_blocks`` each)."""
        return list(self.level_res_blocks) or [self.num_res_blocks] * len(self.channel_mults)

    def resolutions(self) -> list[int]:
        """Feature-map sizes of the levels, from ``image_size`` down (each level halves)."""
        return [self.image_size // 2**i for i in range(len(self.channel_mults))]


def unet_preset(name: str) -> UNetConfig:
    """U-Net presets for tests and benchmarks: ``tiny``, ``mnist`` (28x28 grey, the demo's), ``cifar`` (32x32 RGB)."""
    presets = {
        "tiny": lambda: UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                                   attention_resolutions=(14,), head_dim=8, groups=4),
        # Speed-tuned for CPU (benchmarks/README.md): one attention layer (middle block, 7x7), 2x2 transposed-
        # conv upsampling, and 1 / 1 / 3 residual blocks at 28 / 14 / 7 pixels (2 / 2 / 4 on the way up): 71% of
        # the FLOPs of 2 blocks per level, 1.53 M parameters, within 6% of diffusers' UNet2DModel(32, 64, 64).
        # The demo's U-Net (configs/ddpm-mnist.toml).
        "mnist": lambda: UNetConfig(attention_resolutions=(), mid_attention=True, upsampling=Upsampling.TRANSPOSED,
                                    level_res_blocks=(1, 1, 3)),
        "cifar": lambda: UNetConfig(in_channels=3, image_size=32, base_channels=64, channel_mults=(1, 2, 2, 2),
                                    attention_resolutions=(16,), head_dim=64, groups=32, dropout=0.1),
    }
    if name not in presets:
        raise ConfigError(f"unknown U-Net preset {name!r}; choices: {', '.join(presets)}")
    return presets[name]()
