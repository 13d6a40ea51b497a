"""Property tests: whatever a spec, a data file or a run folder holds, genframe either succeeds or
says what is wrong in one line naming the file or field. Never a traceback, and no file of an
existing run changes when a command refuses it.

CI runs the derandomised ``ci`` profile; ``--hypothesis-profile=fuzz`` searches much longer.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from genframe.cli import main
from genframe.components.registry import get_registry

from ..conftest import SPECS, TINY
from ..plugins.data.test_data import write_split

SHIPPED = sorted(SPECS.glob("*.yaml"))
SHIPPED_TEXT = {path.name: path.read_text() for path in SHIPPED}  # read once: strategies see no outside state
TYPE_NAMES = tuple(sorted({info.name for info in get_registry().all()}))  # component types of every role


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    """(exit status, stderr lines) of one command, run in this process; an exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, [line for line in err.getvalue().splitlines() if not line.startswith("genframe: warning:")]


def assert_clean_outcome(code: int, err: list[str], names: tuple[str, ...]) -> None:
    """Success, or exactly one `genframe: error:` line that names one of ``names`` (a file or a field)."""
    if code == 0:
        return
    errors = [line for line in err if line.startswith("genframe: error: ")]
    assert code in (1, 2) and len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    assert any(name in errors[0] for name in names), (errors[0], names)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- specs


def _paths(node, prefix=()) -> list[tuple]:
    """Every path into a spec: mapping keys and list positions."""
    found = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found += _paths(value, (*prefix, key))
    return found


def _parent(spec, path):
    node = spec
    for key in path[:-1]:
        node = node[key]
    return node


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, -1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(-3, 300), max_size=3), st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
    st.sampled_from(TYPE_NAMES),
)


@st.composite
def mutated_specs(draw):
    name = draw(st.sampled_from(sorted(SHIPPED_TEXT)))
    spec = yaml.safe_load(SHIPPED_TEXT[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(spec)
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent, key = _parent(spec, where), where[-1]
        action = draw(st.sampled_from(["drop", "rename", "retype", "retype", "swap_type"]))
        if action == "drop":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(key)
        elif action == "swap_type" and isinstance(parent, dict) and "type" in parent:
            parent["type"] = draw(st.sampled_from(TYPE_NAMES))
        else:
            parent[key] = draw(VALUES)
    return name, spec


@given(case=mutated_specs())
def test_mutated_specs_validate_or_fail_in_one_line(case):
    name, spec = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
        code, err = run_cli(["validate", str(path), "--device", "cpu"])
        assert_clean_outcome(code, err, (str(path),))


@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_as_a_spec_fails_in_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(text, encoding="utf-8", errors="replace")
        code, err = run_cli(["validate", str(path)])
        assert_clean_outcome(code, err, (str(path),))


# --------------------------------------------------------------------------- data files


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory) -> Path:
    import fsspec

    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    write_split(fsspec.filesystem("file"), str(root), "test", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, 40, dtype=np.uint8), gz=True)
    return root


DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("random"), st.binary(max_size=64)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=8)),
)


def damage(path: Path, how) -> None:
    data = path.read_bytes()
    kind, arg = how
    if kind == "truncate":
        path.write_bytes(data[: int(len(data) * arg)])
    elif kind == "random":
        path.write_bytes(arg)
    else:
        buffer = bytearray(data)
        for where, xor in arg:
            if buffer:
                buffer[min(len(buffer) - 1, int(len(buffer) * where))] ^= xor
        path.write_bytes(bytes(buffer))


@given(which=st.sampled_from(["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]), how=DAMAGE)
def test_damaged_data_files_fail_in_one_line(mnist_files, which, how):
    spec = copy.deepcopy(TINY)
    spec["stages"] = spec["stages"][:1]
    spec["stages"][0]["trainer"]["epochs"] = 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(shutil.copytree(mnist_files, Path(tmp) / "mnist"))
        damage(root / which, how)
        spec["data"] = {"type": "mnist", "root": str(root), "image_size": 8}
        (Path(tmp) / "spec.yaml").write_text(json.dumps(spec))
        code, err = run_cli(["run", str(Path(tmp) / "spec.yaml"), "--out", str(Path(tmp) / "run")])
        assert_clean_outcome(code, err, (which, str(root)))


# --------------------------------------------------------------------------- run folders


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from genframe.api import train

    folder = tmp_path_factory.mktemp("fuzzed-run")
    spec = copy.deepcopy(TINY)
    spec["checkpoint_every"] = 3
    (folder / "spec.yaml").write_text(json.dumps(spec))
    train(str(folder / "spec.yaml"), out=str(folder / "run"))
    return folder / "run"


RUN_FILES = ["spec.yaml", "run.json", "checkpoints/index.json", "metrics.jsonl", "LAST_CHECKPOINT"]
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)


@given(which=st.sampled_from(RUN_FILES), how=st.one_of(DAMAGE, st.tuples(st.just("json"), JSON_VALUES)),
       command=st.sampled_from(["sample", "report", "resume"]))
def test_damaged_run_folders_fail_in_one_line_and_keep_their_files(finished_run, which, how, command):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(finished_run, Path(tmp) / "run"))
        if which == "LAST_CHECKPOINT":
            which = json.loads((run / "checkpoints" / "index.json").read_text())["checkpoints"][-1]["file"]
        target = run / which
        if how[0] == "json":
            target.write_text(json.dumps(how[1]))
        else:
            damage(target, how)
        before = snapshot(run)
        argv = {"sample": ["sample", str(run), "--n", "2", "--out", str(Path(tmp) / "s.npz")],
                "report": ["report", str(run), "--out", str(Path(tmp) / "r.html")],
                "resume": ["run", "--resume", str(run)]}[command]
        code, err = run_cli(argv)
        assert_clean_outcome(code, err, (str(run),))
        if code != 0 or command != "resume":
            assert snapshot(run) == before


def test_the_profiles_are_registered():
    from hypothesis import settings

    assert settings.get_profile("ci").derandomize and settings.get_profile("fuzz").max_examples > 1000
    assert math.isfinite(settings.get_profile("ci").max_examples)
