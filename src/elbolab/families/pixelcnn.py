"""The autoregressive family (``family = "pixelcnn"``): a gated PixelCNN trained by maximum likelihood.

Its bits/dim are exact: ``bound_fn`` returns ``{"nll": -log p(x) / (D ln 2)}`` from one network pass (no bound,
no dequantisation; the 8-bit levels are the categories). Its one sampler, ``ancestral``, draws sub-pixel by
sub-pixel (C H W network passes per batch; ``SampleBatch.nfe`` says so). The ``[model]`` section is
:class:`PixelCNNModelConfig` (``[model.pixelcnn]``). Importing this module registers the family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from elbolab.autoregressive.config import PixelCNNConfig
from elbolab.autoregressive.likelihood import PixelCNNObjective, bits_per_dim
from elbolab.autoregressive.network import GatedPixelCNN, build_pixelcnn
from elbolab.autoregressive.sampling import sample
from elbolab.config import RunConfig
from elbolab.evaluate.bpd import BPDMethod
from elbolab.families import register
from elbolab.families.base import (BoundFn, DropLabels, ModelFamily, NoOptions, SampleBatch, SampleRequest,
                                   SamplerSpec, check_num_classes, with_image_shape)

__all__ = ["PixelCNNModelConfig", "PixelCNNFamily"]

EXACT = BPDMethod.EXACT_AUTOREGRESSIVE.value


@dataclass
class PixelCNNModelConfig:
    """``[model]`` of a PixelCNN run."""

    pixelcnn: PixelCNNConfig = field(default_factory=PixelCNNConfig)


def _ancestral(model: nn.Module, n: int, generator: torch.Generator, label: int | None = None):
    return sample(model, n, None, generator, label=label)


class PixelCNNFamily(ModelFamily):
    """Builds, trains and samples gated PixelCNN runs."""

    name = "pixelcnn"
    config_cls = PixelCNNModelConfig
    samplers = {"ancestral": SamplerSpec(_ancestral, NoOptions,
                                         "sub-pixel by sub-pixel in raster order, C*H*W network passes")}
    default_sampler = "ancestral"
    bpd_method = EXACT
    exact_likelihood = EXACT
    tiny_overrides = ("pixelcnn.channels=4", "pixelcnn.num_layers=1", "pixelcnn.kernel_size=3")

    def adapt_to_data(self, cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int) -> RunConfig:
        p = with_image_shape(cfg.model.pixelcnn, image_shape, "PixelCNN")
        check_num_classes(p.num_classes, num_classes, "pixelcnn.num_classes")
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pixelcnn=p))

    def image_shape(self, cfg: RunConfig) -> tuple[int, int, int]:
        p = cfg.model.pixelcnn
        return (p.in_channels, p.image_size, p.image_size)

    def num_classes(self, cfg: RunConfig) -> int:
        return cfg.model.pixelcnn.num_classes

    def build_model(self, cfg: RunConfig) -> GatedPixelCNN:
        return build_pixelcnn(cfg.model.pixelcnn)

    def build_objective(self, cfg: RunConfig) -> PixelCNNObjective | DropLabels:
        obj = PixelCNNObjective()
        return obj if cfg.model.pixelcnn.num_classes else DropLabels(obj)

    def sample(self, cfg: RunConfig, model: nn.Module, n: int, generator: torch.Generator,
               request: SampleRequest) -> SampleBatch:
        if request.guidance is not None:
            raise ValueError("--guidance is classifier-free guidance of a diffusion model; a PixelCNN has none")
        name, _ = self.sampler_options(cfg, request)
        out = self.samplers[name].fn(model, n, generator, label=request.label)
        return SampleBatch(images=out.images, labels=out.labels, nfe=out.nfe, method=name)

    def bound_fn(self, cfg: RunConfig, model: nn.Module, exact: bool) -> BoundFn | None:
        labelled = bool(cfg.model.pixelcnn.num_classes)

        @torch.no_grad()
        def bound(x: torch.Tensor, generator: torch.Generator,
                  y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            if labelled and y is None:
                raise ValueError("the bits/dim of a class-conditional PixelCNN need the test labels")
            return {"nll": bits_per_dim(model, x, y if labelled else None)}

        return bound


register(PixelCNNFamily())
