"""Data-parallel training: torchrun with 2 gloo processes on the CPU against one process, same global batch."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genframe.ops import distributed
from genframe.training.context import EpochBatches
from genframe.errors import GenframeError
from genframe.storage import CHECKPOINT_INDEX, RunStorage
from .tiny_specs import (BEGAN, CONDITIONAL, GAN, GLANN, GLANN_FLOW, RELATIVISTIC, VAE, assert_same_losses,
                         losses)


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


# One process and two add up the global batch's gradients in different orders. In float32 the
# rounding differences (1e-7) grow with training: one process against two measured up to 6.6e-5
# relative on the VAE's losses and 2.3e-4 absolute on GLANN's weights, one machine's draw from a
# spread that another machine may exceed. In float64 (precision: fp64) they stayed below 1.2e-14
# relative (losses) and 2.3e-15 absolute (weights) on every spec here, so the comparisons run in
# float64 and are held to SAME.
SAME = 1e-10


def _fp64(spec: dict) -> dict:
    return {**spec, "precision": "fp64"}


def _genframe(args: list[str], processes: int) -> None:
    """``genframe ARGS`` in one process, or under torchrun in ``processes`` gloo processes."""
    launcher = ([sys.executable, "-m", "genframe"] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                 "-m", "genframe"])
    result = subprocess.run([*launcher, *args], env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("spec", [GAN, GLANN, VAE, BEGAN, CONDITIONAL, RELATIVISTIC, GLANN_FLOW],
                         ids=lambda s: s["name"])
def test_two_processes_follow_one_process_with_the_same_global_batch(spec, write_spec, tmp_path):
    path = write_spec(_fp64(spec))
    _genframe(["run", path, "--out", str(tmp_path / "one")], processes=1)
    _genframe(["run", path, "--out", str(tmp_path / "two")], processes=2)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) >= 4
    assert_same_losses(one, two, rel=SAME)
    # rank 0 alone wrote the folder: one record per logging point, the same checkpoints
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert json.loads((tmp_path / "two" / "run.json").read_text())["hardware"]["processes"] == 2
    # the same weights (in float32, Adam's near-sign steps where a gradient is ~0 could move a weight
    # by up to a learning rate)
    weights_one = RunStorage(str(tmp_path / "one")).load_checkpoint()["components"]
    weights_two = RunStorage(str(tmp_path / "two")).load_checkpoint()["components"]
    for name, state in weights_one.items():
        for key, tensor in state.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(weights_two[name][key], tensor, rtol=0, atol=SAME)
    # trainer state that steers training (BEGAN's k_t) is the global batch's in every process
    mid_one, mid_two = _last_mid_stage(tmp_path / "one"), _last_mid_stage(tmp_path / "two")
    if mid_one is not None and "divergence" in mid_one["trainer"]:
        torch.testing.assert_close(mid_two["trainer"]["divergence"], mid_one["trainer"]["divergence"],
                                   rtol=SAME, atol=SAME)


def test_two_processes_follow_one_process_in_float32(write_spec, tmp_path):
    """The precision runs use: the same losses to 1e-4 (measured here: 4.9e-7 on this spec)."""
    path = write_spec(GAN)
    _genframe(["run", path, "--out", str(tmp_path / "one")], processes=1)
    _genframe(["run", path, "--out", str(tmp_path / "two")], processes=2)
    assert_same_losses(losses(tmp_path / "one"), losses(tmp_path / "two"), rel=1e-4)


@pytest.mark.parametrize("spec", [GAN, GLANN], ids=lambda s: s["name"])
def test_two_processes_replaying_graphs_follow_one_process(spec, write_spec, tmp_path):
    """The gradient exchange is part of the replayed step (GLO's table exchanges its batch rows)."""
    spec = {**copy.deepcopy(_fp64(spec)), "cuda_graphs": "emulate"}
    if "gan" in spec["stages"][0]["name"]:
        spec["stages"][0]["trainer"]["steps"] = 10  # most steps are replays
    path = write_spec(spec)
    _genframe(["run", path, "--out", str(tmp_path / "one")], processes=1)
    _genframe(["run", path, "--out", str(tmp_path / "two")], processes=2)
    assert_same_losses(losses(tmp_path / "one"), losses(tmp_path / "two"), rel=SAME)


def _last_mid_stage(run: Path) -> dict | None:
    """The newest checkpoint taken inside a stage (it holds the trainer's state), if any."""
    storage = RunStorage(str(run))
    inside = [e for e in storage.checkpoints() if e["step"] > 0]
    return torch.load(run / inside[-1]["file"], weights_only=True) if inside else None


def _crash_after(run: Path, step: int) -> None:
    """Leave the run as a crash right after the checkpoint of ``step`` would: later ones uncommitted."""
    index_path = run / CHECKPOINT_INDEX
    index = json.loads(index_path.read_text())
    index["checkpoints"] = [e for e in index["checkpoints"] if (e["stage"], e["step"]) <= (0, step)]
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_under_another_number_of_processes(before, after, write_spec, tmp_path):
    path = write_spec(_fp64(GAN))
    _genframe(["run", path, "--out", str(tmp_path / "reference")], processes=1)
    _genframe(["run", path, "--out", str(tmp_path / "run")], processes=before)
    _crash_after(tmp_path / "run", step=2)
    _genframe(["run", "--resume", str(tmp_path / "run")], processes=after)
    assert_same_losses(losses(tmp_path / "reference"), losses(tmp_path / "run"), rel=SAME)


ROWS_SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
from genframe.ops import distributed

world = distributed.join(torch.device("cpu"))
sent = []
for name in ("all_reduce", "all_gather"):
    original = getattr(dist, name)
    def counting(tensor_or_list, *args, _original=original, **kwargs):
        tensor = tensor_or_list if isinstance(tensor_or_list, torch.Tensor) else args[0]
        sent.append(tensor.numel())
        return _original(tensor_or_list, *args, **kwargs)
    setattr(dist, name, counting)
torch.manual_seed(0)
table, other = torch.nn.Parameter(torch.randn(1000, 8)), torch.nn.Parameter(torch.randn(3))
rows = torch.randperm(1000)[:16][world.rank * 8:(world.rank + 1) * 8]  # disjoint shares of one batch
loss = table[rows].square().sum() * (world.rank + 1) + other.sum() * (world.rank + 1)
loss.backward()
dense = table.grad.clone()
distributed.average_(dense)
distributed.rows_used(table, rows)
sent.clear()
distributed.average_gradients([table, other])
report = {"same": torch.equal(table.grad, dense), "sent": sent, "other": other.grad.tolist()}
with open(os.path.join(sys.argv[1], f"rank{world.rank}.json"), "w") as fh:
    json.dump(report, fh)
distributed.leave()
"""


def test_a_code_table_exchanges_the_rows_of_the_batch_only(tmp_path):
    script = tmp_path / "rows.py"
    script.write_text(ROWS_SCRIPT)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run([*launcher, str(script), str(tmp_path)], env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert len(reports) == 2
    for report in reports:
        assert report["same"]  # exactly the dense all-reduce's average
        assert report["other"] == [1.5, 1.5, 1.5]  # (1 + 2) / 2: dense parameters are averaged as before
        # the table: 8 row numbers and 8 x 8 values per process, not 1000 x 8; the other parameter: 3
        assert sorted(report["sent"]) == [3, 8, 64]


def test_a_batch_that_does_not_split_over_the_processes_is_refused(write_spec, tmp_path):
    spec = {**GAN, "stages": [{"name": "gan", "trainer": {**GAN["stages"][0]["trainer"], "batch_size": 15}}]}
    path = write_spec(spec)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genframe"]
    result = subprocess.run([*launcher, "run", path, "--out", str(tmp_path / "run")], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert ("genframe: error: stages[0].trainer.batch_size: 15 does not split evenly over 2 processes; "
            "use a multiple of 2") in result.stderr
    # torchrun reports the failed children with a traceback of its own; none comes from genframe
    assert not re.search(r'File "[^"]*(genframe|plugins)/', result.stderr)


# ------------------------------------------------------------------ one process: everything is the identity


def test_a_single_process_world_changes_nothing():
    assert not distributed.launched() and distributed.current() == distributed.SINGLE
    t = torch.arange(6.0)
    assert distributed.per_example(lambda n: torch.arange(float(n)), 3).tolist() == [0.0, 1.0, 2.0]
    assert distributed.process_mean(t) is t
    assert distributed.gather_rows(lambda a, b: t[a:b] * 2, 6).tolist() == (t * 2).tolist()
    assert distributed.broadcast_object({"x": 1}) == {"x": 1}
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.average_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]


def test_epoch_batches_split_each_global_batch_into_contiguous_shares():
    whole = EpochBatches(40, 8, seed=3, device=torch.device("cpu"))
    shares = [EpochBatches(40, 8, seed=3, device=torch.device("cpu"), world=distributed.World(rank=r, size=4))
              for r in range(4)]
    for step in (0, 4, 5, 11):  # across epochs too
        assert torch.cat([s.indices(step) for s in shares]).tolist() == whole.indices(step).tolist()
    assert shares[0].local_batch_size == 2 and shares[0].steps_per_epoch == whole.steps_per_epoch
    with pytest.raises(GenframeError, match="does not split evenly over 3 processes"):
        EpochBatches(40, 8, seed=3, device=torch.device("cpu"), world=distributed.World(rank=0, size=3))


def test_the_device_of_a_process_follows_local_rank(monkeypatch):
    assert distributed.local_device("cuda") == "cuda"  # not launched: unchanged
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_device("cuda") == "cuda:3"
    assert distributed.local_device("cpu") == "cpu"
    with pytest.raises(GenframeError, match="would put every process on one GPU"):
        distributed.local_device("cuda:1")
    assert distributed.local_device("auto") == ("cuda:3" if torch.cuda.is_available() else "cpu")
