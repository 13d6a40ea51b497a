"""genframe export: a folder that samples like the run, without it, with weights in safetensors alone."""

from __future__ import annotations

import shutil

import fsspec
import pytest
import torch
from safetensors.torch import load_file

from genframe import GenframeError
from genframe.api import sample, train
from genframe.cli import main
from genframe.trained.export import export_run


@pytest.fixture
def finished(tiny_spec, write_spec, tmp_path):
    return train(write_spec(tiny_spec), out=str(tmp_path / "run")).url


def test_an_exported_folder_samples_what_the_run_samples_without_the_run(finished, tmp_path):
    expected, _ = sample(finished, 6, seed=3)
    out = export_run(finished, str(tmp_path / "shared"), samples=8)
    shutil.rmtree(finished)  # another machine: only the exported folder
    got, name = sample(out, 6, seed=3)
    assert torch.equal(got, expected) and name == "tiny"
    names = {p.name for p in (tmp_path / "shared").iterdir()}
    assert names == {"model.safetensors", "spec.yaml", "run.json", "metrics.jsonl", "README.md", "samples.png"}


def test_the_weights_are_the_sampler_chains_and_load_with_safetensors_alone(finished, tmp_path):
    export_run(finished, str(tmp_path / "shared"), samples=0)
    weights = load_file(str(tmp_path / "shared" / "model.safetensors"))
    assert {key.split(".")[0] for key in weights} == {"mapper", "generator"}  # no code table, no optimiser state
    card = (tmp_path / "shared" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: genframe\n") and "noise (`gaussian`) -> mapper" in card
    assert "samples.png" not in card


def test_an_exported_folder_works_through_any_fsspec_url(finished, tmp_path):
    out = export_run(finished, "memory://hub/user/tiny", samples=4)
    assert fsspec.filesystem("memory").exists("/hub/user/tiny/model.safetensors")
    images, _ = sample(out, 2, seed=0)
    assert images.shape == (2, 1, 8, 8)


def test_an_ema_generator_is_exported_with_its_average(tiny_spec, write_spec, tmp_path):
    tiny_spec["components"]["generator"] = {"type": "ema", "decay": 0.5, "generator": tiny_spec["components"]["generator"]}
    run = train(write_spec(tiny_spec), out=str(tmp_path / "run")).url
    export_run(run, str(tmp_path / "shared"), samples=0)
    keys = load_file(str(tmp_path / "shared" / "model.safetensors"))
    assert any(k.startswith("generator.average.") for k in keys)
    assert torch.equal(sample(str(tmp_path / "shared"), 4, seed=1)[0], sample(run, 4, seed=1)[0])


def test_export_refuses_a_folder_that_holds_a_run_and_the_command_says_what_it_wrote(finished, tmp_path, capsys):
    with pytest.raises(GenframeError, match="already holds a run"):
        export_run(finished, finished)
    assert main(["export", finished, str(tmp_path / "shared"), "--samples", "4"]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "shared"), "--metrics", "is", "--features", "classifier", "--n", "50"]) == 0
