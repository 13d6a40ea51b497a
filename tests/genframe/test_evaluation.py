"""Evaluation: features shared within one evaluation only, metrics during training, and ``genframe eval``."""

from __future__ import annotations

import json

import pytest
import torch

from genframe import GenframeError
from genframe.api import train
from genframe.cli import main
from genframe.evaluation.metrics import compute_metrics, image_digest
from genframe.trained.evaluate import evaluate_run
from genframe.components.registry import create_registry, set_registry
from genframe.reporting.report import build_report
from genframe.storage import RunStorage
from genframe_plugins.metrics import feature_metrics as metrics_module
from genframe_plugins.metrics.feature_metrics import FID, KID, InceptionScore, PrecisionRecall

from ..plugins.metrics.metric_helpers import PixelStats, PixelStatsPlugin, Replay, make_images

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(metrics_module, "_REFERENCES", {})


@pytest.fixture
def registry():
    """The installed components plus the test feature extractor, also as the process-wide registry (CLI)."""
    made = create_registry([PixelStatsPlugin()])
    set_registry(made)
    yield made
    set_registry(None)


def four_metrics(extractor, n=24):
    return [FID(n=n, features=extractor), InceptionScore(n=n, splits=2, features=extractor),
            KID(n=n, subsets=3, subset_size=12, features=extractor), PrecisionRecall(n=n, features=extractor)]


def test_one_evaluation_extracts_each_image_set_once():
    extractor = PixelStats()
    generated, real = make_images(24, seed=1), make_images(30, seed=2)
    results, protocols = compute_metrics(four_metrics(extractor), Replay(generated), real, CPU)
    assert extractor.images_seen == 24 + 30
    assert set(results) == {"fid", "is", "is_std", "kid", "kid_std", "pr_precision", "pr_recall"}
    assert set(protocols) == {"fid", "is", "kid", "pr"}
    assert protocols["kid"]["reference"] == protocols["pr"]["reference"] == protocols["fid"]["reference"]
    alone = {}
    for metric in four_metrics(PixelStats()):
        alone.update(metric.compute(Replay(generated), real, CPU))
    assert alone == pytest.approx(results, rel=1e-12)


def test_outside_an_evaluation_nothing_is_reused():
    """A sampler whose weights changed between calls must be measured again."""
    extractor = PixelStats()
    sampler = Replay(make_images(10, seed=1))
    metric = InceptionScore(n=10, splits=2, features=extractor)
    first = metric.compute(sampler, None, CPU)
    sampler.images = make_images(10, seed=5)
    second = metric.compute(sampler, None, CPU)
    assert extractor.images_seen == 20 and first != second


def test_two_metrics_reporting_the_same_name_are_refused():
    with pytest.raises(GenframeError, match="two metrics report fid; give one of them another name"):
        compute_metrics([FID(n=10, features=PixelStats(), cache=False)] * 2, Replay(make_images(10, seed=1)),
                        make_images(10, seed=2), CPU)


def test_image_digest_follows_the_pixels():
    images = make_images(5, seed=3)
    digest = image_digest(images)
    assert digest == image_digest(images.clone()) and len(digest) == 64
    images[0, 0, 0, 0] ^= 1
    assert image_digest(images) != digest
    assert image_digest(images[:, :1]) != image_digest(images[:, :1].contiguous().reshape(5, 1, 32, 32)[:4])
    del images  # a new tensor at the freed address is hashed afresh, not recognised by its address
    for seed in range(4):
        other = make_images(5, seed=10 + seed)
        assert image_digest(other) == image_digest(other.clone())
        del other


# --------------------------------------------------------------------------- during training and afterwards


def metric_spec(tiny_spec: dict) -> dict:
    features = {"type": "pixel_stats", "grid": 2}
    tiny_spec["evaluation"] = {"n_samples": 4, "metrics": [
        {"type": "fid", "n": 32, "batch_size": 16, "features": features},
        {"type": "inception_score", "n": 32, "splits": 2, "features": features},
        {"type": "kid", "n": 32, "subsets": 3, "subset_size": 16, "features": features},
        {"type": "precision_recall", "n": 32, "features": features},
    ]}
    return tiny_spec


@pytest.fixture
def trained_run(tmp_path, tiny_spec, write_spec, registry):
    path = write_spec(metric_spec(tiny_spec))
    return train(path, out=str(tmp_path / "run"), registry=registry).url


