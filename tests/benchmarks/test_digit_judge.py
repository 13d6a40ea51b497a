"""The digit judge's arithmetic and plumbing, on scikit-learn's digits written as a small MNIST folder."""

from __future__ import annotations

import importlib.util
import math
import sys

import fsspec
import numpy as np
import pytest
import torch

from ..conftest import REPO
from ..plugins.data.test_data import write_split


@pytest.fixture
def judge_module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("digit_judge", REPO / "benchmarks" / "digit_judge.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "digit_judge", module)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "JUDGE_EPOCHS", 10)
    monkeypatch.setattr(module, "HELD_OUT", 797 / 1797)  # 1,000 of the 1,797 digits train the classifier
    return module


@pytest.fixture(scope="module")
def judge_cache(tmp_path_factory):
    """One cache for the module: the judge is trained once, then read back."""
    return tmp_path_factory.mktemp("judge-cache")


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    """1,797 real handwritten digits (8x8, upscaled to 28x28) as an MNIST test split."""
    tmp_path = tmp_path_factory.mktemp("digits")
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    small = torch.from_numpy(np.rint(pixels * (255 / 16)).reshape(-1, 1, 8, 8)).float()
    images = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear").round().clamp(0, 255)
    write_split(fsspec.filesystem("file"), str(tmp_path / "data" / "mnist"), "test",
                images.squeeze(1).to(torch.uint8).numpy(), labels.astype(np.uint8), gz=True)
    return tmp_path / "data"


def test_classifier_is_matches_its_formula_and_its_bounds(judge_module):
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1)
    marginal = p.mean(0)
    expected = math.exp(float((p * (p.log() - marginal.log())).sum(1).mean()))
    assert judge_module.classifier_is(logits) == pytest.approx(expected, rel=1e-9)
    confident = torch.eye(10).repeat(5, 1) * 100  # every class equally often, each sample certain
    assert judge_module.classifier_is(confident) == pytest.approx(10.0, rel=1e-6)
    assert judge_module.classifier_is(torch.zeros(20, 10)) == pytest.approx(1.0)
    assert judge_module.coverage(confident) == 10
    assert judge_module.coverage(confident[:3]) == 3


def test_judge_separates_real_digits_from_broken_samples_and_caches_itself(judge_module, digits_root, judge_cache):
    logs = []
    judge = judge_module.Judge("mnist", n=300, root=digits_root, cache=judge_cache, log=logs.append)
    assert len(list(judge_cache.glob("*.pt"))) == 1  # the classifier component's cache
    assert judge.held_out_accuracy > 0.8  # digits are easy: ten epochs on 1,000 of them suffice
    assert judge.floor["n"] == 300 and judge.floor["classes"] == 10 and judge.floor["is"] > 5
    blank = torch.zeros(300, 1, 28, 28, dtype=torch.uint8)
    noise = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for broken in (blank, noise):
        result = judge.relative(judge.score(broken))
        assert result["fd_over_floor"] > 10 and result["is"] < 0.5 * judge.floor["is"]
    assert judge.score(blank)["classes"] == 1
    # samples of any size and colour are read as 28-px grey digits
    colour = judge.reference.repeat(1, 3, 1, 1)
    torch.testing.assert_close(judge.read(colour)[0], judge.read(judge.reference)[0])
    assert judge.score(torch.nn.functional.pad(judge.reference, (2, 2, 2, 2)))["fd"] < 10 * judge.floor["fd"]
    with pytest.raises(ValueError, match="uint8"):
        judge.read(torch.zeros(2, 1, 28, 28))
    # a second judge reads the trained weights from the cache instead of training again
    from genframe_plugins.metrics import classifier

    classifier._TRAINED.clear()
    cached = list(judge_cache.glob("*.pt"))
    again = judge_module.Judge("mnist", n=300, root=digits_root, cache=judge_cache, log=logs.append)
    assert list(judge_cache.glob("*.pt")) == cached and again.floor == judge.floor


def test_judge_refuses_an_n_the_held_out_images_cannot_serve_twice(judge_module, digits_root, judge_cache):
    with pytest.raises(SystemExit, match="at most 398"):  # 1,797 - 1,000 held out
        judge_module.Judge("mnist", n=500, root=digits_root, cache=judge_cache)


def test_samples_of_reads_an_npz_and_names_what_is_missing(judge_module, tmp_path):
    images = np.zeros((5, 1, 28, 28), np.uint8)
    np.savez(tmp_path / "s.npz", images=images)
    assert judge_module.samples_of(str(tmp_path / "s.npz"), 4, 0, None).shape == (4, 1, 28, 28)
    with pytest.raises(SystemExit, match="holds 5 images"):
        judge_module.samples_of(str(tmp_path / "s.npz"), 6, 0, None)
    np.savez(tmp_path / "t.npz", pixels=images)
    with pytest.raises(SystemExit, match="no 'images' array"):
        judge_module.samples_of(str(tmp_path / "t.npz"), 4, 0, None)


def test_command_line_prints_the_table_with_the_floor(judge_module, digits_root, judge_cache, tmp_path, monkeypatch,
                                                     capsys):
    np.savez(tmp_path / "s.npz", images=np.zeros((300, 1, 28, 28), np.uint8))
    monkeypatch.setenv("GENFRAME_DATA", str(digits_root))
    monkeypatch.setattr(sys, "argv", ["digit_judge.py", str(tmp_path / "s.npz"), "--n", "300", "--cache",
                                      str(judge_cache), "--json", str(tmp_path / "out.json")])
    judge_module.main()
    printed = capsys.readouterr().out
    assert "| real-vs-real floor | 300 |" in printed and "s.npz | 300 |" in printed
    import json

    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["protocol"]["n"] == 300 and saved["results"][str(tmp_path / "s.npz")]["classes"] == 1
