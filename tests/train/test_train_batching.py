"""Deterministic batches: epoch permutations, strided rank slices of one global batch, mid-epoch resume."""

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset
from train_toys import NoisyBatchDataset

from elbolab.train import BatchStream, epoch_permutation


def test_epoch_permutation_is_a_deterministic_permutation():
    p = epoch_permutation(100, seed=3, epoch=2)
    assert torch.equal(p.sort().values, torch.arange(100))
    assert torch.equal(p, epoch_permutation(100, seed=3, epoch=2))
    assert not torch.equal(p, epoch_permutation(100, seed=3, epoch=1))
    assert not torch.equal(p, epoch_permutation(100, seed=4, epoch=2))


class Items(Dataset):
    """Map-style dataset without batch(): item i is (x_i, y_i)."""

    def __init__(self, n):
        self.x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3)
        self.y = torch.arange(n)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("make", [lambda n: Items(n), lambda n: TensorDataset(Items(n).x, Items(n).y),
                                  lambda n: NoisyBatchDataset(Items(n).x, Items(n).y, noise=0.0)])
def test_ranks_take_strided_slices_of_the_global_batch(make):
    n, b = 30, 6
    one = BatchStream(make(n), b, seed=1)
    two = [BatchStream(make(n), b, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(12):  # > 2 epochs of 5 batches (the last 0 examples are dropped)
        _, y = one.next()
        parts = [s.next()[1] for s in two]
        assert torch.equal(parts[0], y[0::2]) and torch.equal(parts[1], y[1::2])
        if step < 5:
            assert torch.equal(y, epoch_permutation(n, 1, 0)[step * b:(step + 1) * b])
    assert one.epoch == 2 and one.position == 2 * b and one.progress == 2 + 12 / 30


def test_state_round_trip_resumes_mid_epoch():
    ds = NoisyBatchDataset(torch.randn(20, 2), torch.arange(20), noise=0.5)
    a = BatchStream(ds, 4, seed=0)
    for _ in range(3):
        a.next()
    state = a.state_dict()
    expected = [a.next() for _ in range(4)]
    b = BatchStream(ds, 4, seed=0)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, [b.next() for _ in range(4)]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)  # same examples and same noise


def test_workers_give_the_same_batches():
    n = 24
    plain = BatchStream(Items(n), 4, seed=5)
    workers = BatchStream(Items(n), 4, seed=5, num_workers=1)
    for _ in range(8):
        (x1, y1), (x2, y2) = plain.next(), workers.next()
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_bad_batch_sizes():
    with pytest.raises(ValueError, match="not divisible by the 4 processes"):
        BatchStream(Items(20), 6, seed=0, world_size=4)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        BatchStream(Items(3), 4, seed=0)
    with pytest.raises(ValueError, match="x or \\(x, y\\)"):
        BatchStream(TensorDataset(torch.zeros(8), torch.zeros(8), torch.zeros(8)), 4, seed=0).next()
