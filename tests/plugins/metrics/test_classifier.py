"""Classifier features: trained on the evaluated data's labels, cached, and the metrics' reference held out from it."""

from __future__ import annotations

import json

import pytest
import torch

from genframe import GenframeError
from genframe.api import train
from genframe.cli import main
from genframe.evaluation.metrics import compute_metrics
from genframe.storage import RunStorage
from genframe_plugins.data.datasets import Digits
from genframe_plugins.metrics import classifier as classifier_module
from genframe_plugins.metrics.classifier import Classifier
from genframe_plugins.metrics.feature_metrics import FID, InceptionScore

from .metric_helpers import Replay

CPU = torch.device("cpu")
FAST = {"epochs": 10, "width": 8, "features": 32, "lr": 3e-3}


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(classifier_module, "_TRAINED", {})


@pytest.fixture(scope="module")
def digits():
    return Digits(image_size=16).load()  # 1,797 labelled 8x8 digits, shown at 16 px


def test_it_learns_the_labels_and_holds_out_a_seeded_share(digits, tmp_path):
    images, labels = digits
    net = Classifier(**FAST)
    net.fit(images, labels)
    held = net.held_out_positions()
    assert len(held) == round(0.4 * len(images)) and len(set(held.tolist())) == len(held)
    protocol = net.protocol()
    assert protocol["held_out"] == len(held) and protocol["images"] == len(images)
    assert protocol["held_out_accuracy"] > 0.8  # ten digit classes, read after ten short epochs
    net.prepare(CPU)
    out = net.extract(images[:5])
    assert out["features"].shape == (5, 32) and out["logits"].shape == (5, 10)
    again = Classifier(**FAST, seed=1)
    again.fit(images, labels)  # another seed: another split and other weights
    assert again.protocol()["weights_sha256"] != protocol["weights_sha256"]
    assert not torch.equal(again.held_out_positions().sort().values, held.sort().values)


def test_it_is_trained_once_and_then_read_from_its_cache(digits, tmp_path, monkeypatch):
    images, labels = digits
    first = Classifier(**FAST)
    first.fit(images, labels)
    files = list((tmp_path / "cache" / "classifier").glob("*.pt"))
    assert len(files) == 1
    monkeypatch.setattr(classifier_module, "_TRAINED", {})  # a new process: only the file is left
    monkeypatch.setattr(Classifier, "_train", lambda *a: pytest.fail("trained again instead of reading the cache"))
    second = Classifier(**FAST)
    second.fit(images, labels)
    assert second.protocol() == first.protocol()
    files[0].write_bytes(b"damaged")  # a damaged cache file is not trusted
    monkeypatch.setattr(classifier_module, "_TRAINED", {})
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        Classifier(**FAST).fit(images, labels)


def test_data_without_labels_is_refused_with_the_alternative_named(digits):
    with pytest.raises(GenframeError, match="classifier learns the data set's labels.*inception_v3"):
        Classifier(**FAST).fit(digits[0], None)
    with pytest.raises(GenframeError, match="has not seen the data it measures"):
        Classifier(**FAST).prepare(CPU)


def test_fid_with_classifier_features_draws_its_reference_and_floor_from_held_out_images(digits):
    images, labels = digits
    fid = FID(n=250, n_real=250, batch_size=125, floor=True, cache=False, features={"type": "classifier", **FAST})
    noise = torch.randint(0, 256, images[:250].shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    results, protocols = compute_metrics([fid], Replay(noise), images, CPU, labels)
    assert results["fid"] > 20 * results["fid_floor"] > 0
    held = set(fid.features.held_out_positions().tolist())
    assert fid.real_positions(fid.features, images) is not None
    assert set(fid.real_positions(fid.features, images).tolist()) <= held
    protocol = protocols["fid"]
    assert protocol["features"]["type"] == "classifier" and protocol["floor"] == {"n": 250, "seed": 1}
    assert "not fitted to" in protocol["reference"]["drawn_from"]
    # real images the classifier never saw, besides the reference, score near the floor
    pool = fid.features.held_out_positions()
    others = pool[~torch.isin(pool, fid.real_positions(fid.features, images))][:250]
    real, _ = compute_metrics([fid], Replay(images[others]), images, CPU, labels)
    assert real["fid"] < 3 * real["fid_floor"]


def test_a_floor_the_real_images_cannot_serve_names_the_settings(digits):
    images, labels = digits
    fid = FID(n=600, floor=True, cache=False, features={"type": "classifier", **FAST})  # reference: all 719 held out
    with pytest.raises(GenframeError, match="floor needs n=600 real images besides the reference's 719, and 0 are "
                                            "left; lower n or n_real, or set floor: false"):
        compute_metrics([fid], Replay(images), images, CPU, labels)


def test_the_inception_score_reads_the_classifiers_logits(digits):
    images, labels = digits
    score = InceptionScore(n=500, splits=1, features={"type": "classifier", **FAST})
    real, _ = compute_metrics([score], Replay(images[:500]), images, CPU, labels)
    blank, _ = compute_metrics([score], Replay(torch.zeros_like(images[:500])), images, CPU, labels)
    assert real["is"] > 2.5 > 1.5 > blank["is"]  # ten classes, fairly confident, against one


def _classifier_run(tmp_path, write_spec, tiny_spec) -> str:
    tiny_spec["data"]["limit"] = 200  # trains on 200 digits; the metrics compare with all 1,797
    tiny_spec["evaluation"] = {"n_samples": 4, "data": {"type": "digits", "image_size": 8}, "metrics": [
        {"type": "fid", "n": 300, "n_real": 300, "floor": True, "features": {"type": "classifier", **FAST}}]}
    return train(write_spec(tiny_spec), out=str(tmp_path / "run")).url


def test_a_run_evaluates_offline_against_its_evaluation_data(tmp_path, write_spec, tiny_spec):
    run = _classifier_run(tmp_path, write_spec, tiny_spec)
    (record,) = [r for r in RunStorage.open(run).read_log() if r.get("event") == "evaluation"]
    assert record["fid"] > record["fid_floor"] > 0
    assert record["protocol"]["fid"]["reference"]["images"] == 1797  # evaluation.data, not the 200 trained on
    spec = RunStorage.open(run).read_spec()
    assert spec["evaluation"]["data"] == {"type": "digits", "image_size": 8, "limit": None, "subset_seed": 0}


def test_genframe_eval_measures_with_classifier_features_on_request(tmp_path, write_spec, tiny_spec, capsys):
    tiny_spec["data"]["limit"] = None
    run = train(write_spec(tiny_spec), out=str(tmp_path / "run")).url  # no metrics in the spec
    assert main(["eval", run, "--metrics", "fid,is", "--features", "classifier", "--n", "200", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fid"] > 0 and record["is"] >= 1
    assert record["protocol"]["fid"]["features"]["type"] == "classifier"
    assert main(["eval", run, "--features", "pixels"]) == 1
    assert "--features pixels: unknown feature extractor; known: classifier, inception_v3" in capsys.readouterr().err


def test_evaluation_data_without_a_type_changes_the_runs_data(write_spec, tiny_spec):
    from genframe.api import load_system

    tiny_spec["data"]["limit"] = 200
    tiny_spec["evaluation"] = {"data": {"limit": None}}
    system = load_system(write_spec(tiny_spec))
    assert system.evaluation.data.config() == {**system.data.config(), "limit": None}
    tiny_spec["data"]["type"] = "mnist"  # another data set for training: the reference follows it
    tiny_spec["data"].pop("image_size")
    assert load_system(write_spec(tiny_spec, "mnist.yaml")).evaluation.data.type_name == "mnist"
