"""Inference precision: run a network under bf16 autocast and hand float32 back to the sampler.

On this class of CPU (oneDNN with AMX/AVX512-BF16) a bf16 forward of the MNIST U-Net is about 2x faster than
float32 (benchmarks/README.md); the samplers' own arithmetic (means, variances, Langevin steps) stays float32
because autocast only lowers convolutions and matmuls, and the output is cast back to float32 here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from elbolab.config import Precision, coerce
from elbolab.nn.nfe import nfe_per_call

__all__ = ["AutocastModel", "with_precision"]


class AutocastModel(nn.Module):
    """``module(*args)`` under ``torch.autocast(dtype=bfloat16)`` on the module's device, output as float32.

    Keeps the wrapped module's ``nfe_per_call`` (network evaluations per call, e.g. 2 for a guided model).
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.nfe_per_call = nfe_per_call(module)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        param = next(self.module.parameters(), None)
        device_type = param.device.type if param is not None else "cpu"
        with torch.autocast(device_type, dtype=self.dtype):
            out = self.module(*args, **kwargs)
        return out.float()


def with_precision(model: nn.Module, precision: Precision | str) -> nn.Module:
    """``model`` itself for ``fp32``, :class:`AutocastModel` around it for ``bf16``."""
    precision = coerce(precision, Precision, "precision")
    return model if precision is Precision.FP32 else AutocastModel(model)
