"""Tiny models, objectives and datasets shared by the tests of elbolab.train (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elbolab.config import Precision, TrainConfig
from elbolab.train import AdversarialObjective, LossOutput, Objective, ParamGroup, UpdatePhase


def regression_data(n: int = 48, d: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.tanh(x @ torch.randn(d, 2, generator=g))
    return x, y


class MLP(nn.Module):
    """(B, D) -> (B, 2); follows the ``model(x, t, y)`` convention with t and y unused."""

    def __init__(self, d: int = 4, hidden: int = 16, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Dropout(dropout), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, x: Tensor, t: Tensor | None = None, y: Tensor | None = None) -> Tensor:
        return self.net(x)


class Regression(Objective):
    """MSE regression. ``noise``: input noise drawn from the loss generator. The loss is scaled by a running
    average of past losses kept as objective state (like an importance sampler's history), so a resume that
    forgot that state would not reproduce the losses. ``crash_at``: raise ``SimulatedCrash`` at that call."""

    def __init__(self, noise: float = 0.0, crash_at: int | None = None, stateful: bool = True) -> None:
        self.noise = noise
        self.crash_at = crash_at
        self.stateful = stateful
        self.calls = 0
        self.history = torch.zeros(())

    def loss(self, model: nn.Module, x: Tensor, y: Tensor | None, generator: torch.Generator) -> LossOutput:
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise SimulatedCrash(f"simulated crash at call {self.calls}")
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator, device=x.device)
        mse = F.mse_loss(model(x).float(), y)
        loss = mse * (1.0 + 0.1 * self.history) if self.stateful else mse
        self.history = 0.9 * self.history + 0.1 * mse.detach()
        return LossOutput(loss, {"mse": mse.item()})

    def state_dict(self) -> dict:
        return {"history": self.history, "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.history = state["history"].clone()
        self.calls = int(state["calls"])


class SimulatedCrash(RuntimeError):
    pass


class NoisyBatchDataset:
    """A dataset with the fast ``batch(idx, generator)`` of elbolab.data; adds generator noise to x."""

    def __init__(self, x: Tensor, y: Tensor, noise: float = 0.01) -> None:
        self.x, self.y, self.noise = x, y, noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def batch(self, idx: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        x = self.x[idx]
        return x + self.noise * torch.randn(x.shape, generator=generator), self.y[idx]


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(batch_size=8, lr=1e-2, warmup_steps=2, grad_clip=1.0, ema_decay=0.9, precision=Precision.FP32,
                log_every=1, checkpoint_every=1000, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------------
# A 2-D toy GAN: generator G(z) = mu + s * z, linear discriminator D(x) = w.x + c,
# non-saturating loss with the R1 penalty (Mescheder et al. 2018), which makes this "Dirac-like" game
# locally convergent.
# ------------------------------------------------------------------------------------------------------
class ToyGAN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.ParameterDict({"mu": nn.Parameter(torch.zeros(2)),
                                           "log_s": nn.Parameter(torch.zeros(2))})
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        with torch.no_grad():
            torch.manual_seed(0)
            for p in self.discriminator.parameters():
                p.normal_(0, 0.1)

    def generate(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, 2, generator=generator)
        return self.generator["mu"] + self.generator["log_s"].exp() * z


class ToyGANObjective(AdversarialObjective):
    """``n_critic`` discriminator updates (fresh batches), then one generator update (reusing the batch)."""

    def __init__(self, n_critic: int = 2, gamma: float = 1.0, d_lr: float | None = None) -> None:
        self.n_critic, self.gamma, self.d_lr = n_critic, gamma, d_lr
        self.trace: list[str] = []

    def param_groups(self) -> dict[str, ParamGroup]:
        return {"discriminator": ParamGroup(("discriminator",), lr=self.d_lr, betas=(0.5, 0.9)),
                "generator": ParamGroup(("generator",), betas=(0.5, 0.9))}

    def update_plan(self) -> list[UpdatePhase]:
        return [UpdatePhase("discriminator", self.n_critic), UpdatePhase("generator", 1, new_batch=False)]

    def ema_group(self) -> str | None:
        return "generator"

    def group_loss(self, group: str, model: nn.Module, x: Tensor, y: Tensor | None,
                   generator: torch.Generator) -> LossOutput:
        self.trace.append(group)
        fake = model.generate(x.shape[0], generator)
        if group == "discriminator":
            real = x.detach().requires_grad_(True)
            d_real = model.discriminator(real)
            d_fake = model.discriminator(fake.detach())
            loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            (g,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            r1 = g.pow(2).sum(1).mean()
            return LossOutput(loss + 0.5 * self.gamma * r1, {"r1": r1.item()})
        loss = F.softplus(-model.discriminator(fake)).mean()  # non-saturating generator loss
        return LossOutput(loss, {})
