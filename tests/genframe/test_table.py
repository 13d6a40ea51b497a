"""A tiny sweep runs to a table whose numbers are recomputed here by hand from the runs' own logs."""

from __future__ import annotations

import csv
import io
import math

import pytest
import yaml
from PIL import Image

from genframe.cli import main
from genframe.storage import RunStorage
from genframe.sweep.plan import load_sweep
from genframe.sweep.run import run_sweep

from .sweep_helpers import SEARCH, Counter, registry_with, run_test_sweep, write_sweep

SWEEP = """
seed: 7
label: digits-32
models:
  - ../specs/a.yaml                # a plain path: the model is named after the file
  - {name: b, label: Narrow, spec: ../specs/b.yaml}
""" + SEARCH + """
budget: 2
seeds: 2
select: {metric: brightness, mode: max}
final: {seeds: 2}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    sweep, out, counter, _, _ = run_test_sweep(tmp_path_factory.mktemp("table"), SWEEP, "b/search-0001-seed1")
    return sweep, out, counter


def _logged(out: str, trial_path: str) -> float:
    """The metric as the run itself logged it: the last evaluation record of its metrics.jsonl."""
    records = [r for r in RunStorage.open(f"{out}/{trial_path}").read_log() if r.get("event") == "evaluation"]
    return records[-1]["brightness"]


def _hand_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_the_sweep_ran_every_trial_and_recorded_the_failure(finished):
    sweep, out, counter = finished
    assert len(counter.started) == 2 * 2 * 2 + 2 * 2
    failed = RunStorage(f"{out}/b/search-0001-seed1").read_json("result.json")
    assert failed["status"] == "failed" and failed["value"] is None
    assert failed["error"] == "RuntimeError: simulated failure"  # one line
    assert "Traceback" in (RunStorage(f"{out}/b/search-0001-seed1").read_bytes("error.txt").decode())
    ok = [t for t in sweep.trials() if t.path != "b/search-0001-seed1"]
    assert all(RunStorage(f"{out}/{t.path}").read_json("result.json")["status"] == "ok" for t in ok)


def test_table_numbers_match_a_hand_computation(finished, capsys):
    sweep, out, _ = finished
    assert main(["table", out]) == 0
    printed = capsys.readouterr().out
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO((open(f"{out}/table.csv").read())))}
    for name, failed_setting in (("a", None), ("b", 1)):
        # selection by hand: mean over the two search seeds; a setting with a failed seed is out
        scores = {j: (_logged(out, f"{name}/search-{j:04d}-seed0") + _logged(out, f"{name}/search-{j:04d}-seed1")) / 2
                  for j in range(2) if j != failed_setting}
        best = max(scores, key=scores.get)
        finals = [_logged(out, f"{name}/final-seed{s}") for s in (2, 3)]
        mean, std = sum(finals) / 2, _hand_std(finals)
        row = rows[name]
        assert int(row["best_setting"]) == best
        assert float(row["mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(row["std"]) == pytest.approx(std, rel=1e-12)
        assert (row["seeds_ok"], row["settings_ok"], row["settings_failed"]) == \
            ("2", str(len(scores)), "1" if failed_setting is not None else "0")
        chosen = sweep.setting(sweep.model(name), best)
        assert float(row["stages.0.trainer.optimizer.lr"]) == chosen["stages.0.trainer.optimizer.lr"]
        # the final re-runs trained exactly that setting
        spec = RunStorage.open(f"{out}/{name}/final-seed2").read_spec()
        assert spec["stages"][0]["trainer"]["optimizer"]["lr"] == chosen["stages.0.trainer.optimizer.lr"]
        assert spec["seed"] == 2
        label = "a" if name == "a" else "Narrow"
        assert f"| {label} | {mean:.4g} ± {std:.2g} | 2/2 |" in printed
        assert f"lr={chosen['stages.0.trainer.optimizer.lr']:.3g}" in printed
    assert "| Model | digits-32 |" in printed and "- Narrow: RuntimeError: simulated failure\n" in printed
    assert "brightness_test(n=8)" in printed and "seeds 0, 1" in printed and "seeds 2, 3" in printed


def test_budget_curve_is_the_expected_best_of_random_subsets(finished):
    sweep, out, _ = finished
    curve = {int(r["budget"]): float(r["expected_best"])
             for r in csv.DictReader(open(f"{out}/budget.csv")) if r["model"] == "a"}
    scores = [(_logged(out, f"a/search-{j:04d}-seed0") + _logged(out, f"a/search-{j:04d}-seed1")) / 2
              for j in range(2)]
    # one setting at random: the average score; both: the best one
    assert curve == pytest.approx({1: sum(scores) / 2, 2: max(scores)}, rel=1e-12)
    assert [int(r["budget"]) for r in csv.DictReader(open(f"{out}/budget.csv")) if r["model"] == "b"] == [1]
    with Image.open(f"{out}/budget.png") as image:
        assert image.size[0] > 300 and image.getextrema()[0][0] < 100  # drawn on, not blank


def test_table_of_a_partial_sweep_shows_what_is_pending(tmp_path, capsys):
    counter = Counter()
    registry = registry_with(counter)
    path = write_sweep(tmp_path, SWEEP)
    sweep = load_sweep(path, registry=registry)
    out = str(tmp_path / "out")
    run_sweep(sweep, out, trial=0, registry=registry)
    assert main(["table", out, "--out", str(tmp_path / "elsewhere")]) == 0
    printed = capsys.readouterr().out
    assert "| a | pending | 0/2 | 0 / 0 / 2 |" in printed and "| Narrow | pending | 0/2 | 0 / 0 / 2 |" in printed
    assert (tmp_path / "elsewhere" / "table.csv").exists() and not (tmp_path / "out" / "table.csv").exists()
    assert yaml.safe_load(RunStorage(out).read_bytes("sweep.json"))["budget"] == 2


def test_table_of_a_folder_that_is_no_sweep_is_one_line(tmp_path, capsys):
    assert main(["table", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (f"genframe: error: {tmp_path}: not a sweep folder (no sweep.json); "
                                               f"run genframe sweep SWEEP.yaml --out {tmp_path}")


def test_several_sweeps_make_one_table_with_a_column_per_data_set(finished, tmp_path_factory, capsys):
    _, first, _ = finished
    _, second, _, _, _ = run_test_sweep(tmp_path_factory.mktemp("second"),
                                        SWEEP.replace("label: digits-32", "label: digits-16"), "a/search-0000-seed0")
    own = {}
    for out in (first, second):
        assert main(["table", out]) == 0
        own[out] = {r["label"]: r for r in csv.DictReader(open(f"{out}/table.csv"))}
    capsys.readouterr()
    combined = tmp_path_factory.mktemp("combined")
    assert main(["table", first, second, "--out", str(combined)]) == 0
    printed = capsys.readouterr().out
    assert "| Model | digits-32 | digits-16 |" in printed
    for label in ("a", "Narrow"):
        cells = [f"{float(own[out][label]['mean']):.4g} ± {float(own[out][label]['std']):.2g}" for out in (first, second)]
        assert f"| {label} | {cells[0]} | {cells[1]} |" in printed
    assert "## brightness on digits-32" in printed and "## brightness on digits-16" in printed  # each sweep's own
    rows = list(csv.DictReader(open(combined / "table.csv")))
    assert [(r["data"], r["label"]) for r in rows] == [("digits-32", "a"), ("digits-32", "Narrow"),
                                                       ("digits-16", "a"), ("digits-16", "Narrow")]
    budget = list(csv.DictReader(open(combined / "budget.csv")))
    assert {r["data"] for r in budget} == {"digits-32", "digits-16"}
    with Image.open(combined / "budget.png") as both, Image.open(f"{first}/budget.png") as one:
        assert both.size[0] > 1.5 * one.size[0]  # a panel per sweep


def test_several_sweeps_need_an_output_folder_and_distinct_labels(finished, tmp_path, capsys):
    _, out, _ = finished
    assert main(["table", out, out]) == 1
    assert "several sweep folders make one combined table: say where it goes with --out" in capsys.readouterr().err
    assert main(["table", out, out, "--out", str(tmp_path)]) == 1
    assert "sweeps share the label 'digits-32', which names their column" in capsys.readouterr().err


def test_a_metric_with_a_floor_is_also_shown_as_a_multiple_of_it(tmp_path):
    """Runs that report <metric>_floor (fid with floor: true) get the mean of value / floor beside them."""
    from genframe.reporting.table import markdown
    from genframe.sweep.results import summarise

    out = RunStorage(str(tmp_path / "sweep"))
    trials = [{"index": i, "model": "m", "phase": "final", "setting": 0, "seed": i, "path": f"m/final-seed{i}"}
              for i in range(2)]
    out.write_json("sweep.json", {"source": "s.yaml", "seed": 0, "label": "digits", "metric": "fid", "mode": "min",
                                  "budget": 1, "seeds": [0], "final_seeds": [0, 1], "trials": trials,
                                  "models": [{"name": "m", "label": "M", "spec": "m.yaml", "search": {}}]})
    for i, (value, floor) in enumerate([(30.0, 3.0), (50.0, 2.5)]):
        RunStorage(f"{out.url}/m/final-seed{i}").write_json("result.json", {
            "index": i, "phase": "final", "model": "m", "setting": 0, "seed": i, "status": "ok", "value": value,
            "results": {"fid": value, "fid_floor": floor}, "metrics": [], "error": None})
    row = summarise(out.url)["models"][0]
    assert row["over_floor"] == pytest.approx((10.0 + 20.0) / 2)
    assert "| M | 40 ± 14 (15x floor) |" in markdown(summarise(out.url))


def _judged_sweep(tmp_path, judges: dict[str, str]) -> RunStorage:
    """A sweep folder with two final seeds per model, each model's metric measured by the classifier with
    the given weights digest, and a sample grid in each run folder: black for the better seed, grey for the other."""
    out = RunStorage(str(tmp_path / "sweep"))
    names = list(judges)
    trials = [{"index": 2 * m + i, "model": name, "phase": "final", "setting": 0, "seed": i,
               "path": f"{name}/final-seed{i}"} for m, name in enumerate(names) for i in range(2)]
    out.write_json("sweep.json", {"source": "s.yaml", "seed": 0, "label": "digits", "metric": "fid", "mode": "min",
                                  "budget": 1, "seeds": [0], "final_seeds": [0, 1], "trials": trials,
                                  "models": [{"name": n, "label": n.upper(), "spec": f"{n}.yaml", "search": {}}
                                             for n in names]})
    for t in trials:
        value = 10.0 + 5 * t["seed"]
        features = {"type": "classifier", "weights_sha256": judges[t["model"]], "resolution": 28,
                    "held_out_accuracy": 0.98}
        run = RunStorage(f"{out.url}/{t['path']}")
        run.write_json("result.json", {**t, "status": "ok", "value": value, "results": {"fid": value},
                                       "protocol": {"fid": {"features": features}}, "metrics": [], "error": None})
        grid = io.BytesIO()
        Image.new("L", (40, 40), 128 * t["seed"]).save(grid, format="PNG")
        run.write_bytes("images/train/samples-0000010.png", grid.getvalue())
    return out


def test_the_table_names_the_judge_its_models_share(tmp_path):
    from genframe.reporting.table import csv_text, markdown
    from genframe.sweep.results import summarise

    summary = summarise(_judged_sweep(tmp_path, {"a": "1" * 64, "b": "1" * 64}).url)
    assert "- judge: classifier features (weights 11111111, 28 px, held-out accuracy 0.98), the same for every " \
           "model" in markdown(summary)
    assert {r["judge"] for r in csv.DictReader(io.StringIO(csv_text(summary)))} == \
        {"classifier features (weights 11111111, 28 px, held-out accuracy 0.98)"}


def test_the_table_says_when_models_were_measured_by_different_judges(tmp_path):
    from genframe.reporting.table import markdown
    from genframe.sweep.results import summarise

    text = markdown(summarise(_judged_sweep(tmp_path, {"a": "1" * 64, "b": "2" * 64, "c": "1" * 64}).url))
    assert ("- **the models were not measured by one judge, so their numbers do not compare**: classifier features "
            "(weights 11111111, 28 px, held-out accuracy 0.98) for A, C; classifier features (weights 22222222, "
            "28 px, held-out accuracy 0.98) for B") in text
    assert "the same for every model" not in text


def test_the_table_shows_each_models_best_run_samples(tmp_path, capsys):
    out = _judged_sweep(tmp_path, {"a": "1" * 64, "b": "1" * 64})
    assert main(["table", out.url]) == 0
    assert "samples.png" in capsys.readouterr().out
    with Image.open(f"{out.url}/samples.png") as image:
        grey = image.convert("L")
    width, height = grey.size
    assert width > 1.5 * height  # two panels side by side
    pixels = grey.tobytes()  # one byte per pixel
    black, mid_grey = sum(p < 20 for p in pixels), sum(100 < p < 160 for p in pixels)
    # each panel is the best seed's grid (black); the worse seed's (grey) is drawn nowhere
    assert black > 0.1 * len(pixels) and mid_grey < 0.01 * black


def test_a_sweep_record_without_images_gets_no_sample_grids(tmp_path):
    out = _judged_sweep(tmp_path, {"a": "1" * 64})
    for seed in (0, 1):
        RunStorage(f"{out.url}/a/final-seed{seed}").fs.rm(f"{out.url}/a/final-seed{seed}/images", recursive=True)
    from genframe.reporting.table import write_table

    _, written = write_table(out.url)
    assert not any(w.endswith("samples.png") for w in written)
