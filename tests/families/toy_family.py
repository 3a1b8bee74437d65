"""A test-only model family, registered the way a newcomer adds one (docs/adding-a-family.md): a factorised
Gaussian over pixels, p(x) = prod_i N(x_i; mu_i, sigma_i^2), with mu and log sigma learned by maximum likelihood.

Everything a family needs is in this one module plus its preset (presets/toy-tiny.toml); the two registration
lines are at the bottom. The contract test (test_family_contract.py) then covers it like every built-in family.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from elbolab.config import ConfigError, RunConfig, check_range
from elbolab.families import (ModelFamily, SampleBatch, SampleRequest, SamplerSpec, register,
                              register_preset_dir)
from elbolab.families.base import with_image_shape
from elbolab.objectives import LossOutput, Objective


@dataclass
class PixelGaussianConfig:
    in_channels: int = 1
    image_size: int = 28
    init_log_std: float = 0.0

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("in_channels", "image_size"))
        if not -10.0 <= self.init_log_std <= 10.0:
            raise ConfigError(f"{prefix}.init_log_std = {self.init_log_std!r} must be in [-10, 10]")


@dataclass
class ToyConfig:
    """``[model]`` of a toy run: one section, ``[model.pixels]``."""

    pixels: PixelGaussianConfig = field(default_factory=PixelGaussianConfig)


class PixelGaussian(nn.Module):
    """mu, log sigma: (C, H, W) parameters; ``forward`` returns the per-image negative log-density in nats."""

    def __init__(self, cfg: PixelGaussianConfig) -> None:
        super().__init__()
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        self.mu = nn.Parameter(torch.zeros(shape))
        self.log_std = nn.Parameter(torch.full(shape, cfg.init_log_std))

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.mu) * torch.exp(-self.log_std)
        return (0.5 * z**2 + self.log_std + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


class PixelNLL(Objective):
    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        nll = model(x).mean() / x[0].numel()
        return LossOutput(loss=nll, metrics={"nll_per_dim": float(nll.detach())})


@dataclass(frozen=True)
class DrawOptions:
    temperature: float = 1.0

    def validate(self, prefix: str) -> None:
        check_range(self, prefix, positive=("temperature",))


def draw(model: PixelGaussian, n: int, generator: torch.Generator, temperature: float) -> Tensor:
    noise = torch.randn((n, *model.mu.shape), generator=generator, device=generator.device)
    return model.mu + temperature * torch.exp(model.log_std) * noise


class ToyFamily(ModelFamily):
    name = "toy"
    config_cls = ToyConfig
    samplers = {"independent": SamplerSpec(draw, DrawOptions, "x_i ~ N(mu_i, (T sigma_i)^2), independently")}
    default_sampler = "independent"
    tiny_overrides = ("pixels.init_log_std=-1.0",)

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        px = with_image_shape(cfg.model.pixels, image_shape, "toy")
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pixels=px))

    def build_model(self, cfg: RunConfig) -> nn.Module:
        return PixelGaussian(cfg.model.pixels)

    def build_objective(self, cfg: RunConfig) -> Objective:
        return PixelNLL()

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        name, opts = self.sampler_options(cfg, request)
        x = self.samplers[name].fn(model, n, generator, opts.temperature)
        return SampleBatch(images=x.clamp(-1, 1), labels=None, nfe=1, method=name)


register(ToyFamily())
register_preset_dir(Path(__file__).parent / "presets")
