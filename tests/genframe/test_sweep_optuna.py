"""Sweeps with strategy optuna, against the real library: shared studies, pruning, storages, restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genframe import GenframeError, SpecError, hookimpl
from genframe.components.registry import create_registry
from genframe.reporting.table import budget_curves, markdown
from genframe.storage import RunStorage
from genframe.sweep import study as studies
from genframe.sweep.plan import load_sweep
from genframe.sweep.results import summarise
from genframe.sweep.run import run_sweep

from .sweep_helpers import Counter, registry_with, tiny_one_stage

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[2]
OFFSET = "evaluation.metrics.0.offset"


def write(folder: Path, strategy: dict, *, budget: int = 2, search: str | None = None, final: int = 0,
          seed: int = 0) -> str:
    """A one-model sweep over a four-step run evaluated every two steps (so a pruner can stop it)."""
    spec = tiny_one_stage()
    spec["stages"][0]["trainer"]["epochs"] = 2  # 32 images, batches of 16: 4 steps
    spec["evaluation"]["every"] = 2
    (folder / "a.yaml").write_text(yaml.safe_dump(spec))
    sweep = {"seed": seed, "models": ["a.yaml"], "budget": budget, "select": {"metric": "brightness"},
             "strategy": strategy,
             "search": yaml.safe_load(search) if search else {
                 "stages.0.trainer.optimizer.lr": {"log_uniform": [1.0e-3, 1.0e-1]}}}
    if final:
        sweep["final"] = {"seeds": final}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return str(folder / "sweep.yaml")


def study_of(sweep, out: str):
    return studies.open_study(sweep, out, sweep.models[0])


def results(out: str) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(Path(out).glob("*/*/result.json"))}


def test_a_study_proposes_settings_and_table_reads_the_folder(tmp_path):
    counter = Counter()
    registry = registry_with(counter)
    sweep = load_sweep(write(tmp_path, {"type": "optuna", "sampler": "tpe", "pruner": "none", "startup_trials": 2},
                             budget=3, final=1), registry=registry)
    out = str(tmp_path / "out")
    ended = run_sweep(sweep, out, registry=registry)
    assert [r["status"] for r in ended] == ["ok"] * 4 and [r["phase"] for r in ended] == ["search"] * 3 + ["final"]
    study = study_of(sweep, out)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.params["stages.0.trainer.optimizer.lr"] for t in trials}) == 3  # startup draws differ too
    recorded = results(out)
    for t in trials:  # study trial n is the sweep's search trial n: same setting, same value
        result = recorded[f"a/search-{t.number:04d}-seed0"]
        assert result["params"] == {"stages.0.trainer.optimizer.lr": t.params["stages.0.trainer.optimizer.lr"]}
        assert result["value"] == pytest.approx(t.value)
    summary = summarise(out)
    row = summary["models"][0]
    best = min(trials, key=lambda t: t.value)
    assert row["best_setting"] == best.number and row["params"] == recorded[f"a/search-{best.number:04d}-seed0"]["params"]
    assert recorded["a/final-seed1"]["params"] == row["params"]  # the final re-run trains the study's best
    assert (row["settings_ok"], row["settings_pruned"], row["settings_failed"], row["settings_pending"]) == (3, 0, 0, 0)
    curve = budget_curves(summary)["a"]  # the best so far, in the study's order
    values = [t.value for t in trials]
    assert curve == [min(values[:k]) for k in range(1, 4)]
    text = markdown(summary)
    assert "settings ok / pruned / failed / pending" in text and "| 3 / 0 / 0 / 0 |" in text
    assert "proposed by an Optuna study per model (tpe sampler" in text
    assert run_sweep(sweep, out, registry=registry) == []  # restart: the studies are full, nothing runs again


def test_the_pruner_stops_a_bad_setting_at_its_first_evaluation(tmp_path):
    counter = Counter()
    registry = registry_with(counter)
    search = f"{OFFSET}: {{choice: [0.0, 100.0]}}"
    sweep = load_sweep(write(tmp_path, {"type": "optuna", "sampler": "random", "pruner": "median",
                                        "startup_trials": 1}, search=search), registry=registry)
    out = str(tmp_path / "out")
    study = study_of(sweep, out)
    study.enqueue_trial({OFFSET: 0.0})    # a good setting first, which the median pruner then judges by
    study.enqueue_trial({OFFSET: 100.0})  # then one whose every evaluation is 100 worse
    ended = run_sweep(sweep, out, registry=registry)
    assert [r["status"] for r in ended] == ["ok", "pruned"]
    bad = ended[1]
    assert bad["value"] is None and bad["error"] is None
    assert bad["pruned"].startswith("the median pruner stopped it at its evaluation 1 (brightness 1")
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "PRUNED"]
    run = RunStorage(f"{out}/a/search-0001-seed0")
    log = run.read_log()
    assert [r["step"] for r in log if r.get("event") == "evaluation"] == [2]  # never trained past step 2
    assert [r["reason"] for r in log if r.get("event") == "pruned"] == [bad["pruned"]]
    assert [c["step"] for c in run.checkpoints()] == [2]  # the stopping point is kept
    row = summarise(out)["models"][0]
    assert (row["settings_ok"], row["settings_pruned"], row["settings_failed"], row["best_setting"]) == (1, 1, 0, 0)
    assert row["errors"] == []  # pruned is not failed


def test_two_worker_processes_share_one_journal_and_run_no_setting_twice(tmp_path):
    path = write(tmp_path, {"type": "optuna", "sampler": "random", "pruner": "none"}, budget=4, final=2)
    out = tmp_path / "out"
    script = (
        "import sys; from tests.genframe.sweep_helpers import Counter, registry_with\n"
        "from genframe.sweep.plan import load_sweep; from genframe.sweep.run import run_sweep\n"
        "registry = registry_with(Counter())\n"
        f"sweep = load_sweep({path!r}, registry=registry)\n"
        f"ended = run_sweep(sweep, {str(out)!r}, registry=registry, worker=sys.argv[1])\n"
        "print('RAN', *[r['phase'] + ':' + str(r['setting']) + ':' + str(r['seed']) for r in ended])\n")
    workers = [subprocess.Popen([sys.executable, "-c", script, name], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in ("one", "two")]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    ran = [item for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("RAN")
           for item in line.split()[1:]]
    searches = sorted(r for r in ran if r.startswith("search"))
    finals = sorted(r for r in ran if r.startswith("final"))
    assert searches == [f"search:{n}:0" for n in range(4)]  # every setting once, whichever worker ran it
    settings = [json.dumps(r["params"], sort_keys=True) for r in results(str(out)).values() if r["phase"] == "search"]
    assert len(set(settings)) == 4  # and no two alike: each worker's sampler draws afresh
    assert len(finals) == 2 and len(set(finals)) == 2  # each final seed once
    sweep = load_sweep(path, registry=create_registry([Counter()]))
    study = study_of(sweep, str(out))
    assert sorted(t.number for t in study.get_trials()) == [0, 1, 2, 3]
    assert {t.user_attrs["worker"] for t in study.get_trials()} <= {"one", "two"}
    assert len(results(str(out))) == 6


def test_sqlite_storage(tmp_path):
    registry = registry_with(Counter())
    database = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep = load_sweep(write(tmp_path, {"type": "optuna", "sampler": "tpe", "pruner": "hyperband",
                                        "storage": database, "study": "mine"}), registry=registry)
    out = str(tmp_path / "out")
    assert [r["status"] for r in run_sweep(sweep, out, registry=registry)] == ["ok", "ok"]
    assert not (tmp_path / "out" / studies.JOURNAL).exists()
    loaded = optuna.load_study(study_name="mine.a", storage=database)
    assert [t.state.name for t in loaded.get_trials()] == ["COMPLETE", "COMPLETE"]


def test_a_seeded_sampler_proposes_the_same_settings_every_time(tmp_path):
    registry = registry_with(Counter())
    proposed = []
    for attempt in ("first", "second"):
        folder = tmp_path / attempt
        folder.mkdir()
        sweep = load_sweep(write(folder, {"type": "optuna", "sampler": "tpe", "pruner": "none", "startup_trials": 1},
                                 budget=3, seed=7), registry=registry)
        run_sweep(sweep, str(folder / "out"), registry=registry)
        proposed.append([r["params"] for r in results(str(folder / "out")).values()])
    assert proposed[0] == proposed[1] and len({json.dumps(p) for p in proposed[0]}) == 3


def test_a_restarted_worker_continues_its_trial_and_the_study_counts_it_once(tmp_path):
    class Interrupt:
        calls = 0

        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            Interrupt.calls += 1
            if Interrupt.calls == 3:  # the second trial's step 2
                raise KeyboardInterrupt

    counter = Counter()
    sweep = load_sweep(write(tmp_path, {"type": "optuna", "sampler": "random", "pruner": "none"}, budget=2),
                       registry=create_registry([counter]))
    out = str(tmp_path / "out")
    with pytest.raises(GenframeError, match="interrupted"):
        run_sweep(sweep, out, registry=create_registry([counter, Interrupt()]), worker="w")
    study = study_of(sweep, out)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "RUNNING"]
    held_by(study, os.getppid())  # as if another live process on this machine were training it
    with pytest.raises(GenframeError, match="give each worker its own --worker"):
        studies.claim(study, sweep, sweep.models[0], "w")
    held_by(study, 2**22 + 1)  # a process that no longer exists: the restarted worker takes its trial back
    ended = run_sweep(sweep, out, registry=create_registry([counter]), worker="w")
    assert [(r["setting"], r["status"]) for r in ended] == [(1, "ok")]
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
    assert counter.started[-1] == counter.started[-2]  # the same folder, resumed


def held_by(study, pid: int) -> None:
    """Record ``pid`` as the process training the study's running trial."""
    running = [t for t in study.get_trials() if t.state.name == "RUNNING"][0]
    optuna.trial.Trial(study, running._trial_id).set_user_attr("pid", pid)


