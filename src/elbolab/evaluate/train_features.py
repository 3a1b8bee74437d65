"""Train the shipped feature/classifier CNN of a dataset, deterministically, in minutes on a CPU.

    python -m elbolab.evaluate.train_features --dataset mnist [--data-dir DIR] [--out-dir DIR]

Recipe: :class:`~elbolab.evaluate.features.FeatureNet`, AdamW with a one-cycle learning rate, random
translations of up to 2 pixels (plus horizontal flips for Fashion-MNIST), bf16 autocast, a fixed seed. All
randomness (initialisation, shuffling, augmentation, dropout) flows from ``seed``; with the same torch build
and thread count the same weights come out bit for bit. The weights are written as safetensors with a JSON
card beside them (training data, test accuracy measured in float32 on the full test split, SHA-256).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save
from tqdm import tqdm

from elbolab.config import DataConfig, Precision
from elbolab.io import atomic_write_bytes, atomic_write_text
from elbolab.data import load_dataset, to_float
from elbolab.evaluate.features import (FeatureDataset, FeatureNet, FeatureNetConfig, feature_dataset,
                                       sha256_file, weights_paths)

logger = logging.getLogger(__name__)


@dataclass
class FeatureTrainConfig:
    """Recipe of a feature network (recorded in its JSON card)."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 4e-3  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    max_shift: int = 2  # random translation in pixels (zero padding)
    hflip: bool = False  # random horizontal flips (Fashion-MNIST: clothes are left/right symmetric)
    precision: Precision = Precision.BF16
    seed: int = 0
    arch: FeatureNetConfig = field(default_factory=FeatureNetConfig)


def default_recipe(dataset: str | FeatureDataset) -> FeatureTrainConfig:
    """The recipe the shipped weights were trained with."""
    ds = feature_dataset(dataset)
    if ds is FeatureDataset.FASHION_MNIST:
        return FeatureTrainConfig(hflip=True)
    return FeatureTrainConfig()


@dataclass
class TrainedFeatures:
    """A trained network, its float32 test accuracy and per-epoch history (loss, accuracy, seconds)."""

    net: FeatureNet
    test_accuracy: float
    history: list[dict[str, float]]
    seconds: float


def augment(x: torch.Tensor, max_shift: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels (zero = background = -1) and optional flips.

    x: (B, C, H, W) in [-1, 1]; same shape out.
    """
    b, _, h, w = x.shape
    if max_shift > 0:
        pad = F.pad(x, (max_shift,) * 4, value=-1.0)
        dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :])  # (B, H)
        cols = (dx[:, None] + torch.arange(w)[None, :])  # (B, W)
        bidx = torch.arange(b)[:, None, None]
        x = pad.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous()


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in eval mode, float32. images: (N, C, H, W) float in [-1, 1]; labels: (N,) long."""
    net.eval()
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        pred = net(images[i : i + batch_size]).argmax(1)
        correct += int((pred == labels[i : i + batch_size]).sum())
    return correct / max(1, images.shape[0])


def train_feature_network(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, cfg: FeatureTrainConfig) -> TrainedFeatures:
    """Train a :class:`FeatureNet` on float images in [-1, 1].

    train_x: (N, C, H, W) float; train_y: (N,) long; test_x, test_y likewise (used only for the report).
    """
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"images/labels length mismatch: {train_x.shape[0]}/{train_y.shape[0]} train, "
                         f"{test_x.shape[0]}/{test_y.shape[0]} test")
    torch.manual_seed(cfg.seed)  # initialisation and dropout
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # shuffling and augmentation
    net = FeatureNet(cfg.arch)
    steps_per_epoch = (train_x.shape[0] + cfg.batch_size - 1) // cfg.batch_size
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.25)
    bf16 = cfg.precision is Precision.BF16
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(train_x.shape[0], generator=gen)
        total_loss, seen = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for s in bar:
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = augment(train_x[idx], cfg.max_shift, cfg.hflip, gen)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * idx.numel()
            seen += idx.numel()
            if s % 50 == 0:
                bar.set_postfix(loss=f"{total_loss / seen:.4f}")
        acc = accuracy(net, test_x, test_y)
        history.append({"epoch": epoch + 1, "train_loss": total_loss / seen, "test_accuracy": acc,
                        "seconds": time.perf_counter() - t0})
        logger.info("epoch %d: train loss %.4f, test accuracy %.4f (%.0f s)", epoch + 1, total_loss / seen, acc,
                    time.perf_counter() - t0)
    net.eval()
    return TrainedFeatures(net=net, test_accuracy=accuracy(net, test_x, test_y), history=history,
                           seconds=time.perf_counter() - t0)


