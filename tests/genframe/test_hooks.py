"""Observer hooks receive a frozen RunInfo: what a logger needs, and no live object of the engine."""

from __future__ import annotations

import attrs
import pytest

from genframe import RunInfo, hookimpl
from genframe.api import train
from genframe.components.registry import create_registry


class Recorder:
    def __init__(self):
        self.seen: list[tuple[str, RunInfo]] = []

    @hookimpl
    def genframe_run_started(self, run):
        self.seen.append(("started", run))

    @hookimpl
    def genframe_step_end(self, run, stage, step, total_steps, losses):
        self.seen.append((f"{stage}:{step}", run))

    @hookimpl
    def genframe_run_finished(self, run, status, error):
        self.seen.append((status, run))


def test_observers_get_a_frozen_description_of_the_run(tiny_spec, write_spec, tmp_path):
    recorder = Recorder()
    tiny_spec["stages"] = tiny_spec["stages"][:1]
    out = tmp_path / "run"
    train(write_spec(tiny_spec), out=str(out), registry=create_registry([recorder]))
    events = [name for name, _ in recorder.seen]
    assert events[0] == "started" and events[-1] == "completed" and "glo:2" in events
    run = recorder.seen[0][1]
    assert isinstance(run, RunInfo)
    assert (run.name, run.url, run.device, run.resumed, run.world_size, run.rank) == \
        ("tiny", str(out), "cpu", False, 1, 0)
    assert run.spec["stages"][0]["trainer"]["epochs"] == 3 and run.log_every == 2
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        run.url = "elsewhere"
    with pytest.raises(TypeError):
        run.spec["seed"] = 1  # a read-only copy: an observer cannot change what the run records
    assert run.local_folder() == str(out)
    assert [r["step"] for r in run.read_log()] == [2, 4, 6, 8, 10, 12]
    run.write_bytes("observer/note.txt", b"written by an observer")
    assert (out / "observer" / "note.txt").read_bytes() == b"written by an observer"


def test_an_observer_that_raises_on_every_step_is_switched_off_with_one_warning(tiny_spec, write_spec, tmp_path,
                                                                               capsys):
    from genframe import hookimpl
    from genframe.api import load_system
    from genframe.components.registry import create_registry
    from genframe.storage import RunStorage
    from genframe.training.engine import run

    calls: list[int] = []

    class BrokenTracker:
        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            calls.append(step)
            raise ConnectionError("tracker unreachable")

    class Recorder:
        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            seen.append(step)

    seen: list[int] = []
    registry = create_registry([BrokenTracker(), Recorder()])
    finished = run(load_system(write_spec(tiny_spec), registry=registry), out=str(tmp_path / "run"), registry=registry)
    assert RunStorage.open(finished.url).checkpoints()[-1]["stage"] == 2  # completed
    assert len(calls) == 1 and len(seen) > 1  # switched off after its first failure; the others go on
    warnings = [line for line in capsys.readouterr().err.splitlines() if "observer plugin" in line]
    assert len(warnings) == 1 and "BrokenTracker" in warnings[0] and "genframe_step_end" in warnings[0]
    assert "ConnectionError: tracker unreachable" in warnings[0]