def test_a_sweep_folder_holds_one_strategy(tmp_path):
    registry = registry_with(Counter())
    random_sweep = load_sweep(write(tmp_path, {"type": "random"}, budget=1), registry=registry)
    out = str(tmp_path / "out")
    run_sweep(random_sweep, out, registry=registry)
    adaptive = load_sweep(write(tmp_path, {"type": "optuna"}, budget=1), registry=registry)
    with pytest.raises(GenframeError, match="holds a random search; a optuna search needs its own --out"):
        run_sweep(adaptive, out, registry=registry)
    run_sweep(adaptive, str(tmp_path / "other"), registry=registry)
    with pytest.raises(GenframeError, match="holds a optuna search; a random search needs its own --out"):
        run_sweep(random_sweep, str(tmp_path / "other"), registry=registry)


@pytest.mark.parametrize("strategy, seeds, field, message", [
    ({"type": "random", "pruner": "median"}, 1, "strategy.pruner", "applies to type: optuna only"),
    ({"type": "optuna"}, 2, "seeds", "an optuna search trains each setting once"),
    ({"type": "optuna", "sampler": "grid"}, 1, "strategy.sampler", "random"),
])
def test_strategy_errors_name_the_field(tmp_path, strategy, seeds, field, message):
    path = write(tmp_path, strategy)
    data = yaml.safe_load(Path(path).read_text())
    data["seeds"] = seeds
    Path(path).write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as caught:
        load_sweep(path, registry=registry_with(Counter()))
    assert caught.value.path == field and message in str(caught.value)


def test_without_optuna_the_error_names_the_extra(tmp_path, monkeypatch):
    registry = registry_with(Counter())
    sweep = load_sweep(write(tmp_path, {"type": "optuna"}), registry=registry)
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    with pytest.raises(GenframeError, match=r"needs optuna: pip install 'genframe\[optuna\]'"):
        run_sweep(sweep, str(tmp_path / "out"), registry=registry)
