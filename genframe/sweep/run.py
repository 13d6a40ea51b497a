"""Running a sweep's trials: in this process, one worker process per GPU, or one alone (``--trial K``).

Each trial is one run folder plus a ``result.json`` written atomically when it ends; a trial with
a result is skipped on restart, and one interrupted half-way resumes from its last checkpoint.
So trials can run in any of these ways, or as independent jobs of any scheduler, all writing into
the same sweep folder. A final re-run trains the search's best setting, so it waits for the search.
"""

from __future__ import annotations

import math
import os
import posixpath
import queue
import socket
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime
from typing import Any, Callable

import torch

from genframe.build.preflight import preflight
from genframe.build.system import build
from genframe.errors import GenframeError
from genframe.components.registry import Registry, get_registry
from genframe.storage import RunStorage
from genframe.sweep.plan import Model, Sweep, Trial
from genframe.training.engine import Pruner
from genframe.sweep.results import RESULT, best_setting, read_result, setting_scores, spec_digest


class NotReady(GenframeError):
    """A final re-run whose setting cannot be chosen (yet): the search is unfinished or nothing succeeded."""


def _final_choice(sweep: Sweep, out: str, model: Model) -> tuple[int, dict[str, Any]]:
    """The setting a final re-run trains: the search's best, once every search trial of the model ended."""
    search = [t for t in sweep.trials() if t.phase == "search" and t.model == model.name]
    results = [read_result(out, t.path) for t in search]
    missing = sum(r is None for r in results)
    if missing:
        raise NotReady(f"the search of model {model.name!r} is not finished ({missing} of {len(search)} "
                       "trials have no result); run those first")
    best = best_setting(setting_scores(results), sweep.mode)
    if best is None:
        raise NotReady(f"no setting of model {model.name!r} succeeded with every seed; nothing to re-run")
    return best, next(r["params"] for r in results if r["setting"] == best)


def _search_missing(sweep: Sweep, out: str, model: str) -> bool:
    return any(read_result(out, t.path) is None for t in sweep.trials() if t.phase == "search" and t.model == model)


def _silent(line: str) -> None:
    pass


def _last_evaluation(records: list[dict]) -> dict[str, float]:
    """Results of the run's last evaluation: the final model is what a trial is judged by. A last
    evaluation that failed gives its error (under ``error``): the trial is then not selectable."""
    for record in reversed(records):
        if record.get("event") == "evaluation":
            return {k: v for k, v in record.items() if k not in ("stage", "step", "event")}
        if record.get("event") == "evaluation_failed":
            return {"error": record["error"]}
    return {}


def _interrupted(exc: BaseException) -> bool:
    """The engine turns Ctrl-C into a GenframeError; that stops the sweep instead of failing the trial."""
    return isinstance(exc.__context__, KeyboardInterrupt) or isinstance(exc.__cause__, KeyboardInterrupt)


def _check_current(trial: Trial, recorded: dict, digest: str, out: str) -> None:
    if recorded.get("spec_sha256") != digest:
        raise GenframeError(f"{out}/{trial.path}: {trial.describe()} was run from a different spec (the sweep, "
                            "a base spec or, for a final re-run, the best setting changed since); use another "
                            "--out, or delete that folder to run it again")


def trial_status(sweep: Sweep, out: str, trial: Trial) -> str:
    """What ``genframe sweep --list`` says of a trial: pending, its recorded status, or ``stale`` when
    its record was run from another spec than the sweep plans now (running it would refuse)."""
    recorded = read_result(out, trial.path)
    if recorded is None:
        return "pending"
    try:
        digest = spec_digest(_planned(sweep, out, trial)[2])
    except NotReady:  # a final re-run whose best setting cannot be known now: its record stands
        return recorded["status"]
    if recorded.get("spec_sha256") != digest:
        return f"stale ({recorded['status']}; run from another spec: delete its folder to run it again)"
    return recorded["status"]


def _planned(sweep: Sweep, out: str, trial: Trial) -> tuple[int, dict[str, Any], dict]:
    """(setting, its values, the spec) that ``trial`` trains now."""
    model = sweep.model(trial.model)
    if trial.phase == "search":
        setting, params = trial.setting, sweep.setting(model, trial.setting)
    else:
        setting, params = _final_choice(sweep, out, model)
    return setting, params, sweep.trial_spec(model, params, trial.seed)


