"""The GPU suite's own plumbing: budget, time limits, skips and records (checked on the CPU)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from ..conftest import REPO


@pytest.fixture
def suite(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_suite", REPO / "benchmarks" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(suite, monkeypatch, *args: str) -> int | str:
    """The suite's exit status: 0, 1, or the message it exited with."""
    monkeypatch.setattr(sys, "argv", ["gpu_suite.py", *args])
    try:
        suite.main()
    except SystemExit as exit_:
        return 0 if exit_.code is None else exit_.code
    return 0


def test_steps_run_in_order_within_their_limits_and_the_budget(suite, monkeypatch, tmp_path, capsys):
    (tmp_path / "broken.json").write_text('{"from": "an earlier run"}')  # a reused output folder
    monkeypatch.setattr(suite, "MIN_STEP_SECONDS", 2)
    monkeypatch.setattr(suite, "steps", lambda out, smoke: [
        suite.Step("quick", ["-c", "print('measured 42')"], cap=30),
        suite.Step("broken", ["-c", "raise SystemExit(3)"], cap=30),
        suite.Step("slow", ["-c", "import time; print('started', flush=True); time.sleep(60)"], cap=2),
        suite.Step("needs_package", ["-c", "pass"], cap=30, needs="somepackage is not installed"),
        suite.Step("too_late", ["-c", "pass"], cap=30),
    ])
    code = run_main(suite, monkeypatch, "--smoke", "--out", str(tmp_path), "--budget", "4")
    assert code == 1  # a step failed or timed out
    records = {r["step"]: r for r in json.loads((tmp_path / "suite.json").read_text())["steps"]}
    assert [*records] == ["quick", "broken", "slow", "needs_package", "too_late"]
    assert records["quick"]["status"] == "passed" and "measured 42" in (tmp_path / "quick.log").read_text()
    assert records["broken"]["status"] == "failed" and records["broken"]["exit_code"] == 3
    assert "results" not in records["broken"] and not (tmp_path / "broken.json").exists()
    assert records["slow"]["status"] == "timed out" and records["slow"]["limit_s"] <= 2
    assert 1 <= records["slow"]["seconds"] < 10 and "started" in (tmp_path / "slow.log").read_text()
    assert records["needs_package"] == {"step": "needs_package", "status": "skipped",
                                        "why": "somepackage is not installed"}
    assert records["too_late"]["status"] == "skipped" and "of the budget left" in records["too_late"]["why"]
    assert "| slow | timed out |" in capsys.readouterr().out
    assert json.loads((tmp_path / "environment.json").read_text())["torch"]


def test_only_names_steps_of_the_suite(suite, monkeypatch, tmp_path):
    message = run_main(suite, monkeypatch, "--smoke", "--out", str(tmp_path), "--only", "nope")
    assert message.startswith("gpu_suite: --only: unknown step(s) nope; steps: gpu_tests, engine_overhead, ")


def test_smoke_runs_real_steps(suite, monkeypatch, tmp_path):
    """The steps' command lines fit the scripts they call (the cheapest three, tiny, on the CPU)."""
    code = run_main(suite, monkeypatch, "--smoke", "--out", str(tmp_path), "--only",
                    "gpu_tests,neighbours,flow_sampling")
    records = json.loads((tmp_path / "suite.json").read_text())["steps"]
    assert code == 0 and [r["status"] for r in records] == ["passed", "passed", "passed"], records
    assert records[2]["results"]["nfe"] == 4 and records[2]["results"]["genframe_eager_s"] > 0
    # the step's figures are in suite.json too, as the step wrote them
    assert records[1]["results"] == json.loads((tmp_path / "neighbours.json").read_text())
    assert records[1]["results"]["check"]["matmul_vs_float64_mismatches"] == 0


def test_refuses_to_run_without_a_gpu_unless_smoke(suite, monkeypatch, tmp_path):
    monkeypatch.setattr(suite.torch.cuda, "is_available", lambda: False)
    message = run_main(suite, monkeypatch, "--out", str(tmp_path))
    assert message.startswith("gpu_suite: no CUDA device here")
