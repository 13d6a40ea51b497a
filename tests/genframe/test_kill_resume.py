"""A run killed with SIGKILL at any moment resumes to the same weights as a run never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from genframe.storage import RunStorage


def _genframe(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genframe", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _checkpoint_position(run_dir) -> tuple[int, int] | None:
    try:
        checkpoint = RunStorage(str(run_dir)).load_checkpoint()
    except Exception:
        return None
    return None if checkpoint is None else (checkpoint["stage"], checkpoint["step"])


def _weights(run_dir) -> dict[str, torch.Tensor]:
    checkpoint = RunStorage.open(str(run_dir)).load_checkpoint()
    return {f"{c}.{k}": v for c, state in checkpoint["components"].items() for k, v in state.items()}


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [(0, 40), (1, 0), (1, 40)], ids=["mid-glo", "between-stages", "mid-mapper"])
def test_sigkill_then_resume_is_bit_identical(tiny_spec, write_spec, tmp_path, kill_after):
    tiny_spec["data"]["limit"] = 256
    tiny_spec["stages"][0]["trainer"]["epochs"] = 12   # 16 steps per epoch
    tiny_spec["stages"][1]["trainer"]["epochs"] = 12
    tiny_spec["checkpoint_every"] = 20
    tiny_spec["log_every"] = 10
    spec = write_spec(tiny_spec)

    reference = _genframe("run", spec, "--out", str(tmp_path / "reference"))
    assert reference.wait(timeout=300) == 0, reference.stderr.read()

    victim = _genframe("run", spec, "--out", str(tmp_path / "killed"))
    deadline = time.time() + 300
    while (_checkpoint_position(tmp_path / "killed") or (-1, -1)) < kill_after:
        assert victim.poll() is None, "the run finished before it could be killed; make it longer"
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = _checkpoint_position(tmp_path / "killed")
    assert killed_at is not None and killed_at < (2, 0), "the run was not interrupted"

    resumed = _genframe("run", "--resume", str(tmp_path / "killed"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    # Exact, not within a tolerance: the three processes run on this machine with the environment
    # (thread count, instruction sets) they inherit from the test, so the same kernels sum in the
    # same order; a resume that restored anything less than the whole state would show here.
    expected, got = _weights(tmp_path / "reference"), _weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
