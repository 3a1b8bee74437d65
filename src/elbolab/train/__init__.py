"""Training: one Trainer for every family, EMA, crash-safe checkpoints, torchrun data parallelism."""

from elbolab.train.batching import BatchStream, epoch_permutation
from elbolab.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoCheckpointError,
    checkpoint_step,
    has_checkpoint,
    load_checkpoint,
    load_weights,
    recover,
    save_checkpoint,
)
from elbolab.train.distributed import DistContext, init_distributed, select_device, shutdown_distributed
from elbolab.train.ema import EMA
from elbolab.objectives import (
    AdversarialObjective,
    LossOutput,
    Objective,
    ParamGroup,
    SingleLoss,
    UpdatePhase,
)
from elbolab.train.trainer import NonFiniteLossError, StopReason, Trainer, TrainResult, lr_factor, warmup_lr

__all__ = [
    "AdversarialObjective", "BatchStream", "Checkpoint", "CheckpointError", "DistContext", "EMA", "LossOutput",
    "NoCheckpointError", "NonFiniteLossError", "Objective", "ParamGroup", "SingleLoss", "StopReason",
    "TrainResult", "Trainer", "UpdatePhase", "checkpoint_step", "epoch_permutation", "has_checkpoint",
    "init_distributed", "load_checkpoint", "load_weights", "recover", "save_checkpoint", "select_device",
    "lr_factor", "shutdown_distributed", "warmup_lr",
]
