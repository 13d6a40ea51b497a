"""The command line: every command for real, and one-line errors instead of tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from genframe.cli import main

from ..conftest import REPO, SPECS


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genframe: error: "), err
    return err[0][len("genframe: error: "):]


def test_validate_shipped_specs(capsys):
    specs = sorted(str(p) for p in SPECS.glob("*.yaml"))
    assert main(["validate", *specs]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ok")[0] for line in lines] == specs
    assert all(re.fullmatch(r".*: ok \(training needs about [0-9.]+ [KMG]iB\)", line) for line in lines), lines


def test_bad_spec_is_one_line(capsys, tiny_spec, write_spec):
    tiny_spec["stages"][0]["trainer"]["batch_size"] = "big"
    path = write_spec(tiny_spec)
    assert _one_line_error(capsys, ["run", path]) == \
        f"{path}: stages[0].trainer.batch_size: found 'big' (string), expected integer"


def test_missing_spec_file(capsys, tmp_path):
    assert _one_line_error(capsys, ["validate", str(tmp_path / "nope.yaml")]) == \
        f"{tmp_path / 'nope.yaml'}: no such spec file"


def test_missing_data_folder(capsys, tmp_path):
    message = _one_line_error(capsys, ["run", str(SPECS / "wgan_gp.yaml"), "--set", f"data.root={tmp_path}/absent",
                                       "--set", "data.download=false", "--device", "cpu",
                                       "--out", str(tmp_path / "run")])
    assert f"{tmp_path}/absent" in message and "download: true" in message


def test_an_offline_download_says_where_the_files_go(capsys, tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)  # the shipped specs download by default
    message = _one_line_error(capsys, ["run", str(SPECS / "glann.yaml"), "--set", f"data.root={tmp_path}/absent",
                                       "--device", "cpu", "--out", str(tmp_path / "run")])
    assert "download into" in message and "failed: RuntimeError: Error downloading" in message
    assert "without internet, put the files there yourself" in message and "t10k-images-idx3-ubyte" in message


def test_missing_run_folder(capsys, tmp_path):
    message = _one_line_error(capsys, ["sample", str(tmp_path / "no-run"), "--out", str(tmp_path / "x.npz")])
    assert message == f"{tmp_path / 'no-run'}: not a run folder (no spec.yaml found)"
    assert _one_line_error(capsys, ["run", "--resume", str(tmp_path / "no-run")]) == message


def test_unwritable_output(capsys, tmp_path, tiny_spec, write_spec):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = _one_line_error(capsys, ["run", write_spec(tiny_spec), "--out", str(blocker / "run")])
    assert message.startswith(f"{blocker / 'run'}: cannot write the run folder")


def test_unavailable_device(capsys, tiny_spec, write_spec, tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    message = _one_line_error(capsys, ["run", write_spec(tiny_spec), "--device", "cuda:0", "--out", str(tmp_path / "r")])
    assert message == "device: 'cuda:0' requested but CUDA is not available; use device: cpu or auto"


def test_run_then_sample(capsys, tiny_spec, write_spec, tmp_path):
    out = tmp_path / "run"
    assert main(["run", write_spec(tiny_spec), "--out", str(out), "--set", "stages.1.trainer.epochs=1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    for name in ("a", "b"):
        assert main(["sample", str(out), "--n", "6", "--seed", "5", "--out", str(tmp_path / f"{name}.npz")]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["images"].shape == (6, 1, 8, 8) and a["images"].dtype == np.uint8
    assert str(a["spec"]) == "tiny"
    np.testing.assert_array_equal(a["images"], b["images"])


def test_run_reuse_trains_the_later_stage_only_and_refuses_in_one_line(capsys, tiny_spec, write_spec, tmp_path):
    source = tmp_path / "source"
    assert main(["run", write_spec(tiny_spec), "--out", str(source)]) == 0
    capsys.readouterr()
    out = tmp_path / "variant"
    assert main(["run", write_spec(tiny_spec), "--set", "stages.1.trainer.sample_factor=4", "--reuse", str(source),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(out)
    assert "stage glo" not in printed.err and "stage mapper" in printed.err  # GLO was not trained again
    message = _one_line_error(capsys, ["run", write_spec(tiny_spec), "--set", "seed=3", "--reuse", str(source),
                                       "--out", str(tmp_path / "refused")])
    assert message.startswith(f"--reuse {source}: its seed differs from this spec's")
    assert not (tmp_path / "refused").exists()


def test_plugins_lists_role_name_distribution_summary(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["role", "name", "distribution", "summary"]
    row = next(line for line in lines if " adversarial " in line)
    assert row.split()[:3] == ["trainer", "adversarial", "genframe"]
    assert "Generator against critic" in row


def test_schema_check_detects_staleness(capsys, tmp_path):
    assert main(["schema", "--check", "--out", str(REPO / "schemas" / "spec.schema.json")]) == 0
    stale = tmp_path / "schema.json"
    stale.write_text("{}")
    assert "is stale; regenerate it with: genframe schema --out" in _one_line_error(
        capsys, ["schema", "--check", "--out", str(stale)])


def test_reference_doc_is_current(capsys):
    assert main(["reference", "--check", "--out", str(REPO / "docs" / "reference.md")]) == 0


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "genframe", "validate", str(SPECS / "quickstart.yaml")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "quickstart.yaml: ok" in done.stdout
