"""Sweeps: deterministic settings, restart, single trials, failures, search-space checks, GPU workers."""

from __future__ import annotations

import json
import math
import re
import threading

import pytest
import torch

from genframe import GenframeError, SpecError, hookimpl
from genframe.sweep import results as sweep_results, run as sweep_run
from genframe.cli import main
from genframe.components.registry import create_registry, set_registry
from genframe.storage import RunStorage
from genframe.build.system import reference_data
from genframe.sweep.plan import load_sweep
from genframe.sweep.run import run_sweep, worker_command

from .sweep_helpers import SEARCH, Counter, registry_with, run_test_sweep, write_sweep

SMALL = """
models: [../specs/a.yaml, ../specs/b.yaml]
""" + SEARCH + """
budget: 2
select: {metric: brightness}
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two specs, two settings, one seed, no final re-runs; one trial fails."""
    return run_test_sweep(tmp_path_factory.mktemp("sweep"), SMALL, "a/search-0001-seed0")


def test_a_failed_trial_is_recorded_and_the_others_run(small):
    sweep, out, counter, _, ended = small
    assert [t.path for t in sweep.trials()] == ["a/search-0000-seed0", "b/search-0000-seed0",
                                               "a/search-0001-seed0", "b/search-0001-seed0"]
    assert len(counter.started) == 4
    assert [r["status"] for r in ended] == ["ok", "ok", "failed", "ok"]
    assert ended[2]["error"] == "RuntimeError: simulated failure"
    assert all(math.isfinite(r["value"]) for r in ended if r["status"] == "ok")


def test_restart_skips_finished_trials(small):
    sweep, out, counter, registry, _ = small
    before = len(counter.started)
    assert run_sweep(sweep, out, registry=registry) == []  # the failed trial counts as finished too
    assert len(counter.started) == before


def test_an_interrupted_trial_resumes_on_restart(tmp_path):
    class Interrupt:
        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            raise KeyboardInterrupt

    counter = Counter()
    path = write_sweep(tmp_path, SMALL)
    sweep = load_sweep(path, registry=registry_with(counter))
    out = str(tmp_path / "out")
    with pytest.raises(GenframeError, match="^interrupted"):  # Ctrl-C stops the sweep, no failure is recorded
        run_sweep(sweep, out, registry=create_registry([counter, Interrupt()]))
    first = sweep.trials()[0]
    assert RunStorage.open(f"{out}/{first.path}") and not RunStorage(f"{out}/{first.path}").exists("result.json")
    result, ran = sweep_run.run_trial(sweep, out, first, registry=registry_with(counter))
    assert ran and result["status"] == "ok"
    assert counter.started[-1] == f"{out}/{first.path}"  # the same folder, continued