def run_trial(sweep: Sweep, out: str, trial: Trial, *, device: str | None = None,
              registry: Registry | None = None, params: dict[str, Any] | None = None,
              prune: Pruner | None = None) -> tuple[dict, bool]:
    """Run one trial into its folder unless it has a result; returns (result, whether it ran now).

    ``params``: a search trial's setting when a study proposed it (else it is the sweep's draw);
    ``prune``: the engine's rule for ending it early (its result then says ``pruned``)."""
    from genframe.training.engine import run

    registry = registry or get_registry()
    model = sweep.model(trial.model)
    if params is None:
        setting, params, spec = _planned(sweep, out, trial)
    else:
        setting, spec = trial.setting, sweep.trial_spec(model, params, trial.seed)
    digest = spec_digest(spec)
    recorded = read_result(out, trial.path)
    if recorded is not None:
        _check_current(trial, recorded, digest, out)
        return recorded, False
    url = f"{out.rstrip('/')}/{trial.path}"
    storage = RunStorage(url)
    result = {"index": trial.index, "phase": trial.phase, "model": trial.model, "setting": setting,
              "seed": trial.seed, "params": params, "metric": sweep.metric, "spec_sha256": digest}
    started = time.time()
    if storage.exists("error.txt"):
        storage.fs.rm(storage.path("error.txt"))  # from an earlier failure whose result was deleted to retry
    try:
        system = build(spec, f"{model.spec_url} (sweep {trial.describe()})", registry)
        resume = url if storage.exists("spec.yaml") else None
        ended = run(system, out=None if resume else url, device=device, resume=resume, registry=registry,
                    prune=prune)
        results = _last_evaluation(storage.read_log())
        protocol = results.pop("protocol", None)  # what the metrics depended on, as the engine logs it
        failed_evaluation = results.pop("error", None)
        value = results.get(sweep.metric)
        if ended.status == "pruned":
            error = None
        elif failed_evaluation is not None:
            error = f"its last evaluation failed ({failed_evaluation}); the trained run is kept: genframe eval {url}"
        elif value is None:
            error = (f"the run reported no {sweep.metric!r} (its last evaluation gave "
                     f"{', '.join(results) or 'nothing'})")
        elif not math.isfinite(value):
            error = f"{sweep.metric} is {value}"
        else:
            error = None
        status = "pruned" if ended.status == "pruned" else "failed" if error else "ok"
        result.update(status=status, value=value if status == "ok" else None,
                      results=results, error=error, protocol=protocol,
                      metrics=spec.get("evaluation", {}).get("metrics", []),
                      **({"pruned": ended.pruned} if status == "pruned" else {}))
    except Exception as exc:  # any failure is the trial's outcome; the sweep goes on
        if _interrupted(exc):
            raise GenframeError("interrupted; run the same genframe sweep command again to continue: finished "
                                f"trials are skipped and {trial.describe()} resumes from its last checkpoint"
                                ) from None
        message = str(exc) if isinstance(exc, GenframeError) else f"{type(exc).__name__}: {exc}"
        result.update(status="failed", value=None, results={}, error=message.strip().splitlines()[0])
        storage.write_text("error.txt", traceback.format_exc())
    result.update(seconds=round(time.time() - started, 3), finished=datetime.now().isoformat(timespec="seconds"))
    storage.write_json(RESULT, result)
    return result, True


def run_adaptive(sweep: Sweep, out: str, model: Model, worker: str, *, device: str | None = None,
                 registry: Registry | None = None) -> tuple[dict, bool, Trial] | None:
    """One search trial of ``model`` proposed by its study (or this worker's unfinished one, which
    continues); None once the study holds ``budget`` trials."""
    from genframe.sweep import study as studies

    study = studies.open_study(sweep, out, model)
    claimed = studies.claim(study, sweep, model, worker)
    if claimed is None:
        return None
    trial = studies.trial_of(sweep, model, claimed.number)
    params = studies.setting_of(model, claimed.params)
    storage = RunStorage(f"{out}/{trial.path}")
    reported = sum(r.get("event") == "evaluation" for r in storage.read_log()) if storage.exists("metrics.jsonl") \
        else 0
    # an interrupt propagates and leaves the trial running in the study: this worker continues it on restart
    result, ran = run_trial(sweep, out, trial, device=device, registry=registry, params=params,
                            prune=studies.pruner(claimed, sweep.metric, sweep.strategy["pruner"], reported))
    studies.tell(study, claimed, result["status"], result.get("value"))
    return result, ran, trial