def _card_value(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _card_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_card_value(x) for x in v]
    if isinstance(v, Precision):
        return v.value
    return v


def save_feature_network(trained: TrainedFeatures, dataset: str | FeatureDataset, cfg: FeatureTrainConfig,
                         data_info: dict[str, Any], out_dir: str | os.PathLike[str] | None = None,
                         command: str = "") -> tuple[Path, Path]:
    """Write ``<dataset>_features.safetensors`` (atomically) and its JSON card with the SHA-256 of that file."""
    ds = feature_dataset(dataset)
    st_path, card_path = weights_paths(ds, out_dir)
    state = {k: v.detach().contiguous() for k, v in trained.net.state_dict().items()}
    atomic_write_bytes(st_path, save(state, metadata={"dataset": ds.value, "format": "elbolab FeatureNet"}))
    recipe = _card_value(asdict(cfg))
    arch = recipe.pop("arch")
    card = {
        "dataset": ds.value,
        "architecture": arch,
        "features": f"penultimate layer ({cfg.arch.feature_dim}-d, after BatchNorm and ReLU)",
        "input": "(B, 1, 28, 28) float images in [-1, 1]",
        "training_data": data_info,
        "recipe": recipe,
        "test_accuracy": trained.test_accuracy,
        "history": trained.history,
        "train_seconds": round(trained.seconds, 1),
        "num_parameters": sum(p.numel() for p in trained.net.parameters()),
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "machine": platform.machine()},
        "command": command or f"python -m elbolab.evaluate.train_features --dataset {ds.value}",
        "sha256": sha256_file(st_path),
    }
    atomic_write_text(card_path, json.dumps(card, indent=2) + "\n")
    return st_path, card_path


def _load_split(name: str, data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset(DataConfig(name=name, data_dir=data_dir, split=split))
    images = data.images
    labels = torch.as_tensor(data.labels).long()
    return to_float(images), labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m elbolab.evaluate.train_features",
        description="Train the shipped feature/classifier CNN used by FID, KID, IS and precision/recall.",
        epilog="example: python -m elbolab.evaluate.train_features --dataset mnist --data-dir ../shared/data/mnist",
    )
    parser.add_argument("--dataset", required=True, choices=[m.value for m in FeatureDataset])
    parser.add_argument("--data-dir", default="", help="folder with the IDX .gz files (default: elbolab.data's)")
    parser.add_argument("--out-dir", default=None, help="where to write the weights (default: the package's)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (the shipped weights: 1; results are bitwise reproducible for a "
                             "given torch build and thread count)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads <= 0:
            raise ValueError(f"--threads {args.threads}: must be > 0")
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    cfg = default_recipe(args.dataset)
    if args.epochs is not None:
        if args.epochs <= 0:
            raise ValueError(f"--epochs {args.epochs}: must be > 0")
        cfg.epochs = args.epochs
    if args.seed is not None:
        cfg.seed = args.seed
    train_x, train_y = _load_split(args.dataset, args.data_dir, "train")
    test_x, test_y = _load_split(args.dataset, args.data_dir, "test")
    trained = train_feature_network(train_x, train_y, test_x, test_y, cfg)
    info = {"dataset": args.dataset, "train_images": int(train_x.shape[0]), "test_images": int(test_x.shape[0]),
            "data_dir": args.data_dir or "(elbolab.data default)",
            "files": "train-images-idx3-ubyte.gz / t10k-images-idx3-ubyte.gz (canonical MD5s)"}
    flags = [f"--dataset {args.dataset}"] + [f"--{k} {v}" for k, v in
                                             (("epochs", args.epochs), ("seed", args.seed), ("threads", args.threads))
                                             if v is not None]
    command = "python -m elbolab.evaluate.train_features " + " ".join(flags)
    st_path, card_path = save_feature_network(trained, args.dataset, cfg, info, args.out_dir, command)
    logger.info("test accuracy %.4f; wrote %s and %s", trained.test_accuracy, st_path, card_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
