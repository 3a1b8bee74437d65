"""Subprocess helper for the elbolab.train tests (not a test module).

    python train_worker.py save-loop RUN          save checkpoints of step 1, 2, ... forever (SIGKILL test)
    python train_worker.py sigint RUN             train "forever" until SIGINT; prints RESULT {...} (SIGINT test)
    python train_worker.py ddp RUN OUT STEPS [SKEW]
                                                  one rank of a data-parallel run (RANK, WORLD_SIZE, ... set
                                                  in the environment as torchrun does); saves parameters to OUT;
                                                  SKEW > 0: no step limit (STEPS unused), a linear lr decay
                                                  over 10 x SKEW s, rank 1's clock SKEW s late
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

import safetensors.torch
import torch

sys.path.insert(0, str(Path(__file__).parent))

from train_toys import MLP, Regression, regression_data, tiny_cfg  # noqa: E402

from elbolab.config import LRSchedule  # noqa: E402
from elbolab.train import Trainer, checkpoint_step, save_checkpoint, shutdown_distributed  # noqa: E402
from elbolab.train.distributed import init_distributed  # noqa: E402


def save_loop(run: str) -> None:
    step = (checkpoint_step(run) or 0) + 1
    while True:
        model = {"w": torch.full((1024, 512), float(step))}
        ema = {"w": torch.full((1024, 512), float(step) + 0.5)}
        save_checkpoint(run, step, model, ema, {"step": step, "t": torch.full((256, 256), float(step))})
        step += 1


class SlowRegression(Regression):
    def loss(self, model, x, y, generator):
        time.sleep(0.02)
        return super().loss(model, x, y, generator)


def sigint(run: str) -> int:
    torch.set_num_threads(1)
    x, y = regression_data()
    cfg = tiny_cfg(steps=10**9, checkpoint_every=10**6)
    trainer = Trainer(MLP(), SlowRegression(), torch.utils.data.TensorDataset(x, y), cfg, run, progress=False)
    # the handler before fit: Python's default_int_handler, or SIG_IGN when this process was started from a
    # background job of a non-interactive shell (SIGINT ignored by inheritance)
    before = signal.getsignal(signal.SIGINT)
    result = trainer.fit()
    restored = signal.getsignal(signal.SIGINT) is before
    print("RESULT " + json.dumps({"step": result.step, "stopped_by": result.stopped_by.value,
                                  "checkpoint_step": result.checkpoint_step, "handler_restored": restored}),
          flush=True)
    return 130 if result.stopped_by.value == "interrupted" else 0


def ddp(run: str, out: str, steps: int, skew: float = 0.0) -> None:
    """Also called in-process (no torchrun variables: a single process) for the reference trajectory."""
    ctx = init_distributed("cpu")
    if ctx.enabled:
        torch.set_num_threads(1)
    x, y = regression_data(n=64)
    cfg = tiny_cfg(steps=steps, batch_size=16, checkpoint_every=2)
    if skew:  # a linear decay over a minutes budget, rank 1 starting its clock `skew` s late: the ranks set
        # the same lr (and stay identical) only if they agree on the time spent
        # (the budget 10 x skew; steps stops no earlier than the minutes, so the time decides the lr)
        cfg = dataclasses.replace(cfg, steps=0, minutes=skew / 6.0, warmup_steps=0, lr_schedule=LRSchedule.LINEAR)
    model = MLP(seed=ctx.rank)  # different initialisations: rank 0's must be broadcast
    trainer = Trainer(model, Regression(stateful=False), torch.utils.data.TensorDataset(x, y), cfg, run,
                      dist=ctx, progress=False)
    if skew and ctx.rank == 1:
        trainer._prepare()  # (its barrier would re-align the ranks inside fit)
        time.sleep(skew)
    result = trainer.fit()
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v.clone() for k, v in trainer.ema.shadow.items()})
    tensors["losses"] = torch.tensor(result.losses, dtype=torch.float64)
    safetensors.torch.save_file(tensors, f"{out}.rank{ctx.rank}")
    shutdown_distributed()


def main() -> None:
    mode = sys.argv[1]
    if mode == "save-loop":
        save_loop(sys.argv[2])
    elif mode == "sigint":
        sys.exit(sigint(sys.argv[2]))
    elif mode == "ddp":
        ddp(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