def test_trial_k_runs_exactly_trial_k(tmp_path, capsys):
    counter = Counter()
    path = write_sweep(tmp_path, SMALL)
    out = tmp_path / "out"
    set_registry(registry_with(counter))
    try:
        assert main(["sweep", path, "--out", str(out), "--trial", "3"]) == 0
        assert "[4/4] b search setting 1 seed 0: brightness=" in capsys.readouterr().err
        assert len(counter.started) == 1
        assert [str(p.relative_to(out)) for p in out.glob("*/*/result.json")] == ["b/search-0001-seed0/result.json"]
        sweep = load_sweep(path)
        spec = RunStorage.open(str(out / "b" / "search-0001-seed0")).read_spec()
        assert spec["stages"][0]["trainer"]["optimizer"]["lr"] == \
            sweep.setting(sweep.model("b"), 1)["stages.0.trainer.optimizer.lr"]
        assert main(["sweep", path, "--out", str(out), "--trial", "4"]) == 1
        assert capsys.readouterr().err.strip() == "genframe: error: --trial 4: the sweep has 4 trials, 0..3"
        assert main(["sweep", path, "--out", str(out), "--list"]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0] == f"4 trials (4 search, 0 final re-runs) in {out}"
        assert listing[4].split() == ["3", "search", "b", "setting", "1", "seed", "0", "ok"]
        assert listing[1].split()[-1] == "pending"
        # the spec changed since trial 3 ran: its record no longer says what the sweep trains now
        assert main(["sweep", path, "--out", str(out), "--set", "log_every=3", "--list"]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[4].split("seed 0")[-1].strip() == \
            "stale (ok; run from another spec: delete its folder to run it again)"
        assert listing[1].split()[-1] == "pending"
    finally:
        set_registry(None)
    assert len(counter.started) == 1


def test_a_final_rerun_waits_for_its_models_search(tmp_path):
    counter = Counter()
    registry = registry_with(counter)
    sweep = load_sweep(write_sweep(tmp_path, SMALL + "final: {seeds: 2}\n"), registry=registry)
    final = next(t for t in sweep.trials() if t.phase == "final")
    assert (final.index, final.model, final.seed) == (4, "a", 1)  # seeds after the search's
    with pytest.raises(GenframeError, match=r"the search of model 'a' is not finished \(2 of 2 trials"):
        run_sweep(sweep, str(tmp_path / "out"), trial=final.index, registry=registry)
    assert counter.started == []


def test_settings_are_deterministic_and_independent_of_budget_and_other_models(tmp_path):
    registry = registry_with(Counter())
    text = """
seed: 11
spec: ../specs/a.yaml
models:
  - {name: wide}
  - {name: narrow, set: {components.generator.width: 4}}
search:
  stages.0.trainer.optimizer.lr: {log_uniform: [1.0e-5, 1.0e-2]}
  stages.0.trainer.optimizer.betas.0: {uniform: [0.0, 1.0]}
  stages.0.trainer.batch_size: {int: [4, 16]}
  stages.0.trainer.loss: {choice: [{type: l1}, {type: l2}]}
budget: 6
seeds: [3, 5]
select: {metric: brightness}
"""
    a = load_sweep(write_sweep(tmp_path, text), registry=registry)
    again = load_sweep(write_sweep(tmp_path, text), registry=registry)
    assert a.trials() == again.trials() and a.describe() == again.describe()
    settings = [a.setting(a.model("narrow"), j) for j in range(6)]
    assert len({json.dumps(s, sort_keys=True) for s in settings}) == 6
    for s in settings:
        assert 1e-5 <= s["stages.0.trainer.optimizer.lr"] < 1e-2
        assert 0.0 <= s["stages.0.trainer.optimizer.betas.0"] < 1.0
        assert isinstance(s["stages.0.trainer.batch_size"], int) and 4 <= s["stages.0.trainer.batch_size"] <= 16
        assert s["stages.0.trainer.loss"] in ({"type": "l1"}, {"type": "l2"})
    smaller = load_sweep(write_sweep(tmp_path, text.replace("budget: 6", "budget: 3")
                                     .replace("  - {name: wide}\n", "")), registry=registry)
    assert [smaller.setting(smaller.model("narrow"), j) for j in range(3)] == settings[:3]
    other_seed = load_sweep(write_sweep(tmp_path, text.replace("seed: 11", "seed: 12")), registry=registry)
    assert other_seed.setting(other_seed.model("narrow"), 0) != settings[0]
    # the alternative's fixed value and a setting both reach the spec the trial trains
    spec = a.trial_spec(a.model("narrow"), settings[0], 5)
    assert spec["components"]["generator"]["width"] == 4 and spec["seed"] == 5
    assert spec["stages"][0]["trainer"]["optimizer"]["type"] == "adam"  # filled in from the defaults
    assert [t.seed for t in a.trials()[:4]] == [3, 5, 3, 5]


@pytest.mark.parametrize("search, field, message", [
    ("stages.0.trainer.optimizer.lrr: {uniform: [0.1, 0.2]}", "search.stages.0.trainer.optimizer.lrr",
     r"no such field in the spec of model 'a' \(.*/specs/a.yaml\): stages.0.trainer.optimizer has no field 'lrr'; "
     "its fields: betas, eps, fused, lr, schedule, type, weight_decay"),
    ("components.generatr.width: {int: [4, 8]}", "search.components.generatr.width",
     "components has no field 'generatr'; its fields: codes, generator, noise"),
    ("stages.3.trainer.epochs: {int: [1, 2]}", "search.stages.3.trainer.epochs",
     "stages is a list of 1 items, it has no item '3'"),
    ("stages.0.trainer.optimizer.lr: {uniform: [0.1, 0.1]}", "search.stages.0.trainer.optimizer.lr.uniform",
     r"empty range \[0.1, 0.1\)"),
    ("stages.0.trainer.optimizer.lr: {log_uniform: [0.1, 0.01]}",
     "search.stages.0.trainer.optimizer.lr.log_uniform", "low 0.1 > high 0.01"),
    ("stages.0.trainer.optimizer.lr: {log_uniform: [0.0, 0.01]}",
     "search.stages.0.trainer.optimizer.lr.log_uniform", r"log_uniform needs positive bounds, found \[0.0, 0.01\]"),
    ("stages.0.trainer.batch_size: {int: [8, 4]}", "search.stages.0.trainer.batch_size.int", "low 8 > high 4"),
    ("stages.0.trainer.batch_size: {choice: []}", "search.stages.0.trainer.batch_size.choice", "empty choice"),
    ("stages.0.trainer.batch_size: {int: [1, 2], choice: [3]}", "search.stages.0.trainer.batch_size",
     "give exactly one distribution"),
    ("stages.0.trainer.optimizer.lr: {loguniform: [0.1, 0.2]}", "search.stages.0.trainer.optimizer.lr.loguniform",
     "unknown field 'loguniform'; allowed: choice, int, log_uniform, uniform"),
    ("stages.0.trainer.batch_size: {choice: [0]}", "search.stages.0.trainer.batch_size",
     r"setting 0 \(stages.0.trainer.batch_size=0\) gives model 'a' an invalid spec: stages\[0\].trainer.batch_size"),
])
def test_an_invalid_search_space_is_rejected_before_any_trial_runs(tmp_path, search, field, message):
    counter = Counter()
    path = write_sweep(tmp_path, f"""
models: [../specs/a.yaml]
search:
  {search}
budget: 2
select: {{metric: brightness}}
""")
    with pytest.raises(SpecError) as caught:
        load_sweep(path, registry=registry_with(counter))
    assert caught.value.source == path and caught.value.path == field
    assert len(str(caught.value).splitlines()) == 1
    assert counter.started == []
    assert re.search(message, caught.value.detail), caught.value.detail


def test_sweep_file_errors_are_one_line_naming_the_field(tmp_path, capsys):
    path = write_sweep(tmp_path, """
models: [../specs/a.yaml, {name: a, spec: ../specs/b.yaml}]
budget: 2
select: {metric: brightness}
""")
    set_registry(registry_with(Counter()))
    try:
        assert main(["sweep", path, "--out", str(tmp_path / "out")]) == 1
        assert capsys.readouterr().err.strip() == \
            f"genframe: error: {path}: models[1].name: model name 'a' is used twice; give each model its own name"
        assert main(["sweep", path, "--set", "budget=0"]) == 1
        assert capsys.readouterr().err.strip().startswith(f"genframe: error: {path}: budget: found 0")
    finally:
        set_registry(None)
    assert not (tmp_path / "out").exists()


def test_a_model_without_metrics_is_rejected(tmp_path):
    path = write_sweep(tmp_path, """
models: [{spec: ../specs/a.yaml, set: {evaluation.metrics: []}}]
budget: 1
select: {metric: brightness}
""")
    with pytest.raises(SpecError, match=r"models\[0\]: .*a.yaml computes no evaluation metrics"):
        load_sweep(path, registry=registry_with(Counter()))


def test_several_gpus_run_one_trial_each_and_finals_after_the_search(tmp_path, monkeypatch):
    """The worker processes are stood in for by writing results, so this runs without GPUs."""
    sweep = load_sweep(write_sweep(tmp_path, SMALL + "final: {seeds: 1}\n"), registry=registry_with(Counter()))
    out = str(tmp_path / "out")
    launched: list[tuple[int, str, bool]] = []
    lock = threading.Lock()

    def fake_launch(sweep_, out_, trial, gpu):
        with lock:
            search_done = all(RunStorage(f"{out_}/{t.path}").exists("result.json")
                              for t in sweep_.trials() if t.phase == "search")
            launched.append((trial.index, gpu, search_done))
            setting, params, spec = sweep_run._planned(sweep_, out_, trial)  # what the worker would train
            RunStorage(f"{out_}/{trial.path}").write_json("result.json", {
                "status": "ok", "value": float(trial.index), "setting": setting, "seed": trial.seed,
                "params": params, "spec_sha256": sweep_results.spec_digest(spec), "seconds": 0.0})

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr(sweep_run, "_launch", fake_launch)
    # the stand-in workers train nothing, and the test metric is not installed for the real ones
    monkeypatch.setattr(sweep_run, "preflight_models", lambda *args, **kwargs: None)
    ended = run_sweep(sweep, out)
    assert sorted(i for i, _, _ in launched) == list(range(len(sweep.trials()))) and len(ended) == 6
    assert {gpu for _, gpu, _ in launched} <= {"5", "7"}
    assert all(done for i, _, done in launched if sweep.trials()[i].phase == "final")
    launched.clear()
    assert run_sweep(sweep, out) == [] and launched == []  # finished trials are not started again
    # the final re-runs trained the best search setting: the fake's values are trial numbers, so with
    # mode min that is setting 0 (trials 0 and 1) rather than setting 1 (trials 2 and 3)
    finals = [RunStorage(f"{out}/{t.path}").read_json("result.json") for t in sweep.trials() if t.phase == "final"]
    assert [r["setting"] for r in finals] == [0, 0]
    edited = load_sweep(sweep.source, overrides=["seed=1"], registry=registry_with(Counter()))
    with pytest.raises(GenframeError, match="was run from a different spec"):
        run_sweep(edited, out)  # other settings: the recorded results are refused, not mixed in


def test_a_gpu_worker_is_the_single_trial_command_pinned_to_its_gpu(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, SMALL)
    sweep = load_sweep(path, overrides=["budget=1"], registry=registry_with(Counter()))
    calls = []
    monkeypatch.setattr(sweep_run.subprocess, "run", lambda cmd, env, check: calls.append((cmd, env)))
    sweep_run._launch(sweep, "OUT", sweep.trials()[1], "3")
    (command, env), = calls
    assert command[1:] == ["-m", "genframe", "sweep", path, "--out", "OUT", "--trial", "1", "--device", "cuda",
                           "--set", "budget=1"]
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert worker_command(sweep, "OUT", sweep.trials()[1]) == command


def test_a_changed_base_spec_is_not_mixed_with_old_results(small, tmp_path):
    sweep, out, _, registry, _ = small
    changed = load_sweep(sweep.source, overrides=["budget=1"], registry=registry)
    assert run_sweep(changed, out, registry=registry) == []  # a smaller budget keeps the same trials
    text = open(sweep.model("a").spec_url).read()
    try:
        open(sweep.model("a").spec_url, "w").write(text.replace("epochs: 1", "epochs: 2"))
        edited = load_sweep(sweep.source, registry=registry)
        with pytest.raises(GenframeError, match="a/search-0000-seed0: trial 0 .* was run from a different spec"):
            run_sweep(edited, out, registry=registry)
    finally:
        open(sweep.model("a").spec_url, "w").write(text)


def test_the_shipped_sweep_and_the_user_guide_example_are_valid(tmp_path):
    """Against the shipped base specs and the default plugins (fid included); no training."""
    from ..conftest import REPO, SPECS

    lucic = load_sweep(str(SPECS / "sweeps" / "lucic_mnist.yaml"), overrides=["budget=2", "final.seeds=2"])
    assert [m.label for m in lucic.models] == ["MM GAN", "NS GAN", "LSGAN", "WGAN", "BEGAN", "VAE", "GLO", "GLANN"]
    assert (lucic.metric, lucic.mode, lucic.final_seeds) == ("fid", "min", (1, 2))
    wgan = lucic.trial_spec(lucic.model("wgan"), lucic.setting(lucic.model("wgan"), 0), 0)
    assert wgan["stages"][0]["trainer"]["optimizer"]["type"] == "adam"  # the paper's optimiser for every model
    example, adaptive = [b for b in re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "user-guide.md").read_text(),
                                               re.S) if "budget:" in b]
    for name in ("nsgan.yaml", "lsgan.yaml"):
        (tmp_path / name).write_text((SPECS / name).read_text())
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "gans.yaml").write_text(example)
    sweep = load_sweep(str(tmp_path / "sweeps" / "gans.yaml"))
    assert [m.name for m in sweep.models] == ["nsgan", "lsgan"] and len(sweep.trials()) == 20 * 2 * 2 + 2 * 5
    (tmp_path / "sweeps" / "tpe.yaml").write_text(adaptive)
    sweep = load_sweep(str(tmp_path / "sweeps" / "tpe.yaml"))
    assert sweep.adaptive and sweep.strategy == {"type": "optuna", "sampler": "tpe", "pruner": "hyperband",
                                                 "startup_trials": 3, "storage": None, "study": "tpe"}
    assert len(sweep.trials()) == 40 + 3 and sweep.models[0].spec["evaluation"]["every"] == 1000


