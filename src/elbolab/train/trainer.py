"""One Trainer for every model family.

A family hands the Trainer a model and an objective: a single-loss :class:`~elbolab.objectives.Objective`
(DDPM, VAE, score models) or an :class:`~elbolab.objectives.AdversarialObjective` with several
parameter groups updated in turn (GANs: ``n_critic`` discriminator updates, then one generator update). The
Trainer owns everything else:

- AdamW per parameter group with ``TrainConfig.lr / betas / weight_decay`` (a group may override them), a
  linear learning-rate warm-up ``lr_n = lr * min(1, (n + 1) / warmup_steps)`` for update ``n = 0, 1, ...``,
  times a decay ``lr_schedule`` (constant, cosine, linear) over the fraction ``p`` of the budget spent: the
  largest of ``step / steps``, ``epoch / epochs`` and the share of ``minutes`` used (a resumed run with a
  minutes budget spreads the rest of its decay over the new call's minutes), so that a time-budgeted run ends
  at ``lr * lr_min_ratio`` whatever speed the machine has;
- gradient clipping to ``grad_clip`` (the pre-clipping norm is logged as ``grad_norm``);
- an EMA of the weights with warm-up (:mod:`elbolab.train.ema`);
- bf16 autocast when ``precision = "bf16"`` (CPU or CUDA), the loss itself taken in float32;
- deterministic mini-batches (:mod:`elbolab.train.batching`), so that a resumed run continues mid-epoch;
- ``metrics.jsonl`` every ``log_every`` steps (means over the interval, averaged over processes), a tqdm bar
  with the loss and img/s, sample grids ``samples/step_0000500.png`` every ``sample_every`` steps and at
  the end (EMA weights, a fixed seed, the training RNG untouched);
- checkpoints every ``checkpoint_every`` steps and at the end (:mod:`elbolab.train.checkpoint`), holding the
  model, EMA, optimisers, step/epoch/position, the logging accumulator, the objective's optional
  ``state_dict()``, and every RNG (torch global, CUDA, the loss and data generators, numpy, ``random``) of
  every rank: a run resumed from a checkpoint reproduces the losses of an uninterrupted run bit for bit
  (CPU, fp32, same number of processes);
- stopping after ``steps`` steps, ``epochs`` passes over the data or ``minutes`` of wall time of this call
  (whichever comes first); SIGINT/SIGTERM finish the current step, save a checkpoint and return with
  ``stopped_by = INTERRUPTED`` (a second signal aborts at once);
- a NaN/inf loss or gradient norm raises :class:`NonFiniteLossError` naming the step before any optimiser
  step uses it, leaving the last checkpoint as it was;
- data parallelism across processes started by torchrun (:mod:`elbolab.train.distributed`), rank 0 doing
  all I/O.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from elbolab.config import LRSchedule, Precision, TrainConfig, save_toml, to_dict
from elbolab.errors import ExitCode
from elbolab.io import atomic_write_text
from elbolab.nn.precision import effective_precision
from elbolab.run_format import CONFIG_FILE, write_run_info
from elbolab.train.batching import BatchStream, derive_seed
from elbolab.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_step,
    describe_mismatch,
    load_checkpoint,
    recover,
    save_checkpoint,
)
from elbolab.train.distributed import (
    DistContext,
    all_reduce_gradients,
    broadcast_module,
    init_distributed,
)
from elbolab.train.ema import EMA
from elbolab.objectives import (AdversarialObjective, LossOutput, Objective, SingleLoss, as_adversarial,
                                validate_plan)
from elbolab.viz.grid import save_image_grid

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"

SampleFn = Callable[[nn.Module, int, torch.Generator], Tensor]

# keys of metrics.jsonl written by the Trainer; an objective metric of the same name is logged as "objective/<key>"
_TRAINER_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "img/s", "time"}
# TrainConfig fields that may change on resume without a warning
_RESUMABLE_CHANGES = {"steps", "epochs", "minutes", "log_every", "sample_every", "checkpoint_every", "num_workers",
                      "tensorboard"}


class StopReason(str, enum.Enum):
    """Why :meth:`Trainer.fit` returned."""

    STEPS = "steps"
    EPOCHS = "epochs"
    MINUTES = "minutes"
    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM: a checkpoint was saved at the current step


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm was NaN/inf at ``step``; raised before the optimiser step used it."""

    exit_code = ExitCode.DIVERGED

    def __init__(self, step: int, group: str, what: str, value: float, out_dir: Path, checkpoint: int | None):
        self.step, self.group, self.what, self.value = step, group, what, value
        where = f" of group {group!r}" if group != SingleLoss.GROUP else ""
        kept = (f"the last checkpoint (step {checkpoint}) in {out_dir} is intact" if checkpoint is not None
                else f"no checkpoint was saved in {out_dir} yet")
        super().__init__(
            f"non-finite {what}{where} ({value}) at step {step}: stopped before the optimiser step; {kept}. "
            "Try a lower train.lr, a longer train.warmup_steps, train.grad_clip > 0, or precision = 'fp32'."
        )


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    ``step``: optimiser steps (plan executions) completed in total, including those before a resume;
    ``start_step``: the step this call started from; ``epoch``: passes over the data completed (fractional);
    ``images_seen``: real images consumed over all processes; ``wall_seconds``: this call's training time;
    ``images_per_second``: images consumed in this call (all processes) per second of ``wall_seconds``;
    ``checkpoint_step``: step of the checkpoint in ``out_dir`` on return; ``losses``: per-step loss of this
    call on this process (for an adversarial objective, the loss of the plan's last phase).
    """

    out_dir: Path
    step: int
    start_step: int
    epoch: float
    images_seen: int
    wall_seconds: float
    images_per_second: float
    stopped_by: StopReason
    checkpoint_step: int | None
    losses: list[float] = field(default_factory=list)


def warmup_lr(base_lr: float, step: int, warmup_steps: int) -> float:
    """Learning rate of the update taken after ``step`` completed steps: ``base_lr * min(1, (step + 1) / W)``."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, (step + 1) / warmup_steps)


def lr_factor(schedule: LRSchedule, progress: float, min_ratio: float = 0.0) -> float:
    """Decay factor at budget fraction ``progress`` (clamped to [0, 1]): 1 at the start, ``min_ratio`` at the end."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == LRSchedule.CONSTANT:
        return 1.0
    if schedule == LRSchedule.COSINE:
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == LRSchedule.LINEAR:
        return min_ratio + (1.0 - min_ratio) * (1.0 - p)
    raise ValueError(f"lr_schedule = {schedule!r}; allowed: {[s.value for s in LRSchedule]}")


@dataclass
class _Group:
    name: str
    modules: tuple[str, ...]
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    base_lr: float


class Trainer:
    """Train ``model`` on ``dataset`` with ``objective`` according to ``cfg``, writing the run to ``out_dir``.

    ``model``: any ``nn.Module`` (moved to the device); ``objective``: an ``Objective`` or an
    ``AdversarialObjective``; ``dataset``: ``len()`` and ``batch(idx, generator)`` or ``__getitem__ -> (x, y)``;
    ``run_config``: the full config dataclass, written to ``config.toml``; ``sample_fn(model, n, generator)
    -> (n, C, H, W)`` in [-1, 1] for sample grids (``n_samples`` images, default ``run_config.sample.n`` or
    64); ``resume``: continue the checkpoint in ``out_dir`` (without it an existing checkpoint is an error;
    with it and no checkpoint the run starts fresh); ``device``: default CUDA when available, else CPU;
    ``dist``: a :class:`DistContext` (default: from the torchrun environment); ``progress``: show tqdm;
    ``on_step(trainer)``: called after every optimiser step (and its logging/checkpointing), e.g. to keep EMA
    snapshots at wall-clock times (``benchmarks/time_to_quality.py``); the time it takes counts as training time.
    """

    def __init__(self, model: nn.Module, objective: Objective | AdversarialObjective, dataset: Any, cfg: TrainConfig,
                 out_dir: str | os.PathLike[str], run_config: Any = None, sample_fn: SampleFn | None = None, *,
                 resume: bool = False, n_samples: int | None = None, device: str | torch.device | None = None,
                 dist: DistContext | None = None, progress: bool = True,
                 on_step: Callable[["Trainer"], None] | None = None) -> None:
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"cfg must be an elbolab.config.TrainConfig, got {type(cfg).__name__}")
        if not (cfg.steps > 0 or cfg.epochs > 0 or cfg.minutes > 0):
            raise ValueError("no stopping rule: set at least one of train.steps, train.epochs, train.minutes > 0 "
                             f"(got steps={cfg.steps}, epochs={cfg.epochs}, minutes={cfg.minutes})")
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.resume = resume
        self._existing_checkpoint()
        self.run_config = run_config
        self.sample_fn = sample_fn
        self.progress = progress
        self.on_step = on_step
        self.dist = dist if dist is not None else init_distributed(device)
        self.device = self.dist.device
        self.tb = None
        if cfg.tensorboard and self.dist.is_main:
            from elbolab.train.tensorboard import TensorBoardWriter

            self.tb = TensorBoardWriter(self.out_dir)
        if n_samples is None:
            n_samples = int(getattr(getattr(run_config, "sample", None), "n", 64))
        if n_samples <= 0:
            raise ValueError(f"n_samples = {n_samples} must be > 0")
        self.n_samples = n_samples

        self.objective = objective
        self._plan_objective: AdversarialObjective = as_adversarial(objective)
        group_specs, self.plan = validate_plan(self._plan_objective)
        self.model = model.to(self.device)
        self.groups = self._build_groups(group_specs)
        ema_group = self._plan_objective.ema_group()
        self.ema = (EMA(self.model, cfg.ema_decay, cfg.ema_warmup, prefixes=self.groups[ema_group].modules)
                    if ema_group is not None else None)
        self.stream = BatchStream(dataset, cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size,
                                  generator=torch.Generator().manual_seed(derive_seed(cfg.seed, self.dist.rank, 2)),
                                  num_workers=cfg.num_workers)
        self.loss_generator = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, self.dist.rank, 1))
        self.step = 0
        self.images_seen = 0
        self._time_progress0 = 0.0  # share of the minutes budget spent before this fit() call (from a checkpoint)
        self._time_progress = 0.0
        self._acc: dict[str, Any] = {"n": 0, "sums": {}}
        self._interrupted = False
        self._checkpoint_step: int | None = None
        self._prepared = False

    # ----------------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------------
    def _build_groups(self, specs: dict[str, Any]) -> dict[str, _Group]:
        owner: dict[int, str] = {}
        groups: dict[str, _Group] = {}
        for name, spec in specs.items():
            params: list[nn.Parameter] = []
            for m in spec.modules:
                try:
                    module = self.model.get_submodule(m)
                except AttributeError:
                    raise ValueError(f"param group {name!r}: {type(self.model).__name__} has no submodule {m!r}") from None
                for p in module.parameters():
                    if not p.requires_grad or owner.get(id(p)) == name:  # frozen, or listed twice
                        continue
                    if id(p) in owner:
                        raise ValueError(f"param groups {owner[id(p)]!r} and {name!r} share parameters")
                    owner[id(p)] = name
                    params.append(p)
            if not params:
                raise ValueError(f"param group {name!r} ({list(spec.modules)}) has no trainable parameters")
            lr = spec.lr if spec.lr is not None else self.cfg.lr
            betas = tuple(spec.betas if spec.betas is not None else self.cfg.betas)
            if len(betas) != 2:
                raise ValueError(f"train.betas = {list(betas)}: expected two numbers (beta1, beta2)")
            wd = spec.weight_decay if spec.weight_decay is not None else self.cfg.weight_decay
            opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
            groups[name] = _Group(name, tuple(spec.modules), params, opt, lr)
        return groups

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=effective_precision(self.cfg.precision, self.device) == Precision.BF16)

    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "loss": self.loss_generator.get_state(),
            "data": self.stream.generator.get_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        }
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        self.loss_generator.set_state(state["loss"])
        self.stream.generator.set_state(state["data"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        obj = self.objective
        return {
            "step": self.step,
            "images_seen": self.images_seen,
            "time_progress": self._time_progress,
            "data": {"epoch": self.stream.epoch, "position": self.stream.position},
            "world_size": self.dist.world_size,
            "train_config": to_dict(self.cfg),
            "optimizers": {name: g.optimizer.state_dict() for name, g in self.groups.items()},
            "ema_num_updates": self.ema.num_updates if self.ema is not None else 0,
            "objective": obj.state_dict(),
            "log": self._acc,
            "rng": rng,
        }

    def save(self) -> None:
        """Save a checkpoint of the current step (collective under DDP: every rank must call it)."""
        rng = self.dist.gather(self._rng_state())
        if self.dist.is_main:
            ema = self.ema.shadow if self.ema is not None else {}
            save_checkpoint(self.out_dir, self.step, self.model.state_dict(), ema, self._state(rng))
            logger.info("checkpoint of step %d saved in %s", self.step, self.out_dir)
        self._checkpoint_step = self.step

    def _load(self, ckpt: Checkpoint) -> None:
        st = ckpt.state
        try:
            self.model.load_state_dict(ckpt.model, strict=True)
        except RuntimeError:
            raise CheckpointError(f"{self.out_dir}: the checkpoint does not fit {type(self.model).__name__} "
                                  f"({describe_mismatch(self.model.state_dict(), ckpt.model)})") from None
        if self.ema is not None:
            self.ema.load_state_dict({"shadow": ckpt.ema, "num_updates": st["ema_num_updates"]})
        saved_groups = set(st["optimizers"])
        if saved_groups != set(self.groups):
            raise CheckpointError(f"{self.out_dir}: checkpoint has optimisers {sorted(saved_groups)}, "
                             f"the objective declares {sorted(self.groups)}")
        for name, g in self.groups.items():
            g.optimizer.load_state_dict(st["optimizers"][name])
        self.step = int(st["step"])
        self.images_seen = int(st["images_seen"])
        self._time_progress = float(st.get("time_progress", 0.0))
        self.stream.load_state_dict({**st["data"], "generator": self.stream.generator.get_state()})
        self._acc = st["log"]
        self.objective.load_state_dict(st["objective"] or {})  # None: a checkpoint of run format 1
        old = st["train_config"]
        new = to_dict(self.cfg)
        changed = [k for k in new if k not in _RESUMABLE_CHANGES and old.get(k) != new[k]]
        for k in changed:
            logger.warning("resuming with train.%s = %r (the checkpoint was trained with %r)", k, new[k], old.get(k))
        rngs = st["rng"]
        if self.dist.rank < len(rngs) and st["world_size"] == self.dist.world_size:
            self._set_rng_state(rngs[self.dist.rank])
        else:
            logger.warning("resuming %d processes from a checkpoint of %d: random streams restart from the seed",
                           self.dist.world_size, st["world_size"])
            torch.manual_seed(derive_seed(self.cfg.seed, self.dist.rank, 3, self.step))
        self._checkpoint_step = self.step

    def _existing_checkpoint(self) -> int | None:
        """Step of the checkpoint in ``out_dir``; an error if there is one and ``resume`` is off."""
        existing = checkpoint_step(self.out_dir)
        if existing is not None and not self.resume:
            raise ValueError(f"{self.out_dir} already holds a checkpoint (step {existing}): resume it with "
                             "resume=True (elbolab train --resume) or choose another output folder")
        return existing

    def _prepare(self) -> None:
        """Resume or start the run (once; a second ``fit()`` continues from the state in memory)."""
        if self._prepared:
            return
        self._prepared = True
        existing = self._existing_checkpoint()
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if existing is not None:
                recover(self.out_dir)
            if self.run_config is not None:
                save_toml(self.run_config, self.out_dir / CONFIG_FILE)
                write_run_info(self.out_dir)
        self.dist.barrier()
        if existing is not None:
            ckpt = load_checkpoint(self.out_dir)
            self._load(ckpt)
            logger.info("resumed %s at step %d (epoch %.3f)", self.out_dir, self.step, self.stream.progress)
            if self.dist.is_main:
                self._truncate_metrics(self.step)
        else:
            if self.resume:
                logger.info("%s holds no checkpoint: starting a fresh run", self.out_dir)
            torch.manual_seed(derive_seed(self.cfg.seed, self.dist.rank, 3))
            if self.dist.is_main:
                atomic_write_text(self.out_dir / METRICS_FILE, "")
            broadcast_module(self.model, self.dist)
            if self.ema is not None:  # start the EMA from the (broadcast) initial weights
                self.ema = EMA(self.model, self.cfg.ema_decay, self.cfg.ema_warmup, prefixes=self.ema.prefixes)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after the checkpoint (they will be logged again) and any torn last line."""
        path = self.out_dir / METRICS_FILE
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s: dropping an unreadable line %r", path, line[:80])
        atomic_write_text(path, "".join(k + "\n" for k in kept))

    # ----------------------------------------------------------------------------------------------
    # The step
    # ----------------------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[Tensor, Tensor | None]:
        x, y = self.stream.next()
        self.images_seen += self.cfg.batch_size
        x = x.to(self.device, non_blocking=True)
        if y is not None:
            y = y.to(self.device, non_blocking=True)
        return x, y

    @contextlib.contextmanager
    def _only_trainable(self, group: str) -> Iterator[None]:
        """Freeze the other groups' parameters while ``group`` updates (gradients still flow through them)."""
        if len(self.groups) == 1:
            yield
            return
        frozen = [p for name, g in self.groups.items() if name != group for p in g.params]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _check_finite(self, value: float, group: str, what: str) -> None:
        if self.dist.any(not math.isfinite(value)):
            raise NonFiniteLossError(self.step + 1, group, what, value, self.out_dir, self._checkpoint_step)

    def _update(self, group: _Group, x: Tensor, y: Tensor | None) -> tuple[float, float, dict[str, float]]:
        self.model.zero_grad(set_to_none=True)
        if self.dist.enabled:
            broadcast_module(self.model, self.dist, buffers_only=True)
        with self._autocast():
            out = self._plan_objective.group_loss(group.name, self.model, x, y, self.loss_generator)
        if not isinstance(out, LossOutput):
            raise TypeError(f"the objective's loss for {group.name!r} returned {type(out).__name__}, not LossOutput")
        if out.loss.ndim != 0:
            raise ValueError(f"the objective's loss for {group.name!r} has shape {tuple(out.loss.shape)}; "
                             "expected a scalar (reduce over the batch)")
        loss = out.loss.float()
        value = loss.item()
        self._check_finite(value, group.name, "loss")
        loss.backward()
        all_reduce_gradients(group.params, self.dist)
        grads = [p.grad for p in group.params if p.grad is not None]
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(group.params, self.cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        grad_norm = float(norm)
        self._check_finite(grad_norm, group.name, "gradient norm")
        group.optimizer.step()
        return value, grad_norm, {k: float(v) for k, v in out.metrics.items()}

    def _budget_progress(self) -> float:
        """Fraction of the budget spent (the largest over the stopping rules set), for the lr decay."""
        cfg = self.cfg
        fractions = [self._time_progress] if cfg.minutes > 0 else []
        if cfg.steps > 0:
            fractions.append(self.step / cfg.steps)
        if cfg.epochs > 0:
            fractions.append(self.stream.progress / cfg.epochs)
        return max(fractions, default=0.0)

    def _train_step(self) -> float:
        """One plan execution; returns the loss of its last phase."""
        decay = lr_factor(self.cfg.lr_schedule, self._budget_progress(), self.cfg.lr_min_ratio)
        for g in self.groups.values():
            lr = warmup_lr(g.base_lr, self.step, self.cfg.warmup_steps) * decay
            for pg in g.optimizer.param_groups:
                pg["lr"] = lr
        single = len(self.groups) == 1
        record: dict[str, list[float]] = {}
        x: Tensor | None = None
        y: Tensor | None = None
        loss = float("nan")
        for phase in self.plan:
            group = self.groups[phase.group]
            with self._only_trainable(phase.group):
                for _ in range(phase.repeats):
                    if phase.new_batch or x is None:
                        x, y = self._next_batch()
                    loss, grad_norm, metrics = self._update(group, x, y)
                    sfx = "" if single else f"/{phase.group}"
                    record.setdefault("loss" + sfx, []).append(loss)
                    record.setdefault("grad_norm" + sfx, []).append(grad_norm)
                    for k, v in metrics.items():
                        k = k if k not in _TRAINER_KEYS else f"objective/{k}"
                        record.setdefault(k if single else f"{phase.group}/{k}", []).append(v)
        self.model.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        if not single:
            record["loss"] = [loss]
        acc = self._acc
        acc["n"] += 1
        for k, vs in record.items():
            acc["sums"][k] = acc["sums"].get(k, 0.0) + sum(vs) / len(vs)
        return loss

    # ----------------------------------------------------------------------------------------------
    # Logging, samples, stopping
    # ----------------------------------------------------------------------------------------------
    def _log(self, images_per_s: float, elapsed: float) -> None:
        acc = self._acc
        means = self.dist.mean({k: s / max(acc["n"], 1) for k, s in acc["sums"].items()})
        self._acc = {"n": 0, "sums": {}}
        if not self.dist.is_main:
            return
        rec: dict[str, Any] = {"step": self.step, "epoch": round(self.stream.progress, 6)}
        rec["loss"] = means.pop("loss", float("nan"))
        for name, g in self.groups.items():
            rec["lr" if len(self.groups) == 1 else f"lr/{name}"] = g.optimizer.param_groups[0]["lr"]
        rec.update(means)
        rec["img/s"] = round(images_per_s, 3)
        rec["time"] = round(elapsed, 3)
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            self.tb.log_scalars(self.step, rec)

    def save_samples(self) -> Path | None:
        """Sample a grid with the EMA weights (rank 0 only); returns its path (None without ``sample_fn``)."""
        if self.sample_fn is None or not self.dist.is_main:
            return None
        path = self.out_dir / SAMPLES_DIR / f"step_{self.step:07d}.png"
        was_training = self.model.training
        devices = [self.device] if self.device.type == "cuda" else []
        swap = self.ema.swap(self.model) if self.ema is not None else contextlib.nullcontext()
        with torch.random.fork_rng(devices=devices), swap:
            self.model.eval()
            try:
                gen = torch.Generator(self.device).manual_seed(self.cfg.seed)
                with torch.no_grad(), self._autocast():
                    images = self.sample_fn(self.model, self.n_samples, gen)
            finally:
                self.model.train(was_training)
        save_image_grid(images.float(), path, nrow=math.ceil(math.sqrt(images.shape[0])))
        if self.tb is not None:
            self.tb.log_images(self.step, images.float())
            self.tb.flush()  # the final grid comes after fit()'s last flush: written now, not at a later flush_secs
        logger.info("samples of step %d: %s", self.step, path)
        return path

    def _stop_reason(self, started: float) -> StopReason | None:
        cfg = self.cfg
        if cfg.steps > 0 and self.step >= cfg.steps:
            return StopReason.STEPS
        if cfg.epochs > 0 and self.stream.progress >= cfg.epochs:
            return StopReason.EPOCHS
        # one collective: the signal flag and the elapsed time, both maxed over ranks so that every rank
        # stops together and sets the same learning rate
        interrupted, elapsed = self.dist.max_each([1.0 if self._interrupted else 0.0, time.monotonic() - started])
        if cfg.minutes > 0:
            share = min(elapsed / (cfg.minutes * 60.0), 1.0)
            self._time_progress = self._time_progress0 + (1.0 - self._time_progress0) * share
        if interrupted > 0:
            return StopReason.INTERRUPTED
        if cfg.minutes > 0 and elapsed >= cfg.minutes * 60.0:
            return StopReason.MINUTES
        return None

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._interrupted = True
        logger.warning("%s received: stopping after this step with a checkpoint (send it again to abort)",
                       signal.Signals(signum).name)
        signal.signal(signum, self._previous_handlers.get(signum, signal.SIG_DFL))

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        self._previous_handlers: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in self._previous_handlers.items():
                signal.signal(sig, handler)

    def _total_steps(self) -> int | None:
        totals = []
        if self.cfg.steps > 0:
            totals.append(self.cfg.steps)
        if self.cfg.epochs > 0:
            per_step = sum(p.repeats for p in self.plan if p.new_batch)
            totals.append(math.ceil(self.cfg.epochs * self.stream.batches_per_epoch / per_step))
        return min(totals) if totals else None

    # ----------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until a stopping rule fires; returns a :class:`TrainResult` (see the module docstring)."""
        self._prepare()
        self._interrupted = False
        self._time_progress0 = self._time_progress
        if (self.cfg.lr_schedule != LRSchedule.CONSTANT and self.cfg.minutes > 0 and self._time_progress >= 1.0
                and self.dist.is_main):
            logger.warning("train.lr_schedule = %s ended with the minutes budget of an earlier call: this call "
                           "trains at lr * lr_min_ratio = %g (start a new run, or resume with "
                           "train.lr_schedule = 'constant', to train at the full lr)", self.cfg.lr_schedule.value,
                           self.cfg.lr * self.cfg.lr_min_ratio)
        start_step = self.step
        losses: list[float] = []
        self.model.train()
        bar = tqdm(total=self._total_steps(), initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main))
        started = time.monotonic()
        last_log_time, last_log_images = started, self.images_seen
        start_images = self.images_seen
        stopped_by: StopReason | None = None
        try:
            with self._signals():
                while True:
                    stopped_by = self._stop_reason(started)
                    if stopped_by is not None:
                        break
                    loss = self._train_step()
                    losses.append(loss)
                    now = time.monotonic()
                    bar.update(1)
                    bar.set_postfix({"loss": f"{loss:.4g}",
                                     "img/s": f"{(self.images_seen - start_images) / max(now - started, 1e-9):.1f}"},
                                    refresh=False)
                    if self.step % self.cfg.log_every == 0:
                        self._log((self.images_seen - last_log_images) / max(now - last_log_time, 1e-9),
                                  now - started)
                        last_log_time, last_log_images = now, self.images_seen
                    if self.step % self.cfg.checkpoint_every == 0:
                        self.save()
                    if self.cfg.sample_every > 0 and self.step % self.cfg.sample_every == 0:
                        self.save_samples()
                    if self.on_step is not None:
                        self.on_step(self)
                if self._checkpoint_step != self.step:
                    self.save()
        finally:
            bar.close()
            if self.tb is not None:
                self.tb.flush()
        wall = time.monotonic() - started
        if stopped_by != StopReason.INTERRUPTED and (self.cfg.sample_every == 0
                                                     or self.step % self.cfg.sample_every != 0):
            self.save_samples()
        logger.info("stopped by %s at step %d after %.1f s", stopped_by.value, self.step, wall)
        return TrainResult(out_dir=self.out_dir, step=self.step, start_step=start_step,
                           epoch=self.stream.progress, images_seen=self.images_seen, wall_seconds=wall,
                           images_per_second=(self.images_seen - start_images) / max(wall, 1e-9),
                           stopped_by=stopped_by, checkpoint_step=self._checkpoint_step, losses=losses)
