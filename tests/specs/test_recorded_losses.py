"""Every shipped spec, shrunk, trains exactly as it did when its losses were recorded.

A refactor of the core or the plugins must not change what a spec trains: the first logged
losses of each shipped spec (on scikit-learn's digits at 16 px, narrow networks, a few steps)
are kept in ``recorded_losses.json`` and compared here. Re-record only for a deliberate change
of behaviour, and say so in the commit: ``python -m tests.specs.test_recorded_losses``.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path

import attrs
import pytest
import yaml

from genframe.api import train
from genframe.components.registry import get_registry

from ..conftest import SPECS
from ..genframe.tiny_specs import assert_same_losses, losses

RECORDED = Path(__file__).with_name("recorded_losses.json")
SHIPPED = sorted(p.stem for p in SPECS.glob("*.yaml"))


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
    """Overrides that make a shipped spec train in a second: 64 digits at 16 px, widths of 4, a few steps."""
    spec = yaml.safe_load((SPECS / f"{name}.yaml").read_text())
    registry = get_registry()
    overrides = ["data={type: digits, image_size: 16, limit: 64}", "evaluation={n_samples: 4}", "log_every=1",
                 "device=cpu"]
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


def record(name: str, out: Path) -> list[dict]:
    finished = train(str(SPECS / f"{name}.yaml"), out=str(out), device="cpu", overrides=shrink(name))
    return losses(Path(finished.url))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_trains_as_recorded(name, tmp_path):
    expected = json.loads(RECORDED.read_text())
    assert name in expected, f"no losses recorded for specs/{name}.yaml: run python -m tests.specs.test_recorded_losses"
    assert_same_losses(expected[name], record(name, tmp_path / "run"))


def main(names: list[str]) -> None:
    import tempfile

    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or SHIPPED:
            recorded[name] = record(name, Path(tmp) / name)
            print(name, len(recorded[name]), "records")
    RECORDED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
