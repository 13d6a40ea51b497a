"""Every shipped spec, shrunk, trains as it did when its losses were recorded, on any machine of the kind.

A refactor of the core or the plugins must not change what a spec trains: the first logged
losses of each shipped spec (on scikit-learn's digits at 16 px, narrow networks, a few steps)
are kept in ``recorded_losses.json`` and compared here.

They are recorded and compared in float64 (``precision: fp64``). In float32, rounding differences
between processors, BLAS code paths and thread counts (about 1e-7) are amplified past any useful
tolerance within four steps: GLO's L1 gradients change sign, IMLE pairs a code with other noise,
a Gaussian fitted to near-singular codes changes its log-determinant (measured: 9e-2 relative on
GLANN's mapper loss). In float64 the same differences stay below 3e-7 relative for every spec.

Each value's tolerance is ``MARGIN`` times the largest deviation measured for it across
``VARIANTS`` (thread counts, torch's deterministic algorithms, MKL and ATen instruction sets, each
in a fresh process), and never below ``FLOOR``. The teeth tests below show that this still fails
a 1% change of a loss weight or a learning rate and a changed divergence formula.

Re-record only for a deliberate change of behaviour, and say so in the commit (it takes a few
minutes: every variant trains every spec): ``python -m tests.specs.test_recorded_losses [NAME...]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F
import yaml

from genframe.api import train
from genframe.components.registry import get_registry
from genframe_plugins.objectives.divergences import NonSaturating

from ..conftest import REPO, SPECS
from ..genframe.tiny_specs import losses

RECORDED = Path(__file__).with_name("recorded_losses.json")
SHIPPED = sorted(p.stem for p in SPECS.glob("*.yaml"))

#: The machine-level noise is measured in these settings: each is one fresh process, as another
#: machine of the kind would run the test (ATen's and MKL's instruction sets stand in for other
#: processors; SSE4.2 with 2 threads is the farthest from this one's default path).
VARIANTS = {
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2"},
    "deterministic algorithms": {"OMP_NUM_THREADS": "1", "GENFRAME_TEST_DETERMINISTIC": "1"},
    "AVX2 (ATen and MKL)": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2",
                            "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "AVX (MKL)": {"OMP_NUM_THREADS": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX"},
    "SSE4.2 (ATen, MKL, oneDNN), 2 threads": {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default",
                                              "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
REFERENCE_VARIANT = "1 thread"  # whose losses are recorded
MARGIN = 100.0  # tolerance = MARGIN x the largest deviation measured across VARIANTS ...
FLOOR = 1e-10   # ... and never tighter than this (float64 specs that measured bit-identical)

NARROW = {"width": 4, "hidden": 16}  # the sizes that set a network's cost


def _whole_number(hint) -> bool:
    return hint is int or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                           and set(typing.get_args(hint)) == {int, type(None)})


def _narrowing(path: str, component: dict, cls: type, registry) -> list[str]:
    """``path.width=4`` (and hidden=16) for every network under ``path`` (nested ones included);
    sizes given as lists (an MLP's hidden layers) are left as they are."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in attrs.fields(cls)}
    found = [f"{path}.{name}={size}" for name, size in NARROW.items() if name in fields and _whole_number(hints[name])]
    for key, value in component.items():
        if isinstance(value, dict) and "type" in value and key in fields:
            role = next(r for r in typing.get_args(hints[key]) or (hints[key],) if hasattr(r, "role")).role
            found += _narrowing(f"{path}.{key}", value, registry.get(role, value["type"]), registry)
    return found


def _named_class(name: str, registry) -> type:
    return next(info.cls for info in registry.all()
                if info.name == name and info.role in ("generator", "critic", "encoder", "latent_mapper", "prior"))


def shrink(name: str) -> list[str]:
    """Overrides that make a shipped spec train in a second, in float64: 64 digits at 16 px, widths of 4,
    a few steps."""
    spec = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    registry = get_registry()
    overrides = ["data={type: digits, image_size: 16, limit: 64}", "evaluation={n_samples: 4}", "log_every=1",
                 "device=cpu", "precision=fp64"]
    for key, component in spec["components"].items():
        overrides += _narrowing(f"components.{key}", component, _named_class(component["type"], registry), registry)
    for index, stage in enumerate(spec["stages"]):
        trainer = stage["trainer"]
        if "batch_size" in trainer:
            overrides.append(f"stages.{index}.trainer.batch_size=16")
        if "steps" in trainer:
            overrides.append(f"stages.{index}.trainer.steps=3")
        elif "epochs" in trainer:
            overrides.append(f"stages.{index}.trainer.epochs=1")
    return overrides


def record(name: str, out: Path, extra: list[str] = ()) -> list[dict]:
    finished = train(str(SPECS / f"{name}.yaml"), out=str(out), device="cpu", overrides=[*shrink(name), *extra])
    return losses(Path(finished.url))


def _key(record: dict, key: str) -> str:
    return f"{record['stage']}.{key}"


def deviation(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude; 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0


def tolerances(entry: dict) -> dict[str, float]:
    return {key: max(MARGIN * spread, FLOOR) for key, spread in entry["spread"].items()}


def assert_as_recorded(entry: dict, got: list[dict]) -> None:
    """``got`` has the recorded (stage, step)s and keys, and every value is within its tolerance."""
    expected, allowed = entry["losses"], tolerances(entry)
    assert [(r["stage"], r["step"]) for r in got] == [(r["stage"], r["step"]) for r in expected]
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for key in want.keys() - {"stage", "step"}:
            off = deviation(want[key], have[key])
            assert off <= allowed[_key(want, key)], (
                f"{want['stage']} step {want['step']} {key}: {have[key]!r}, recorded {want[key]!r} "
                f"(relative deviation {off:.2e}, allowed {allowed[_key(want, key)]:.1e})")


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The check must hold at either thread count of the project's machines (torch's intra-op pool)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_trains_as_recorded(name, threads, recorded, tmp_path):
    assert name in recorded["specs"], f"no losses recorded for specs/{name}.yaml: run python -m {__spec__.name}"
    assert_as_recorded(recorded["specs"][name], record(name, tmp_path / "run"))


# The check's teeth: deliberate changes of behaviour fail it, an equivalent formula does not.

def _spec_value(name: str, path: str):
    value = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


@pytest.mark.parametrize("name, path", [("wgan_gp", "stages.0.trainer.constraints.0.weight"),
                                        ("vae", "stages.0.trainer.latent_divergence.weight")])
def test_a_loss_weight_one_percent_off_fails_the_check(name, path, recorded, tmp_path):
    changed = record(name, tmp_path / "run", [f"{path}={_spec_value(name, path) * 1.01!r}"])
    with pytest.raises(AssertionError, match="relative deviation"):
        assert_as_recorded(recorded["specs"][name], changed)


def test_a_learning_rate_one_percent_off_fails_the_check(recorded, tmp_path):
    """GLANN's values have the widest tolerances of all (its GLO codes start from an eigendecomposition)."""
    path = "stages.0.trainer.optimizer.lr"
    changed = record("glann", tmp_path / "run", [f"{path}={_spec_value('glann', path) * 1.01!r}"])
    with pytest.raises(AssertionError, match="relative deviation"):
        assert_as_recorded(recorded["specs"]["glann"], changed)


def test_a_changed_divergence_formula_fails_the_check(recorded, tmp_path, monkeypatch):
    """The non-saturating generator loss written as the saturating (minimax) one, -log(1 - D(G(z))):
    the slip the GAN paper warns about, and the two are easy to confuse in code."""
    monkeypatch.setattr(NonSaturating, "generator_loss",
                        lambda self, real_scores, fake_scores: -F.softplus(fake_scores).mean())
    with pytest.raises(AssertionError, match="relative deviation"):
        assert_as_recorded(recorded["specs"]["nsgan"], record("nsgan", tmp_path / "run"))


def test_an_equivalent_divergence_formula_passes_the_check(recorded, tmp_path, monkeypatch):
    """softplus(-x) written as -log sigmoid(x): the same function, rounded differently, is no change."""
    monkeypatch.setattr(NonSaturating, "generator_loss", lambda self, real_scores, fake_scores: -F.logsigmoid(fake_scores).mean())
    assert_as_recorded(recorded["specs"]["nsgan"], record("nsgan", tmp_path / "run"))


# Recording: python -m tests.specs.test_recorded_losses [NAME...]

def _record_in_subprocess(names: list[str], env: dict[str, str], out: Path) -> dict:
    """The losses of ``names`` from a fresh process with ``env`` set (thread counts and instruction
    sets are fixed when torch starts)."""
    done = subprocess.run([sys.executable, "-m", __spec__.name, "--dump", str(out), *names], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"recording with {env} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def _dump(out: Path, names: list[str]) -> None:
    if os.environ.get("GENFRAME_TEST_DETERMINISTIC"):
        torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory() as tmp:
        out.write_text(json.dumps({name: record(name, Path(tmp) / name) for name in names}))


def main(names: list[str]) -> None:
    names = names or SHIPPED
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    specs = recorded.get("specs", {})
    with tempfile.TemporaryDirectory() as tmp:
        runs = {variant: _record_in_subprocess(names, env, Path(tmp) / f"{index}.json")
                for index, (variant, env) in enumerate(VARIANTS.items())}
    for name in names:
        reference, spread = runs[REFERENCE_VARIANT][name], {}
        for variant, run in runs.items():
            assert [(r["stage"], r["step"]) for r in run[name]] == [(r["stage"], r["step"]) for r in reference]
            for want, have in zip(reference, run[name]):
                for key in want.keys() - {"stage", "step"}:
                    spread[_key(want, key)] = max(spread.get(_key(want, key), 0.0), deviation(want[key], have[key]))
        specs[name] = {"losses": reference, "spread": dict(sorted(spread.items()))}
        print(f"{name}: {len(reference)} records, largest deviation {max(spread.values(), default=0.0):.1e}")
    recorded = {"precision": "fp64", "reference": REFERENCE_VARIANT, "variants": VARIANTS,
                "torch": torch.__version__, "specs": dict(sorted(specs.items()))}
    RECORDED.write_text(json.dumps(recorded, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--dump"]:
        _dump(Path(sys.argv[2]), sys.argv[3:])
    else:
        main(sys.argv[1:])
