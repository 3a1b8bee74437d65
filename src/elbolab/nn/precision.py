"""Inference precision: run a network under bf16 autocast and hand float32 back to the sampler.

On a CPU with native bf16 (oneDNN with AMX/AVX512-BF16) a bf16 forward of the MNIST U-Net is about 2x faster
than float32 (benchmarks/README.md); the samplers' own arithmetic (means, variances, Langevin steps) stays
float32 because autocast only lowers convolutions and matmuls, and the output is cast back to float32 here.
On a CPU without it (e.g. an AVX-512 Xeon without the BF16 extension) bf16 is emulated and about 2x *slower*
than float32: :func:`effective_precision` then runs float32 and says so once.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import Tensor, nn

from elbolab.config import Precision, coerce
from elbolab.nn.nfe import nfe_per_call

__all__ = ["AutocastModel", "effective_precision", "native_bf16", "with_precision"]

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return True  # other backends: trust the config


def effective_precision(precision: Precision | str, device: torch.device | str) -> Precision:
    """``precision``, except bf16 on a device without native bf16 runs float32 (logged once per device type):
    emulated bf16 costs twice the time of float32 for no gain. ``ELBOLAB_BF16=force`` keeps bf16 anyway."""
    precision = coerce(precision, Precision, "precision")
    if precision is Precision.BF16 and os.environ.get("ELBOLAB_BF16") != "force" and not native_bf16(device):
        kind = torch.device(device).type
        if kind not in _WARNED:
            _WARNED.add(kind)
            logger.warning("precision = 'bf16' but this %s has no native bf16 (emulated bf16 is slower than "
                           "float32): running float32 (set ELBOLAB_BF16=force to keep bf16)", kind)
        return Precision.FP32
    return precision


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
    """``model`` itself for ``fp32``, :class:`AutocastModel` around it for ``bf16`` (where the model's device has
    native bf16, :func:`effective_precision`)."""
    param = next(model.parameters(), None)
    precision = effective_precision(precision, param.device if param is not None else "cpu")
    return model if precision is Precision.FP32 else AutocastModel(model)