def test_the_cpu_comparison_plans_on_mnist_and_on_cifar10(capsys):
    """lucic_cpu.yaml: every system of the lecture and genframe's flows, at equal CPU seconds, selected by
    FID in classifier features; --set data.type=cifar10 (a spec path, not a sweep field) moves every model,
    and --set data.root its folder, as on MNIST."""
    from ..conftest import SPECS

    cpu = load_sweep(str(SPECS / "sweeps" / "lucic_cpu.yaml"))
    assert len(cpu.models) == 14 and cpu.budget >= 8 and len(cpu.final_seeds) >= 3 and cpu.metric == "fid"
    for model in cpu.models:
        spec = cpu.trial_spec(model, cpu.setting(model, 0), 0)
        assert sum(stage.get("seconds") or 0 for stage in spec["stages"]) == 90, model.name
        fid = spec["evaluation"]["metrics"][0]
        assert fid["features"] == {"type": "classifier"} and fid["floor"] and spec["evaluation"]["data"]["limit"] is None
    # one judge: every model compares with the same real images (MNIST at 28 px, all of it), so that one
    # classifier, trained on them, measures every model
    references = {json.dumps(reference_data(model.resolved), sort_keys=True) for model in cpu.models}
    assert len(references) == 1 and json.loads(references.pop())["image_size"] == 28
    assert capsys.readouterr().err == ""
    cifar = load_sweep(str(SPECS / "sweeps" / "lucic_cpu.yaml"),
                       overrides=["data.type=cifar10", "data.root=data/cifar10", "budget=1"])
    assert capsys.readouterr().err == ""
    assert {cifar.trial_spec(m, cifar.setting(m, 0), 0)["data"]["type"] for m in cifar.models} == {"cifar10"}
    assert len(cifar.trials()) == 14 * (1 + 3)
    # on CIFAR-10 too, whatever size each model trains at (the flows take its own 32 px, glann.yaml 28)
    sizes = {cifar.trial_spec(m, cifar.setting(m, 0), 0)["data"].get("image_size") for m in cifar.models}
    assert len(sizes) > 1
    references = {json.dumps(reference_data(model.resolved), sort_keys=True) for model in cifar.models}
    assert len(references) == 1 and json.loads(references.pop())["type"] == "cifar10"
    # without data.root, the specs that name MNIST's folder would read CIFAR-10 from it: the sweep says so
    load_sweep(str(SPECS / "sweeps" / "lucic_cpu.yaml"), overrides=["data.type=cifar10", "budget=1"])
    assert "(data.root: 'data/cifar10' against 'data/mnist')" in capsys.readouterr().err
    with pytest.raises(SpecError, match=r"--set: no such field in .*: data has no field 'typo'"):
        load_sweep(str(SPECS / "sweeps" / "lucic_cpu.yaml"), overrides=["data.typo=1"])


def test_models_that_compare_with_other_real_images_are_announced(tmp_path, capsys):
    """A model trained at another size compares with other real images (and, with classifier features,
    is judged by another classifier): the sweep says so in one line, and evaluation.data makes them one."""
    differing = SMALL.replace("models: [../specs/a.yaml, ../specs/b.yaml]",
                              "models: [../specs/a.yaml, {spec: ../specs/b.yaml, set: {data.image_size: 12}}]")
    load_sweep(write_sweep(tmp_path, differing), registry=registry_with(Counter()))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("model 'b' compares with other real images than 'a' (data.image_size: 12 "
                                     "against 8), so their metrics are not measured alike; set evaluation.data "
                                     "to make them one reference") in err
    one_reference = differing.replace("set: {data.image_size: 12}",
                                      "set: {data.image_size: 12, evaluation.data: {image_size: 8}}")
    load_sweep(write_sweep(tmp_path, one_reference, "one.yaml"), registry=registry_with(Counter()))
    assert capsys.readouterr().err == ""
    load_sweep(write_sweep(tmp_path, SMALL, "same.yaml"), registry=registry_with(Counter()))
    assert capsys.readouterr().err == ""
