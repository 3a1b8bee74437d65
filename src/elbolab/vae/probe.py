"""Linear probe on frozen encoder features (lecture notes 004: "After training, throw away decoder and use encoder
for a downstream task").

Features are the encoder's code (``model.features(x)``: the posterior mean for a VAE/HVAE, the code of a plain
autoencoder). A multinomial logistic regression is fitted on standardised training features by full-batch
L-BFGS (deterministic, no learning-rate tuning) with an L2 penalty, and scored on held-out features.
Shapes: ``features: (N, F)`` float, ``labels: (N,)`` long in ``0..num_classes-1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProbeResult", "extract_features", "linear_probe"]


@dataclass
class ProbeResult:
    """Accuracies in [0, 1] of the linear classifier on the probe's training and test features."""

    train_accuracy: float
    test_accuracy: float
    num_features: int
    num_classes: int
    num_train: int
    num_test: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def extract_features(model: nn.Module, data: Iterable) -> tuple[Tensor, Tensor]:
    """``model.features`` of every ``(x, y)`` batch of ``data``: ``(N, F)`` float32 and ``(N,)`` long, on CPU."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2 or batch[1] is None:
                raise ValueError("extract_features: data must yield (x, y) batches with labels")
            x, y = batch[0], batch[1]
            feats.append(model.features(x).float().cpu())
            labels.append(y.long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features: data yielded no batches")
    return torch.cat(feats), torch.cat(labels)


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 num_classes: int | None = None, weight_decay: float = 1e-4, max_iter: int = 500) -> ProbeResult:
    """Fit ``softmax(W f + b)`` on the training features, report train and test accuracy.

    Features are standardised with the training mean and std. ``weight_decay`` is the L2 coefficient on ``W``
    (per example). ``num_classes`` defaults to ``1 + max label``.
    """
    if train_features.ndim != 2 or test_features.ndim != 2 or train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"linear_probe: features must be (N, F) with equal F, got {tuple(train_features.shape)} "
                         f"and {tuple(test_features.shape)}")
    if train_labels.shape != train_features.shape[:1] or test_labels.shape != test_features.shape[:1]:
        raise ValueError("linear_probe: labels must have shape (N,) matching the features")
    if weight_decay < 0:
        raise ValueError(f"linear_probe: weight_decay = {weight_decay!r} must be >= 0")
    k = int(num_classes) if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    if k < 2 or int(train_labels.min()) < 0 or int(train_labels.max()) >= k or int(test_labels.max()) >= k:
        raise ValueError(f"linear_probe: labels must lie in 0..{k - 1} with at least 2 classes")
    f_train = train_features.double()
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-8)
    a_train = (f_train - mean) / std
    a_test = (test_features.double() - mean) / std
    y_train = train_labels.long()

    linear = nn.Linear(a_train.shape[1], k).double()
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(a_train), y_train) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        train_acc = (linear(a_train).argmax(1) == y_train).double().mean()
        test_acc = (linear(a_test).argmax(1) == test_labels.long()).double().mean()
    return ProbeResult(train_accuracy=float(train_acc), test_accuracy=float(test_acc),
                       num_features=int(a_train.shape[1]), num_classes=k, num_train=int(a_train.shape[0]),
                       num_test=int(a_test.shape[0]))
