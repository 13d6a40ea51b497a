"""Denormal floats are flushed to zero on the CPU while genframe works, and the default comes back after."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from genframe.api import train
from genframe.ops.denormals import denormals_flushed
from genframe.training import engine

DENORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38

pytestmark = pytest.mark.skipif(not torch.set_flush_denormal(False), reason="the processor cannot flush denormals")


@pytest.fixture(autouse=True)
def _not_flushing():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def _kept() -> bool:
    return (torch.tensor([DENORMAL]) * 1.0).item() != 0.0


def test_denormal_results_are_zero_inside_the_block_and_kept_after_it():
    with denormals_flushed("cpu") as flushed:
        assert flushed is True and not _kept()
        assert (torch.tensor([1.2e-38]) * 1.0).item() > 0  # normal numbers are untouched
    assert _kept()


def test_nested_blocks_restore_only_at_the_outermost():
    with denormals_flushed():
        with denormals_flushed():
            pass
        assert not _kept()
    assert _kept()


def test_other_devices_are_left_alone():
    with denormals_flushed("cuda") as flushed:
        assert flushed is False and _kept()


def test_a_cpu_run_flushes_while_it_trains_and_restores_after(tiny_spec, write_spec, tmp_path, monkeypatch):
    seen = []
    original = engine._run_with_recovery
    monkeypatch.setattr(engine, "_run_with_recovery", lambda *a, **k: (seen.append(_kept()), original(*a, **k)))
    train(write_spec(tiny_spec), out=str(tmp_path / "run"), device="cpu")
    assert seen == [False] and _kept()


def test_the_command_line_flushes_them_in_every_worker_thread():
    # An element-wise product of a million values is split over torch's threads: each must flush.
    script = (
        "import torch; torch.set_num_threads(2)\n"
        "import genframe.commands.plugins as command\n"
        "from genframe.cli import main\n"
        "def probe(args):\n"
        f"    x = torch.full((1_000_000,), {DENORMAL}); print('zeros', int(((x * 1.0) == 0).sum())); return 0\n"
        "command._cmd_plugins = probe\n"
        "main(['plugins'])\n"
        "print('after', float(torch.tensor([1e-39]) * 1.0) != 0.0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-2:] == ["zeros 1000000", "after True"]
