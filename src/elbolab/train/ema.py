"""Exponential moving average (EMA) of model weights, with the warm-up of the decay.

After every optimiser step the shadow weights move towards the model's:

    shadow <- d_n * shadow + (1 - d_n) * theta,     d_n = min(decay, (1 + n) / (10 + n))  (warm-up)

where ``n`` is the number of updates made before this one (``d_n = decay`` without warm-up). The warm-up
(as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` and the DDPM/ADM code bases) keeps the
average from being dominated by the random initial weights early in training. Floating-point buffers
(e.g. BatchNorm running statistics) and integer buffers are copied, not averaged.

The shadow is keyed like ``model.state_dict()`` (a subset of it when ``prefixes`` selects submodules, e.g.
only the generator of a GAN), so ``ema.safetensors`` loads straight into the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn


def _selected(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


class EMA:
    """EMA of the parameters (and a copy of the buffers) of ``model``'s submodules named by ``prefixes``.

    ``prefixes``: dotted submodule names (``""`` = the whole model). ``decay`` in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True, prefixes: Sequence[str] = ("",)) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay = {decay!r} must be in [0, 1)")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.prefixes = tuple(prefixes)
        self.num_updates = 0
        param_names = {n for n, _ in model.named_parameters()}
        state = model.state_dict(keep_vars=True)
        names = [n for n in state if _selected(n, self.prefixes)]
        if not names:
            raise ValueError(f"EMA: no parameters or buffers under {list(self.prefixes)} in {type(model).__name__}")
        # averaged: floating-point parameters; copied: buffers and non-float tensors
        self._avg = [n for n in names if n in param_names and state[n].is_floating_point()]
        self._copy = [n for n in names if n not in self._avg]
        self.shadow: dict[str, Tensor] = {n: state[n].detach().clone() for n in names}

    def decay_at(self, n: int) -> float:
        """The decay used by update number ``n`` (0-based): ``min(decay, (1 + n) / (10 + n))`` with warm-up."""
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        d = self.decay_at(self.num_updates)
        state = model.state_dict(keep_vars=True)
        if self._avg:
            shadow = [self.shadow[n] for n in self._avg]
            torch._foreach_mul_(shadow, d)
            torch._foreach_add_(shadow, [state[n].detach() for n in self._avg], alpha=1.0 - d)
        for n in self._copy:
            self.shadow[n].copy_(state[n].detach())
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s selected weights with the EMA weights."""
        state = model.state_dict(keep_vars=True)
        for n, v in self.shadow.items():
            state[n].data.copy_(v)

    @contextmanager
    def swap(self, model: nn.Module) -> Iterator[nn.Module]:
        """``with ema.swap(model):`` ``model`` holds the EMA weights inside the block; restored afterwards."""
        state = model.state_dict(keep_vars=True)
        backup = {n: state[n].detach().clone() for n in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, v in backup.items():
                    state[n].data.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """``{"shadow": {name: tensor}, "num_updates": int, "decay": float, "warmup": bool}``."""
        return {"shadow": dict(self.shadow), "num_updates": self.num_updates, "decay": self.decay,
                "warmup": self.warmup}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the shadow's names must match exactly (clear error otherwise)."""
        shadow = state["shadow"]
        missing = sorted(set(self.shadow) - set(shadow))
        unexpected = sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"EMA state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for n, v in shadow.items():
            if v.shape != self.shadow[n].shape:
                raise ValueError(f"EMA state {n!r}: shape {tuple(v.shape)} != model's {tuple(self.shadow[n].shape)}")
            self.shadow[n].copy_(v)
        self.num_updates = int(state["num_updates"])  # decay and warm-up come from the (current) config
