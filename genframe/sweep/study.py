"""The optuna strategy of a sweep: settings proposed by an Optuna study as the search goes, and
hopeless trials stopped early by its pruner.

Each model has its own study (``<strategy.study>.<model>``) in one storage: a journal file in the
sweep folder by default (any number of workers on a shared file system, no server), or a database
URL. A study's trial number ``n`` is the sweep's search trial ``<model>/search-<n>-seed<s>``, so
the sweep folder, ``--list``, the final re-runs and ``genframe table`` read an optuna sweep as they
read a random one; trials are asked for only while fewer than ``budget`` exist, and one asked in
a race past the budget is told failed at once (marked ``surplus``) and never trained.

Workers on several machines also reach the final re-runs together: each claims a final seed as a
trial of a companion study (``<strategy.study>.<model>.final``), so that no seed is trained twice.

A worker has an id (``--worker``; ``trial-K`` for ``--trial K``). The trial it is training carries
that id, its host and its process id, so a worker restarted with the same id continues its trial
from the last checkpoint instead of asking for a new one, and the study counts the trial once.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
from typing import Any

from genframe.errors import GenframeError
from genframe.ops.extras import require
from genframe.storage import RunStorage
from genframe.sweep.plan import Dimension, Model, Sweep, Trial

FEATURE = "strategy: {type: optuna}"
JOURNAL = "optuna.journal"


def _optuna():
    module = require("optuna", "optuna", FEATURE)
    module.logging.set_verbosity(module.logging.WARNING)  # genframe prints its own line per trial
    return module


def _primitive(values: tuple) -> bool:
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in values)


def distributions(model: Model) -> dict[str, Any]:
    """Optuna's distribution of each searched path. A choice among lists or mappings (Optuna's
    categorical takes scalars only) is a choice among the values' indices."""
    optuna = _optuna()
    out = {}
    for d in model.search:
        if d.kind == "choice":
            out[d.path] = optuna.distributions.CategoricalDistribution(
                list(d.values) if _primitive(d.values) else list(range(len(d.values))))
        elif d.kind == "int":
            out[d.path] = optuna.distributions.IntDistribution(int(d.values[0]), int(d.values[1]))
        else:
            out[d.path] = optuna.distributions.FloatDistribution(float(d.values[0]), float(d.values[1]),
                                                                 log=d.kind == "log_uniform")
    return out


def _value(d: Dimension, proposed: Any) -> Any:
    if d.kind == "choice" and not _primitive(d.values):
        return d.values[proposed]
    return proposed


def setting_of(model: Model, params: dict[str, Any]) -> dict[str, Any]:
    """The spec values of a study trial's parameters, in the order the random strategy lists them."""
    return {d.path: _value(d, params[d.path]) for d in sorted(model.search, key=lambda d: d.path)}


def _storage(sweep: Sweep, out: str):
    optuna = _optuna()
    url = sweep.strategy["storage"]
    if url and "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as exc:  # a missing driver, a refused connection
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise GenframeError(f"{sweep.source}: strategy.storage {url!r}: {detail}") from None
    if url is None:
        folder = RunStorage(out)
        protocols = folder.fs.protocol if isinstance(folder.fs.protocol, tuple) else (folder.fs.protocol,)
        if "file" not in protocols:
            raise GenframeError(f"{sweep.source}: strategy.storage: the default journal file needs a sweep folder "
                                f"on a (shared) file system, not {out}; give strategy.storage: sqlite:///PATH, "
                                "postgresql://... or a journal file's path")
        folder.fs.makedirs(folder.root, exist_ok=True)
        url = folder.path(JOURNAL)
    journal = optuna.storages.journal
    return optuna.storages.JournalStorage(journal.JournalFileBackend(url))


def _seed(sweep: Sweep, model: Model, worker: str = "", count: int = 0) -> int:
    """A sampler's seed for a worker's next proposal: the sweep seed, the model, the worker and the
    number of trials the study holds. A sampler seeded once would repeat its first draws in every
    process (each opens the study afresh); seeded by the count, one worker's proposals are the same
    every time, a restarted worker does not repeat a setting, and two workers asking at the same
    moment do not propose the same one."""
    key = f"genframe-sweep:{sweep.seed}:{model.name}:{worker}:{count}"
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def _sampler(sweep: Sweep, seed: int):
    optuna = _optuna()
    strategy = sweep.strategy
    startup = strategy["startup_trials"]
    if strategy["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy["sampler"] == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    require("cmaes", "optuna", "strategy.sampler: cmaes")
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)