def run_adaptive_final(sweep: Sweep, out: str, model: Model, worker: str, *, device: str | None = None,
                       registry: Registry | None = None) -> tuple[dict, bool, Trial] | None:
    """One final re-run of ``model``, claimed through its finals study so that workers on several
    machines never train the same seed; None once every final seed is claimed."""
    from genframe.sweep import study as studies

    if _search_missing(sweep, out, model.name):
        raise NotReady(f"the search of model {model.name!r} is not finished; its final re-runs wait for it")
    _final_choice(sweep, out, model)  # NotReady before claiming when no setting succeeded
    finals = studies.open_finals(sweep, out, model)
    claimed = studies.claim(finals, sweep, model, worker, finals=True)
    if claimed is None:
        return None
    trial = studies.final_of(sweep, model, claimed.number)
    result, ran = run_trial(sweep, out, trial, device=device, registry=registry)
    studies.tell(finals, claimed, result["status"], result.get("value"))
    return result, ran, trial


def _check_strategy(sweep: Sweep, out: str) -> None:
    """A sweep folder holds one strategy's trials: a random search's settings and a study's do not mix."""
    folder = RunStorage(out)
    if not folder.exists("sweep.json"):
        return
    recorded = folder.read_json("sweep.json").get("strategy", {"type": "random"})["type"]
    if recorded != sweep.strategy["type"]:
        raise GenframeError(f"{out}: this sweep folder holds a {recorded} search; a {sweep.strategy['type']} "
                            "search needs its own --out")


def default_worker(trial: int | None) -> str:
    """A worker's id when none is given: its array task (``trial-K``), else its machine."""
    return f"trial-{trial}" if trial is not None else socket.gethostname()


def _outcome(result: dict, ran: bool, metric: str) -> str:
    if not ran:
        return f"finished earlier ({result['status']})"
    if result["status"] == "pruned":
        return f"pruned: {result['pruned']} ({result['seconds']:.1f} s)"
    if result["status"] == "ok":
        return f"{metric}={result['value']:.6g} ({result['seconds']:.1f} s)"
    return f"failed: {result['error']}"


def default_out(sweep_url: str) -> str:
    """Fixed (no timestamp), so that independent jobs started from the same file share one folder."""
    return f"runs/sweeps/{posixpath.splitext(posixpath.basename(sweep_url))[0]}"


