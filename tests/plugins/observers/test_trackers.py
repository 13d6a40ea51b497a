"""MLflow and Weights & Biases observers, against the real libraries offline: what they logged, read back."""

from __future__ import annotations

import json
import struct

import pytest

from genframe.api import train
from genframe.storage import RunStorage
from genframe_plugins.observers._trackers import flat

CLASSIFIER = {"type": "classifier", "epochs": 2, "width": 4, "features": 8}


@pytest.fixture
def evaluated_spec(tiny_spec):
    """The tiny GLANN, measured at the end with classifier features (no download)."""
    tiny_spec["evaluation"] = {"n_samples": 4, "metrics": [{"type": "fid", "n": 20, "features": CLASSIFIER}]}
    return tiny_spec


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "cache"))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def test_the_spec_becomes_dotted_parameters():
    assert flat({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": None}], "f": True}) == \
        {"a.b": "1", "a.c": "[1, 2]", "d.0.e": "null", "f": "true"}


def test_trackers_stay_off_unless_asked_for(evaluated_spec, write_spec, tmp_path):
    run = train(write_spec(evaluated_spec), out=str(tmp_path / "run")).url
    assert not RunStorage.open(run).exists("trackers.json") and not (tmp_path / "run" / "wandb").exists()


def test_mlflow_logs_parameters_losses_metrics_protocols_and_images(evaluated_spec, write_spec, tmp_path,
                                                                    monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the standard variable turns it on
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny-tests")
    run = train(write_spec(evaluated_spec), out=str(tmp_path / "run")).url
    client = MlflowClient(uri)
    (tracked,) = client.search_runs([client.get_experiment_by_name("tiny-tests").experiment_id])
    assert json.loads(RunStorage.open(run).read_bytes("trackers.json"))["mlflow"] == tracked.info.run_id
    assert tracked.info.status == "FINISHED" and tracked.info.run_name == "tiny"
    assert tracked.data.params["stages.0.trainer.type"] == "autoencoding"
    assert tracked.data.params["components.mapper.hidden"] == "[8]"
    logged = [r for r in RunStorage.open(run).read_log() if r.get("stage") == "glo" and "event" not in r]
    history = client.get_metric_history(tracked.info.run_id, "glo/loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in logged]
    evaluation = [r for r in RunStorage.open(run).read_log() if r.get("event") == "evaluation"][-1]
    assert tracked.data.metrics["mapper/eval/fid"] == pytest.approx(evaluation["fid"])
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id, "protocols")}
    assert artifacts == {f"protocols/mapper-{evaluation['step']:07d}.json"}
    images = {a.path for a in client.list_artifacts(tracked.info.run_id, "images/mapper")}
    assert any(p.startswith("images/mapper/samples-") for p in images)
    assert mlflow.active_run() is None  # the client API only: no global run left behind


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _wandb_records(path):
    """The records of an offline W&B run file: a LevelDB-style log of protobuf records."""
    from wandb.proto import wandb_internal_pb2

    data, position, pending, block = path.read_bytes(), 7, b"", 32768  # 7: W&B's own file header
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            position += left
            continue
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        pending = chunk if kind == 2 else pending + chunk if kind in (3, 4) else chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_logs_config_losses_metrics_and_protocols_offline(evaluated_spec, write_spec, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    evaluated_spec["trackers"] = ["wandb"]  # the spec field turns it on
    run = train(write_spec(evaluated_spec), out=str(tmp_path / "run")).url
    ids = json.loads(RunStorage.open(run).read_bytes("trackers.json"))
    (log,) = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{ids['wandb']}/run-{ids['wandb']}.wandb")
    records = list(_wandb_records(log))
    config = {_key(item): item.value_json for r in records if r.WhichOneof("record_type") == "run"
              for item in r.run.config.update}
    assert json.loads(config["stages.0.trainer.type"]) == "autoencoding"
    history = [{_key(item): json.loads(item.value_json) for item in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    logged = [r for r in RunStorage.open(run).read_log() if r.get("stage") == "glo" and "event" not in r]
    glo = [(h["glo/step"], h["glo/loss"]) for h in history if "glo/loss" in h]
    assert glo == [(r["step"], pytest.approx(r["loss"])) for r in logged]
    evaluation = [r for r in RunStorage.open(run).read_log() if r.get("event") == "evaluation"][-1]
    assert any(h.get("mapper/eval/fid") == pytest.approx(evaluation["fid"]) for h in history)
    summary = {_key(item): item.value_json for r in records if r.WhichOneof("record_type") == "summary"
               for item in r.summary.update}
    assert json.loads(json.loads(summary["protocol/mapper"]))["fid"]["features"]["type"] == "classifier"


def test_a_resumed_run_continues_the_same_mlflow_run(tiny_spec, write_spec, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from genframe import hookimpl
    from genframe.api import load_system
    from genframe.components.registry import create_registry
    from genframe.training.engine import run as run_engine

    from ...conftest import SimulatedCrash

    class Crash:
        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            if (stage, step) == ("mapper", 4):
                raise SimulatedCrash("killed")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    registry = create_registry([Crash()])
    with pytest.raises(SimulatedCrash):
        run_engine(load_system(write_spec(tiny_spec), registry=registry), out=str(tmp_path / "run"), registry=registry)
    train(resume=str(tmp_path / "run"))
    client = MlflowClient(uri)
    (tracked,) = client.search_runs([client.get_experiment_by_name("genframe").experiment_id])
    assert tracked.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(tracked.info.run_id, "mapper/loss")]
    assert max(steps) == 8 and 2 in steps  # before the crash and after the resume, in one MLflow run
