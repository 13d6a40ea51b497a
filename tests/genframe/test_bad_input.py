"""Bad input is one line naming the file and the field, never a traceback, and never costs work.

One test per class of bad input: YAML resource bombs, non-finite numbers, duplicate keys, damaged
data files and empty data sets, damaged run-folder metadata, counts below one, and folders a
run did not create.
"""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest

from genframe.cli import main

from ..plugins.data.test_data import write_split


def one_line_error(capsys, argv: list[str], code: int = 1) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genframe: error: "), err
    return err[0][len("genframe: error: "):]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from genframe.api import train

    from ..conftest import TINY

    folder = tmp_path_factory.mktemp("finished")
    (folder / "spec.yaml").write_text(json.dumps(TINY))
    train(str(folder / "spec.yaml"), out=str(folder / "run"))
    return folder / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(finished_run, tmp_path / "run"))


# --------------------------------------------------------------------------- YAML


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n" for prev, name in zip("abcdefghi", "bcdefghij"))


@pytest.mark.parametrize("text, problem", [
    (BILLION_LAUGHS, "aliases expand to more than"),
    ("name: " + "[" * 10_000 + "]" * 10_000, "nested deeper than"),
    ("name: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(2000)), "nested deeper than"),
    ("name: x\ndata: " + "y" * (5 * 1024 * 1024) + "\n", "at most"),
], ids=["billion-laughs", "deep-flow", "deep-block", "huge"])
def test_yaml_resource_bombs_are_refused(text, problem, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    message = one_line_error(capsys, ["validate", str(path)])
    assert message.startswith(str(path)) and problem in message


def test_a_key_given_twice_names_both_lines(tmp_path, capsys, tiny_spec):
    import yaml

    text = yaml.safe_dump(tiny_spec, sort_keys=False)
    lines = text.splitlines()
    where = lines.index("components:")
    lines.insert(where + 1, "  generator: {type: dcgan_generator, latent_dim: 8}")  # a second 'generator'
    path = tmp_path / "dup.yaml"
    path.write_text("\n".join(lines) + "\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("  generator:") and i != where + 1)
    message = one_line_error(capsys, ["validate", str(path)])
    assert f"duplicate key 'generator' (lines {where + 2} and {first + 1})" in message


def test_a_whole_number_field_refuses_a_decimal(write_spec, tiny_spec, capsys):
    # JSON Schema counts 1.0 as an integer; a layer width of 1.0 would then reach torch as a float
    message = one_line_error(capsys, ["validate", write_spec(tiny_spec), "--set", "components.generator.width=8.0"])
    assert message.endswith("components.generator.width: found 8.0 (number), expected integer")


@pytest.mark.parametrize("override, field", [
    ("stages.0.trainer.optimizer={type: adam, lr: .inf}", "stages[0].trainer.optimizer.lr"),
    ("stages.0.trainer.epochs=.nan", "stages[0].trainer.epochs"),
    ("components.generator.width=-.inf", "components.generator.width"),
])
def test_non_finite_numbers_are_refused(override, field, write_spec, tiny_spec, capsys):
    path = write_spec(tiny_spec)
    message = one_line_error(capsys, ["validate", path, "--set", override])
    assert message.startswith(f"{path}: {field}: found ") and "only finite numbers" in message


# --------------------------------------------------------------------------- data files


def mnist_folder(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    write_split(fsspec.filesystem("file"), str(root), "test", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, count, dtype=np.uint8), gz=True)
    return root


@pytest.mark.parametrize("cut", [0.5, 0.99, 0.0], ids=["half", "last-bytes", "empty"])
def test_a_damaged_gzip_data_file_is_named(cut, tmp_path, write_spec, tiny_spec, capsys):
    root = mnist_folder(tmp_path / "mnist", 32)
    images = root / "t10k-images-idx3-ubyte.gz"
    packed = images.read_bytes()
    images.write_bytes(packed[: max(2, int(len(packed) * cut))])  # cut short, gzip's magic kept
    tiny_spec["data"] = {"type": "mnist", "root": str(root), "image_size": 8}
    message = one_line_error(capsys, ["run", write_spec(tiny_spec), "--out", str(tmp_path / "run")])
    assert f"{images}: damaged gzip file" in message
    assert not (tmp_path / "run" / "spec.yaml").exists()


def test_a_data_set_without_images_is_named(tmp_path, write_spec, tiny_spec, capsys):
    root = mnist_folder(tmp_path / "mnist", 0)
    tiny_spec["data"] = {"type": "mnist", "root": str(root), "image_size": 8}
    message = one_line_error(capsys, ["run", write_spec(tiny_spec), "--out", str(tmp_path / "run")])
    assert message.startswith("data: mnist found no images") and str(root) in message


# --------------------------------------------------------------------------- run folders


@pytest.mark.parametrize("damage, named", [
    (lambda run: (run / "run.json").write_text("{not json"), "run.json: damaged run metadata: not JSON"),
    (lambda run: (run / "run.json").write_text('{"data_shape": {"channels": "one"}}'), "run.json: damaged run"),
    (lambda run: (run / "checkpoints" / "index.json").write_text('{"checkpoints": {"file": 3}}'),
     "index.json: damaged run metadata: checkpoints"),
    (lambda run: (run / "spec.yaml").write_text("- a list\n- not a spec\n"), "spec.yaml: a spec is a mapping of fields"),
    (lambda run: (run / "run.json").unlink(), "not a complete run folder"),
], ids=["run-json", "run-json-shape", "index-shape", "spec", "no-run-json"])
@pytest.mark.parametrize("command", ["sample", "resume", "report", "eval"])
def test_damaged_run_metadata_is_named_and_nothing_is_written(damage, named, command, run_copy, tmp_path, capsys):
    damage(run_copy)
    before = snapshot(run_copy)
    argv = {"sample": ["sample", str(run_copy), "--n", "2", "--out", str(tmp_path / "s.npz")],
            "resume": ["run", "--resume", str(run_copy)],
            "report": ["report", str(run_copy), "--out", str(tmp_path / "r.html")],
            "eval": ["eval", str(run_copy), "--metrics", "fid"]}[command]
    message = one_line_error(capsys, argv)
    assert named in message, message
    assert snapshot(run_copy) == before


def test_an_unreadable_log_line_is_skipped_with_a_warning(run_copy, capsys):
    from genframe.storage import RunStorage

    log = run_copy / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], '{"stage": "glo", "ste', *lines[1:]]) + "\n")
    assert len(RunStorage.open(str(run_copy)).read_log()) == len(lines)
    assert "skipped damaged line(s) 2" in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["sample", "RUN", "--n", "0", "--out", "x.npz"], "argument --n: 0 is below 1"),
    (["sample", "RUN", "--n", "-3", "--out", "x.npz"], "argument --n: -3 is below 1"),
    (["sample", "RUN", "--seed", "-1", "--out", "x.npz"], "argument --seed: -1 is below 0"),
    (["interpolate", "RUN", "--pairs", "0", "--out", "x.png"], "argument --pairs: 0 is below 1"),
    (["reconstruct", "RUN", "--images", "x.npz", "--iterations", "0", "--out", "o"], "--iterations: 0 is below 1"),
    (["reconstruct", "RUN", "--images", "x.npz", "--lr", "inf", "--out", "o"], "--lr: inf is not finite"),
    (["restore", "RUN", "--images", "x.npz", "--noise", "0", "--out", "o"], "--noise: 0 is not > 0"),
    (["eval", "RUN", "--n", "1"], "argument --n: 1 is below 2"),
    (["sweep", "s.yaml", "--trial", "-1"], "argument --trial: -1 is below 0"),
])
def test_counts_below_their_minimum_are_refused_when_parsed(argv, named, finished_run, capsys):
    argv = [str(finished_run) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genframe: error: genframe {argv[0]}: ") and named in err[0], err


@pytest.mark.parametrize("contents", [
    {"holiday.jpg": b"\xff\xd8 my own photo"},
    {"checkpoints/00-000000004.pt": b"an older run's weights", "metrics.jsonl": b'{"stage": "glo"}\n'},
], ids=["user-files", "run-without-spec"])
def test_a_run_never_writes_into_a_folder_it_did_not_create(contents, tmp_path, write_spec, tiny_spec, capsys):
    out = tmp_path / "out"
    for rel, data in contents.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    before = snapshot(out)
    message = one_line_error(capsys, ["run", write_spec(tiny_spec), "--out", str(out)])
    assert message.startswith(f"{out}: the folder holds files and is not a genframe run")
    assert snapshot(out) == before


def test_an_empty_folder_may_hold_a_new_run(tmp_path, write_spec, tiny_spec):
    out = tmp_path / "empty"
    out.mkdir()
    tiny_spec["stages"] = tiny_spec["stages"][:1]
    tiny_spec["stages"][0]["trainer"]["epochs"] = 1
    assert main(["run", write_spec(tiny_spec), "--out", str(out)]) == 0
    assert (out / "spec.yaml").exists() and (out / "run.json").exists()


# --------------------------------------------------------------------------- parts that do not fit, sizes


@pytest.mark.parametrize("spec, override, named", [
    ("glann.yaml", "components.mapper.out_dim=32", "components.generator.latent_dim: 'mapper' makes 32-d vectors"),
    ("glann.yaml", "components.noise.dim=16", "components.mapper.in_dim: 'noise' makes 16-d vectors"),
    ("wgan_gp.yaml", "components.prior.dim=12", "components.generator.latent_dim: 'prior' makes 12-d vectors"),
    ("glo.yaml", "components.codes.dim=32", "components.generator.latent_dim: encoder 'codes' makes 32-d codes"),
    ("glann.yaml", "components.generator.channels=3", "produces images of shape (3, 28, 28)"),
    # checked once the flow generator has taken the data's shape (784 = 1 x 28 x 28)
    ("flow_matching.yaml", "components.noise.dim=100", "components.generator.latent_dim: 'noise' makes 100-d "
                                                       "vectors (components.noise.dim) but 'generator' takes 784-d"),
    ("glann.yaml", "components.spare={type: gaussian}", "components.spare.dim: 'spare' does not start the sampler "
                                                        "chain, so nothing gives it a size; set its dim"),
], ids=["mapper-out", "noise-in", "prior-generator", "codes-generator", "image-channels", "data-shaped-noise",
        "unsized-prior"])
def test_validate_refuses_parts_that_do_not_fit(spec, override, named, capsys):
    from ..conftest import SPECS

    message = one_line_error(capsys, ["validate", str(SPECS / spec), "--set", override])
    assert message.startswith(str(SPECS / spec)) and named in message, message


@pytest.mark.parametrize("override", ["components.generator.width=200000", "data.image_size=3584"])
def test_sizes_that_cannot_be_allocated_are_refused_with_the_estimate(override, tmp_path, capsys):
    from ..conftest import SPECS

    out = tmp_path / "run"
    for argv in (["validate", str(SPECS / "glann.yaml"), "--device", "cpu"],
                 ["run", str(SPECS / "glann.yaml"), "--device", "cpu", "--out", str(out)]):
        message = one_line_error(capsys, [*argv, "--set", override])
        assert "training needs about" in message and "free; lower" in message, message
    assert not out.exists()


def test_validate_reports_what_training_needs(capsys):
    from ..conftest import SPECS

    assert main(["validate", str(SPECS / "quickstart.yaml")]) == 0
    assert "ok (training needs about" in capsys.readouterr().out
