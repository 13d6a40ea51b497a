"""sweep_details.py: the other metrics, steps within the budget and the search spread, from a sweep's records."""

from __future__ import annotations

import importlib.util
import json

import pytest

from genframe.storage import RunStorage

from ..conftest import REPO


@pytest.fixture
def module():
    spec = importlib.util.spec_from_file_location("sweep_details", REPO / "benchmarks" / "sweep_details.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _record(tmp_path) -> str:
    """One model, two search settings (fid 30 and 50), two final seeds (fid 20 and 24, is 7 and 9) whose
    logs end their one stage by its 90 s budget at steps 100 and 120."""
    out = RunStorage(str(tmp_path / "sweep"))
    trials = [{"index": 0, "model": "m", "phase": "search", "setting": 0, "seed": 0, "path": "m/search-0000-seed0"},
              {"index": 1, "model": "m", "phase": "search", "setting": 1, "seed": 0, "path": "m/search-0001-seed0"},
              {"index": 2, "model": "m", "phase": "final", "setting": 0, "seed": 1, "path": "m/final-seed1"},
              {"index": 3, "model": "m", "phase": "final", "setting": 0, "seed": 2, "path": "m/final-seed2"}]
    out.write_json("sweep.json", {"source": "s.yaml", "seed": 0, "label": "digits", "metric": "fid", "mode": "min",
                                  "budget": 2, "seeds": [0], "final_seeds": [1, 2], "trials": trials,
                                  "models": [{"name": "m", "label": "M", "spec": "m.yaml", "search": {}}]})
    readings = [(30.0, None, None), (50.0, None, None), (20.0, 7.0, 100), (24.0, 9.0, 120)]
    for t, (fid, score, steps) in zip(trials, readings):
        run = RunStorage(f"{out.url}/{t['path']}")
        results = {"fid": fid, "fid_floor": 2.0, **({"is": score, "is_std": 0.0} if score else {})}
        run.write_json("result.json", {**t, "status": "ok", "value": fid, "results": results, "params": {},
                                       "metrics": [], "error": None})
        log = [{"stage": "train", "step": 10, "loss": 1.0}]
        if steps:
            log.append({"stage": "train", "step": steps, "event": "budget", "seconds": 90.0 + steps / 20,
                        "budget": 90, "planned_steps": 1000})
        run.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in log))
    return out.url


def test_details_are_read_from_the_records(module, tmp_path):
    row = module.details(_record(tmp_path))["models"]["m"]
    assert row["mean"] == pytest.approx(22.0) and row["over_floor"] == pytest.approx(11.0)
    assert row["other_metrics"]["is"]["mean"] == pytest.approx(8.0)
    assert row["other_metrics"]["is"]["std"] == pytest.approx(2 ** 0.5)
    assert "is_std" not in row["other_metrics"]  # a metric's spread over its splits is not a seed spread
    assert row["stages"] == {"train": {"budget": 90, "steps": [100, 120], "seconds": [95.0, 96.0]}}
    assert row["search"] == {"settings": 2, "best": 30.0, "median": 40.0, "worst": 50.0}
    assert row["best_run"] == "m/final-seed1"


def test_markdown_row(module, tmp_path):
    text = module.markdown(module.details(_record(tmp_path)))
    assert "| M | 22 ± 2.8 (11x) | 2 ± 0 | 8 ± 1.4 | train 100-120 | 96.0 / 90 | 30 / 40 / 50 |" in text
