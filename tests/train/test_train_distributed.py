"""Processes launched as torchrun does: 2 gloo ranks follow the parameter trajectory of 1 process with the same
global batch; SIGINT saves a checkpoint at the current step and exits cleanly."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from train_toys import MLP, read_metrics
from train_worker import ddp

from elbolab.train import DistContext, load_checkpoint
from elbolab.train.distributed import all_reduce_gradients, init_distributed

HERE = Path(__file__).parent
WORKER = str(HERE / "train_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert ctx.mean({"a": 2.0}) == {"a": 2.0} and ctx.any_each([False, True]) == [False, True]
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    all_reduce_gradients([p], ctx)
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        init_distributed("cpu")
    assert DistContext().comm_device == torch.device("cpu")


@pytest.mark.slow
def test_two_processes_follow_the_one_process_trajectory(tmp_path, monkeypatch):
    steps = 5
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ddp(str(tmp_path / "single"), str(tmp_path / "single"), steps)  # in-process reference
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, WORKER, "ddp", str(tmp_path / "ddp"), str(tmp_path / "ddp"),
                               str(steps)], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out.decode()[-3000:]
    ref = safetensors.torch.load_file(str(tmp_path / "single.rank0"))
    ranks = [safetensors.torch.load_file(str(tmp_path / f"ddp.rank{r}")) for r in range(2)]
    for k, v in ref.items():
        if k == "losses":  # each rank's local loss is over half the batch: compare the logged mean below
            continue
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # the ranks agree exactly
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.allclose(ref["net.0.weight"], MLP(seed=0).net[0].weight, atol=1e-3)  # it did train
    # logged metrics: written once (rank 0), the loss all-reduced to the global-batch mean
    single, multi = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert [m["step"] for m in multi] == list(range(1, steps + 1))
    assert [m["loss"] for m in multi] == pytest.approx([m["loss"] for m in single], rel=1e-5)
    assert [m["loss"] for m in single] == pytest.approx(ref["losses"].tolist(), rel=1e-12)
    ckpt = load_checkpoint(tmp_path / "ddp")
    assert ckpt.step == steps and len(ckpt.state["rng"]) == 2 and ckpt.state["world_size"] == 2


@pytest.mark.slow
def test_ranks_share_one_clock_for_a_time_based_lr_decay(tmp_path):
    """Rank 1 starts its clock 0.3 s late, in a run whose lr decays linearly over its 3 s: with each rank
    reading its own clock, the lrs (and then the weights) would differ."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, WORKER, "ddp", str(tmp_path / "ddp"), str(tmp_path / "ddp"), "0",
                               "0.3"], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out.decode()[-3000:]
    ranks = [safetensors.torch.load_file(str(tmp_path / f"ddp.rank{r}")) for r in range(2)]
    for k in ranks[0].keys() - {"losses"}:  # (each rank's loss is over its half of the batch)
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    lrs = [m["lr"] for m in read_metrics(tmp_path / "ddp")]
    assert len(lrs) >= 10 and all(b <= a for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.1 * 1e-2


@pytest.mark.slow
def test_sigint_saves_the_current_step_and_exits_cleanly(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, WORKER, "sigint", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").exists() or len(read_metrics(run)) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), err.decode()[-3000:]
    assert "Traceback" not in err.decode()
    result = json.loads(out.decode().split("RESULT ", 1)[1])
    assert result["stopped_by"] == "interrupted" and result["handler_restored"]
    assert result["step"] >= 3 and result["checkpoint_step"] == result["step"]
    ckpt = load_checkpoint(run)
    assert ckpt.step == result["step"]
    assert read_metrics(run)[-1]["step"] == result["step"]
