"""Denormal floats are flushed to zero on the CPU, in the run's thread and in torch's worker threads."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from genframe.api import train
from genframe.ops.denormals import flush_denormals

DENORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38

pytestmark = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="the processor cannot flush denormals")


@pytest.fixture(autouse=True)
def _restore():
    yield
    torch.set_flush_denormal(False)


def _kept() -> bool:
    return (torch.tensor([DENORMAL]) * 1.0).item() != 0.0


def test_flush_denormals_turns_denormal_results_into_zero():
    assert _kept()
    assert flush_denormals("cpu") is True
    assert not _kept()
    assert (torch.tensor([1.2e-38]) * 1.0).item() > 0  # normal numbers are untouched


def test_flush_denormals_leaves_other_devices_alone():
    assert flush_denormals("cuda") is False
    assert _kept()


def test_a_cpu_run_flushes_denormals(tiny_spec, write_spec, tmp_path):
    assert _kept()
    train(write_spec(tiny_spec), out=str(tmp_path / "run"), device="cpu")
    assert not _kept()


def test_the_command_line_flushes_them_in_every_worker_thread(tmp_path):
    # An element-wise product of a million values is split over torch's threads: each must flush.
    script = (
        "import torch; torch.set_num_threads(2)\n"
        "from genframe.cli import main\n"
        "main(['plugins'])\n"
        f"x = torch.full((1_000_000,), {DENORMAL}); print('zeros', int(((x * 1.0) == 0).sum()))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "zeros 1000000"
