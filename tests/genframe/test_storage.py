"""Run folders: atomic files, checkpoints committed through a hashed index, damage detection."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from genframe.errors import GenframeError
from genframe.storage import RunStorage


def _payload(stage: int, step: int, value: float = 0.0) -> dict:
    return {"stage": stage, "step": step, "weights": torch.full((3,), value)}


@pytest.fixture(params=["local", "memory"])
def storage(request, tmp_path):
    url = str(tmp_path / "run") if request.param == "local" else f"memory://storage-tests/{tmp_path.name}"
    return RunStorage(url)


def test_write_bytes_replaces_whole_files_and_leaves_no_temporaries(storage):
    storage.write_bytes("a/b.bin", b"first")
    storage.write_bytes("a/b.bin", b"second")
    assert storage.read_bytes("a/b.bin") == b"second"
    assert [p.rsplit("/", 1)[1] for p in storage.fs.ls(storage.path("a"), detail=False)] == ["b.bin"]


def test_log_appends_records(storage):
    storage.log({"stage": "s", "step": 1, "loss": 0.5})
    storage.log({"stage": "s", "step": 2, "loss": 0.25})
    assert storage.read_log() == [{"stage": "s", "step": 1, "loss": 0.5}, {"stage": "s", "step": 2, "loss": 0.25}]



@pytest.mark.parametrize("refusal", [NotImplementedError, ValueError])
def test_a_store_without_append_mode_gets_its_log_rewritten_whole(storage, monkeypatch, refusal):
    """Object stores (S3, GCS) refuse mode "ab" with one of these; the log must still grow, not raise."""
    opened = storage.fs.open

    def no_append(path, mode="rb", *args, **kwargs):
        if "a" in mode:
            raise refusal(f"append not supported: {path}")
        return opened(path, mode, *args, **kwargs)

    monkeypatch.setattr(storage.fs, "open", no_append)
    storage.log({"stage": "s", "step": 1, "loss": 0.5})
    storage.log({"stage": "s", "step": 2, "loss": 0.25})
    assert storage.read_log() == [{"stage": "s", "step": 1, "loss": 0.5}, {"stage": "s", "step": 2, "loss": 0.25}]

def test_keeps_the_newest_checkpoints_and_the_best(storage):
    for step in range(1, 6):
        storage.save_checkpoint(_payload(0, step, step), keep=2,
                                best={"metric": "fid", "value": 3.0} if step == 2 else None)
    kept = [(e["stage"], e["step"]) for e in storage.checkpoints()]
    assert kept == [(0, 2), (0, 4), (0, 5)]  # step 2 survives because it is the best
    files = sorted(p.rsplit("/", 1)[1] for p in storage.fs.ls(storage.path("checkpoints"), detail=False))
    assert files == ["00-000000002.pt", "00-000000004.pt", "00-000000005.pt", "index.json"]
    assert storage.load_checkpoint()["step"] == 5
    assert storage.load_checkpoint("best")["step"] == 2 and storage.best_value() == 3.0


def test_every_stage_end_checkpoint_outlives_keep(storage):
    """A stage's last checkpoint is saved as step 0 of the next stage: it is where --reuse starts."""
    for stage, step in [(0, 2), (0, 4), (1, 0), (1, 2), (1, 4), (1, 6), (2, 0), (2, 2), (2, 4)]:
        storage.save_checkpoint(_payload(stage, step, step), keep=1)
    assert [(e["stage"], e["step"]) for e in storage.checkpoints()] == [(1, 0), (2, 0), (2, 4)]
    files = sorted(p.rsplit("/", 1)[1] for p in storage.fs.ls(storage.path("checkpoints"), detail=False))
    assert files == ["01-000000000.pt", "02-000000000.pt", "02-000000004.pt", "index.json"]


def test_damaged_newest_checkpoint_falls_back_to_the_previous(storage, capsys):
    storage.save_checkpoint(_payload(0, 10, 1.0))
    storage.save_checkpoint(_payload(0, 20, 2.0))
    newest = storage.checkpoints()[-1]["file"]
    data = storage.read_bytes(newest)
    with storage.fs.open(storage.path(newest), "wb") as fh:  # a truncated copy, as a full disk leaves it
        fh.write(data[: len(data) // 2])
    payload = storage.load_checkpoint()
    assert payload["step"] == 10 and torch.equal(payload["weights"], torch.full((3,), 1.0))
    warning = capsys.readouterr().err
    assert f"{newest}: damaged" in warning and "using an older one" in warning


def test_every_checkpoint_damaged_is_an_error(storage):
    storage.save_checkpoint(_payload(0, 10))
    entry = storage.checkpoints()[0]
    storage.write_bytes(entry["file"], b"garbage")
    with pytest.raises(GenframeError, match="every checkpoint is damaged"):
        storage.load_checkpoint()


class _Exploit:
    def __reduce__(self):
        return (print, ("this code must never run",))


def test_a_pickle_payload_is_refused_even_with_a_matching_hash(storage, capsys):
    storage.save_checkpoint(_payload(0, 10))
    entry = storage.checkpoints()[0]
    buffer = io.BytesIO()
    torch.save({"format": 1, "stage": 0, "step": 10, "evil": _Exploit()}, buffer, pickle_module=pickle)
    data = buffer.getvalue()
    storage.write_bytes(entry["file"], data)
    import hashlib

    index = storage.read_json("checkpoints/index.json")
    index["checkpoints"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    storage.write_json("checkpoints/index.json", index)
    with pytest.raises(GenframeError, match="every checkpoint is damaged"):
        storage.load_checkpoint()
    captured = capsys.readouterr()
    assert "this code must never run" not in captured.out
    assert "unreadable (UnpicklingError)" in captured.err


def test_no_checkpoint_yet(storage):
    assert storage.load_checkpoint() is None
    with pytest.raises(GenframeError, match="no best checkpoint recorded"):
        storage.load_checkpoint("best")
