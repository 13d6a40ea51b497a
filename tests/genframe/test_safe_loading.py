"""Untrusted bytes never run code: every file genframe loads with torch.load refuses a pickle payload."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import torch

from genframe import GenframeError
from genframe.storage import RunStorage


class Payload:
    """Unpickling this runs a shell command: what a malicious .pt file carries."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(marker, wrap=lambda payload: payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(wrap(Payload(marker)), buffer)
    return buffer.getvalue()


def test_torch_is_at_least_the_first_version_without_a_known_weights_only_hole():
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    assert (major, minor) >= (2, 10)


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    storage = RunStorage(str(tmp_path / "run"))
    data = _malicious(marker, lambda p: {"stage": 0, "step": 1, "components": {"evil": p}})
    storage.write_bytes("checkpoints/00-000000001.pt", data)
    entry = {"file": "checkpoints/00-000000001.pt", "stage": 0, "step": 1, "size": len(data),
             "sha256": hashlib.sha256(data).hexdigest()}
    storage.write_json("checkpoints/index.json", {"format": 1, "checkpoints": [entry], "best": None})
    payload, problem = storage.verified_checkpoint(entry)
    assert payload is None and problem.startswith("unreadable") and not marker.exists()


def test_a_tensor_file_that_carries_code_is_refused(tmp_path):
    from genframe_plugins.data.tensor_file import TensorFile

    marker = tmp_path / "pwned"
    (tmp_path / "images.pt").write_bytes(_malicious(marker))
    with pytest.raises(GenframeError):
        TensorFile(path=str(tmp_path / "images.pt")).load()
    assert not marker.exists()


def test_statistics_and_weights_files_that_carry_code_are_refused(tmp_path):
    from genframe_plugins.metrics.feature_metrics import Statistics
    from genframe_plugins.objectives.losses import VGG

    marker = tmp_path / "pwned"
    data = _malicious(marker, lambda p: {"format": "genframe-fid-statistics/1", "mu": p, "sigma": p, "protocol": "{}"})
    (tmp_path / "stats.pt").write_bytes(data)
    with pytest.raises(GenframeError, match="is not a statistics file"):
        Statistics.load(str(tmp_path / "stats.pt"))
    weights = _malicious(marker, lambda p: {"features.0.weight": p})
    (tmp_path / "vgg16.pth").write_bytes(weights)
    with pytest.raises(GenframeError, match="is not a torch state dict"):
        VGG(weights=str(tmp_path / "vgg16.pth"), sha256=hashlib.sha256(weights).hexdigest()).preflight()
    assert not marker.exists()


def test_a_cached_classifier_that_carries_code_is_trained_again_instead(tmp_path, monkeypatch, capsys):
    from genframe_plugins.data.datasets import Digits
    from genframe_plugins.metrics import classifier

    monkeypatch.setattr(classifier, "_TRAINED", {})
    images, labels = Digits(image_size=8).load()
    net = classifier.Classifier(epochs=1, width=4, features=8, cache_dir=str(tmp_path))
    key = net._key(images, labels)
    marker = tmp_path / "pwned"
    (tmp_path / f"{key[:24]}.pt").write_bytes(_malicious(marker, lambda p: {"key": key, "state": p}))
    net.fit(images, labels)
    assert net.protocol()["images"] == len(images) and not marker.exists()
    assert "unreadable" in capsys.readouterr().err