def test_an_fp64_run_evaluates_its_metrics_like_an_fp32_run(tmp_path, tiny_spec, write_spec, registry):
    """Its samples are uint8 images like any other run's, so the feature extractors see no float64."""
    tiny_spec["precision"] = "fp64"
    run = train(write_spec(metric_spec(tiny_spec)), out=str(tmp_path / "run"), registry=registry).url
    (record,) = [r for r in RunStorage.open(run).read_log() if r.get("event") == "evaluation"]
    assert record["fid"] > 0 and record["is"] >= 1 and 0 <= record["pr_recall"] <= 1
    assert record["protocol"]["fid"]["n"] == 32


def test_metrics_during_training_are_logged_with_their_protocol(trained_run):
    evaluations = [r for r in RunStorage.open(trained_run).read_log() if r.get("event") == "evaluation"]
    assert [r["stage"] for r in evaluations] == ["mapper"]  # only the sampling stage evaluates
    record = evaluations[0]
    assert record["fid"] > 0 and record["is"] >= 1 and 0 <= record["pr_recall"] <= 1
    protocol = record["protocol"]["fid"]
    assert protocol["features"] == {"type": "pixel_stats", "grid": 2}
    assert protocol["reference"]["images"] == 64 and protocol["n"] == 32
    page = build_report(trained_run)
    assert "<th>fid</th>" in page and "<th>protocol</th>" not in page


def test_genframe_eval_appends_results_and_protocol(trained_run, capsys):
    assert main(["eval", trained_run, "--metrics", "fid,is,kid,pr", "--n", "40", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("fid ") and "appended to" in out
    record = RunStorage.open(trained_run).read_log()[-1]
    assert record["event"] == "evaluation" and record["stage"] == "mapper"
    log = RunStorage.open(trained_run).read_log()
    trained = [r["step"] for r in log if r["stage"] == "mapper" and "event" not in r]
    assert record["step"] == max(trained) == 8  # the checkpoint evaluated: the end of the last stage
    assert {p["n"] for p in record["protocol"].values()} == {40}
    assert record["protocol"]["kid"]["subset_size"] == 16  # the spec's settings, --n overriding n
    assert record["eval"]["checkpoint"] == "last"
    assert record["eval"]["reference"]["data"]["type"] == "digits"
    assert main(["eval", trained_run, "--metrics", "is", "--n", "40", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["is"] == pytest.approx(record["is"], rel=1e-12)  # same seed, same images


def test_genframe_eval_against_a_statistics_file(trained_run, registry, tmp_path):
    stats = tmp_path / "cache" / "fid-stats"
    evaluate_run(trained_run, metrics=["fid"], registry=registry)  # fills the cache with the data's statistics
    (reference,) = stats.iterdir()
    record = evaluate_run(trained_run, metrics=["fid"], reference=str(reference), registry=registry)
    again = evaluate_run(trained_run, metrics=["fid"], registry=registry)
    assert record["fid"] == pytest.approx(again["fid"], rel=1e-12)
    assert record["protocol"]["fid"]["reference"]["stats"] == str(reference)
    assert record["eval"]["reference"] == {"stats": str(reference)}
    with pytest.raises(GenframeError, match="a statistics file serves fid only; kid needs real images"):
        evaluate_run(trained_run, metrics=["fid", "kid"], reference=str(reference), registry=registry)


def test_genframe_eval_errors_are_one_line(trained_run, capsys, registry):
    def error(argv):
        assert main(argv) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1
        return lines[0]

    assert "unknown metric 'fdi'; known: is, pr, fid" in error(["eval", trained_run, "--metrics", "fdi"])
    assert "data type 'digits' has no splits" in error(["eval", trained_run, "--reference", "test"])


def test_fid_with_default_settings_is_what_eval_runs_without_a_spec_metric(tmp_path, tiny_spec, write_spec,
                                                                            registry, monkeypatch):
    run = train(write_spec(tiny_spec), out=str(tmp_path / "plain"), registry=registry).url
    monkeypatch.setenv("GENFRAME_INCEPTION_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(GenframeError, match=r"inception_v3: weights: no such file .*absent\.pth"):
        evaluate_run(run, registry=registry)  # no metric in the spec: FID with the FID Inception