def open_finals(sweep: Sweep, out: str, model: Model):
    """The study whose trial ``k`` is the model's final re-run with its ``k``-th final seed: asking it
    is how workers share out the re-runs (it proposes nothing)."""
    optuna = _optuna()
    return optuna.create_study(storage=_storage(sweep, out), load_if_exists=True,
                               study_name=f"{sweep.strategy['study']}.{model.name}.final",
                               sampler=optuna.samplers.RandomSampler(seed=_seed(sweep, model)),
                               direction="minimize" if sweep.mode == "min" else "maximize")


def open_study(sweep: Sweep, out: str, model: Model):
    """The model's study, created by whichever worker comes first."""
    optuna = _optuna()
    strategy, startup = sweep.strategy, sweep.strategy["startup_trials"]
    if strategy["pruner"] == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    elif strategy["pruner"] == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    else:
        pruner = optuna.pruners.NopPruner()
    return optuna.create_study(storage=_storage(sweep, out), study_name=f"{strategy['study']}.{model.name}",
                               sampler=_sampler(sweep, _seed(sweep, model)), pruner=pruner, load_if_exists=True,
                               direction="minimize" if sweep.mode == "min" else "maximize")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(study, sweep: Sweep, model: Model, worker: str, *, finals: bool = False):
    """This worker's unfinished trial of ``study`` (a restarted worker continues it), else a new one
    while fewer than the budget exist (``finals``: the study of the final re-runs, one trial per
    final seed, which proposes nothing), else None."""
    budget = len(sweep.final_seeds) if finals else sweep.budget
    optuna = _optuna()
    host = socket.gethostname()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    mine = [t for t in running if t.user_attrs.get("worker") == worker and t.number < budget]
    if mine:
        frozen = mine[0]
        pid = frozen.user_attrs.get("pid")
        if frozen.user_attrs.get("host") == host and pid not in (None, os.getpid()) and _alive(pid):
            raise GenframeError(f"worker {worker!r} (process {pid} on this machine) is training trial "
                                f"{frozen.number} of model {model.name!r}; give each worker its own --worker")
        trial = optuna.trial.Trial(study, frozen._trial_id)  # Optuna has no public handle from a number
    else:
        taken = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
        if len(taken) >= budget:  # trials enqueued by hand (WAITING) are the next ones asked for, not extra
            return None
        if not finals:
            study.sampler = _sampler(sweep, _seed(sweep, model, worker, len(study.get_trials(deepcopy=False))))
        trial = study.ask({} if finals else distributions(model))
        if trial.number >= budget:  # another worker asked in the same instant for the last place
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
        trial.set_user_attr("worker", worker)
    trial.set_user_attr("host", host)
    trial.set_user_attr("pid", os.getpid())
    return trial


def trial_of(sweep: Sweep, model: Model, number: int) -> Trial:
    """The sweep's search trial that study trial ``number`` fills."""
    return next(t for t in sweep.trials() if t.phase == "search" and t.model == model.name and t.setting == number)


def final_of(sweep: Sweep, model: Model, number: int) -> Trial:
    """The sweep's final re-run that trial ``number`` of the model's finals study stands for."""
    return [t for t in sweep.trials() if t.phase == "final" and t.model == model.name][number]


def pruner(trial, metric: str, name: str, reported: int):
    """The engine's ``prune`` rule for ``trial``: each evaluation's ``metric`` reported as the
    trial's next step (``reported``: evaluations an interrupted attempt already reported)."""
    count = [reported]

    def prune(stage: str, step: int, results: dict[str, float]) -> str | None:
        value = results.get(metric)
        if value is None:
            return None  # the evaluation failed: nothing to judge by
        if not math.isfinite(value):
            return f"{metric} is {value} at stage {stage!r}, step {step}"
        count[0] += 1
        trial.report(value, count[0])
        if trial.should_prune():
            return (f"the {name} pruner stopped it at its evaluation {count[0]} ({metric} {value:.4g} at stage "
                    f"{stage!r}, step {step})")
        return None

    return prune


def tell(study, trial, status: str, value: float | None) -> None:
    optuna = _optuna()
    state = {"ok": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}.get(
        status, optuna.trial.TrialState.FAIL)
    study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state,
               skip_if_finished=True)
