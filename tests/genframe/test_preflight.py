"""A run that cannot finish says so in its first seconds: weights, data and statistics files before training."""

from __future__ import annotations

import pytest
import torch

from genframe import GenframeError, Metric, component, hookimpl
from genframe.api import train
from genframe.cli import main
from genframe.components.registry import create_registry
from genframe.ops import distributed
from genframe.storage import RunStorage
from genframe.sweep.plan import load_sweep
from genframe.sweep.run import run_sweep
from genframe.trained.evaluate import evaluate_run
from genframe.training import engine

from .sweep_helpers import Counter, registry_with, write_sweep

UNREACHABLE = "http://127.0.0.1:9/pt_inception-2015-12-05-6726825d.pth"  # refused at once: offline


@pytest.fixture(autouse=True)
def no_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENFRAME_INCEPTION_WEIGHTS", UNREACHABLE)


@pytest.fixture
def steps(monkeypatch):
    """Training steps taken, by stage name."""
    taken: list[tuple[str, int]] = []
    original = engine._guarded_step

    def counted(runner, step, stage):
        taken.append((stage.name, step))
        return original(runner, step, stage)

    monkeypatch.setattr(engine, "_guarded_step", counted)
    return taken


def test_a_spec_with_fid_and_no_weights_fails_before_its_first_step(tiny_spec, write_spec, tmp_path, steps):
    tiny_spec["evaluation"] = {"metrics": [{"type": "fid", "n": 10}]}
    with pytest.raises(GenframeError) as info:
        train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    message = str(info.value)
    assert "evaluation.metrics[0].features: inception_v3: cannot download the FID Inception weights" in message
    assert "\n" not in message and steps == [] and not (tmp_path / "run").exists()


def test_a_vgg_loss_without_its_weights_fails_before_its_first_step(tiny_spec, write_spec, tmp_path, steps):
    tiny_spec["stages"][0]["trainer"]["loss"] = {"type": "vgg", "weights": str(tmp_path / "vgg16.pth"),
                                                  "sha256": "0" * 64}
    with pytest.raises(GenframeError, match=r"stages\[0\]\.trainer\.loss: vgg: weights: cannot read"):
        train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    assert steps == [] and not (tmp_path / "run").exists()


def test_a_sweep_that_cannot_finish_fails_once_before_any_trial(tmp_path, steps):
    text = """
budget: 3
select: {metric: fid}
set:
  evaluation.metrics: [{type: fid, n: 10}]
search:
  stages.0.trainer.optimizer.lr: {log_uniform: [1.0e-3, 1.0e-1]}
models: [../specs/a.yaml]
"""
    counter = Counter()
    registry = registry_with(counter)
    sweep = load_sweep(write_sweep(tmp_path, text), registry=registry)
    with pytest.raises(GenframeError, match="inception_v3: cannot download"):
        run_sweep(sweep, str(tmp_path / "out"), registry=registry)
    assert steps == [] and counter.started == [] and not (tmp_path / "out").exists()


class _DiskFull:
    """Metric whose first computation fails as a full disk would; later ones work (the disk was cleared)."""

    calls = 0


@component("metric", "flaky_test")
class Flaky(Metric):
    """Fails on its first computation (test only)."""

    def compute(self, sample, real_images, device):
        _DiskFull.calls += 1
        if _DiskFull.calls == 1:
            raise OSError(28, "No space left on device")
        return {"flaky": float(sample(4, torch.Generator().manual_seed(0)).mean())}


class _FlakyPlugin:
    @hookimpl
    def genframe_components(self):
        return [Flaky]


def test_a_metric_that_fails_at_the_end_leaves_a_completed_run_to_measure_later(tiny_spec, write_spec, tmp_path):
    _DiskFull.calls = 0
    registry = create_registry([_FlakyPlugin()])
    tiny_spec["evaluation"] = {"metrics": [{"type": "flaky_test"}]}
    from genframe.api import load_system

    finished = engine.run(load_system(write_spec(tiny_spec), registry=registry), out=str(tmp_path / "run"),
                          registry=registry)
    storage = RunStorage.open(finished.url)
    log = storage.read_log()
    (failed,) = [r for r in log if r.get("event") == "evaluation_failed"]
    assert failed["stage"] == "mapper" and failed["error"] == "OSError: [Errno 28] No space left on device"
    assert storage.checkpoints()[-1]["stage"] == 2  # the final checkpoint, after the failed evaluation
    record = evaluate_run(finished.url, registry=registry)  # later, the disk cleared
    assert _DiskFull.calls == 2 and isinstance(record["flaky"], float) and record["event"] == "evaluation"


def test_a_trial_whose_last_evaluation_failed_is_kept_out_of_selection_and_the_sweep_goes_on(tmp_path):
    _DiskFull.calls = 0
    text = """
budget: 2
select: {metric: flaky, mode: max}
set:
  evaluation.metrics: [{type: flaky_test}]
search:
  stages.0.trainer.optimizer.lr: {log_uniform: [1.0e-3, 1.0e-1]}
models: [../specs/a.yaml]
"""
    registry = create_registry([Counter(), _FlakyPlugin()])
    sweep = load_sweep(write_sweep(tmp_path, text), registry=registry)
    first, second = run_sweep(sweep, str(tmp_path / "out"), registry=registry)
    assert first["status"] == "failed" and first["error"].startswith(
        "its last evaluation failed (OSError: [Errno 28] No space left on device); the trained run is kept")
    assert second["status"] == "ok"
    assert RunStorage.open(f"{tmp_path}/out/{first['model']}/search-0000-seed0").checkpoints()  # kept


def test_genframe_validate_preflight_checks_the_weights_and_the_output(tiny_spec, write_spec, tmp_path, capsys):
    path = write_spec(tiny_spec)
    assert main(["validate", path, "--preflight", "--out", str(tmp_path / "runs" / "x")]) == 0
    printed = capsys.readouterr().out
    assert "everything it needs is in place" in printed and "writable" in printed
    assert not (tmp_path / "runs" / "x").exists()  # the probe left nothing behind
    tiny_spec["evaluation"] = {"metrics": [{"type": "fid"}]}
    assert main(["validate", write_spec(tiny_spec, "fid.yaml"), "--preflight"]) == 1
    assert "inception_v3: cannot download" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["validate", path, "--preflight", "--out", str(blocker / "run")]) == 1
    assert f"--out {blocker / 'run'}: cannot write there" in capsys.readouterr().err


def test_under_torchrun_the_main_process_fetches_first_and_every_process_stops_on_its_error(tiny_spec, write_spec,
                                                                                           monkeypatch):
    from genframe.api import load_system

    order: list[str] = []
    system = load_system(write_spec(tiny_spec))
    for rank, main_process in ((0, True), (1, False)):
        monkeypatch.setattr(distributed, "current", lambda m=main_process: type("W", (), {"is_main": m})())
        monkeypatch.setattr(distributed, "broadcast_object", lambda value: (order.append("broadcast"), value)[1])
        monkeypatch.setattr(engine, "preflight", lambda s, r=rank: order.append(f"preflight {r}"))
        engine._preflight(system)
    assert order == ["preflight 0", "broadcast", "broadcast", "preflight 1"]
    monkeypatch.setattr(distributed, "broadcast_object", lambda value: "spec.yaml: data: missing on rank 0")
    with pytest.raises(GenframeError, match="missing on rank 0"):  # a process other than the main one stops too
        engine._preflight(system)