def run_sweep(sweep: Sweep, out: str, *, trial: int | None = None, device: str | None = None,
              registry: Registry | None = None, echo: Callable[[str], None] = _silent,
              worker: str | None = None) -> list[dict]:
    """Run the sweep's trials (or only ``trial``) into ``out``; returns the results of those that ended now.

    Several visible GPUs and no explicit device or trial: one worker process per GPU (they load
    plugins from entry points, so a ``registry`` given in code keeps the sweep in this process).
    With the optuna strategy, a search trial asks the model's study for its setting; ``worker``
    names this worker there (see :mod:`genframe.sweep.study`).
    """
    trials = sweep.trials()
    if trial is not None and not 0 <= trial < len(trials):
        raise GenframeError(f"--trial {trial}: the sweep has {len(trials)} trials, 0..{len(trials) - 1}")
    preflight_models(sweep, [t.model for t in ([trials[trial]] if trial is not None else trials)], registry)
    out = out.rstrip("/")
    _check_strategy(sweep, out)
    RunStorage(out).write_json("sweep.json", sweep.describe())
    worker = worker or default_worker(trial)
    if trial is None and registry is None and device in (None, "auto", "cuda"):
        gpus = visible_gpus()
        if gpus:
            return _run_on_gpus(sweep, out, trials, gpus, echo)
    ended: list[dict] = []
    for t in ([trials[trial]] if trial is not None else trials):
        head = f"[{t.index + 1}/{len(trials)}] {t.model} {t.phase} " + \
            (f"setting {t.setting}" if t.phase == "search" else "best setting") + f" seed {t.seed}"
        try:
            if sweep.adaptive:
                claim = run_adaptive if t.phase == "search" else run_adaptive_final
                adaptive = claim(sweep, out, sweep.model(t.model), worker, device=device, registry=registry)
                if adaptive is None:
                    continue  # every trial of the kind is claimed: other workers train the rest
                result, ran, filled = adaptive
                head = f"[{filled.index + 1}/{len(trials)}] {t.model} " + \
                    (f"search setting {filled.setting} (optuna)" if t.phase == "search" else "best setting") + \
                    f" seed {filled.seed}"
            else:
                result, ran = run_trial(sweep, out, t, device=device, registry=registry)
        except NotReady as exc:
            if trial is not None:
                raise
            echo(f"{head}: not run: {exc}")  # no setting succeeded: the other models still go on
            continue
        echo(f"{head}: {_outcome(result, ran, sweep.metric)}")
        if ran:
            ended.append(result)
    return ended


def preflight_models(sweep: Sweep, names: list[str], registry: Registry | None = None) -> None:
    """What the models' runs need from outside (weights, data), checked once for all their trials: a
    missing file stops the sweep with one error instead of failing every trial after its training."""
    registry = registry or get_registry()
    for name in dict.fromkeys(names):
        model = sweep.model(name)
        spec = sweep.trial_spec(model, sweep.setting(model, 0), sweep.seeds[0])
        preflight(build(spec, f"{model.spec_url} (sweep model {name!r})", registry))


def visible_gpus() -> list[str]:
    """CUDA device ids a worker can be pinned to with CUDA_VISIBLE_DEVICES (honouring an existing one)."""
    count = torch.cuda.device_count()
    if count < 2:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def worker_command(sweep: Sweep, out: str, trial: Trial) -> list[str]:
    """The CLI call that runs one trial alone: what a GPU worker, or a scheduler's job, executes."""
    command = [sys.executable, "-m", "genframe", "sweep", sweep.source, "--out", out, "--trial", str(trial.index),
               "--device", "cuda"]
    for item in sweep.overrides:
        command += ["--set", item]
    return command


def _launch(sweep: Sweep, out: str, trial: Trial, gpu: str) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
    subprocess.run(worker_command(sweep, out, trial), env=env, check=False)


def _run_on_gpus(sweep: Sweep, out: str, trials: list[Trial], gpus: list[str],
                 echo: Callable[[str], None]) -> list[dict]:
    """One trial per GPU at a time; the final re-runs start once the whole search has ended."""
    launch = _launch  # looked up at call time, so a test can stand in for the worker processes
    ended: list[dict] = []
    for phase in ("search", "final"):
        pending: queue.SimpleQueue[Trial] = queue.SimpleQueue()
        for t in trials:
            if t.phase != phase:
                continue
            recorded = read_result(out, t.path)
            if recorded is None:
                pending.put(t)
            elif phase == "search" or not _search_missing(sweep, out, t.model):
                try:
                    digest = spec_digest(_planned(sweep, out, t)[2])
                except NotReady:  # recorded once, but no setting qualifies any more: not current either
                    digest = ""
                _check_current(t, recorded, digest, out)

        def work(gpu: str) -> None:
            while True:
                try:
                    t = pending.get_nowait()
                except queue.Empty:
                    return
                launch(sweep, out, t, gpu)
                result = read_result(out, t.path)
                if result is None:
                    echo(f"[{t.index + 1}/{len(trials)}] {t.describe()} on GPU {gpu}: ended without a result")
                else:
                    ended.append(result)
                    echo(f"[{t.index + 1}/{len(trials)}] {t.describe()} on GPU {gpu}: "
                         f"{_outcome(result, True, sweep.metric)}")

        workers = [threading.Thread(target=work, args=(gpu,), daemon=True) for gpu in gpus]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return ended
