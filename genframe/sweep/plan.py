"""Seeded hyper-parameter sweeps: the comparison protocol of Lucic et al. (2018) from one YAML file.

Every model (a base spec, or one spec with alternative fixed overrides) is trained under
``budget`` settings drawn from its search space, each with several seeds; the best setting by an
evaluation metric is then trained again with fresh seeds, and those runs give the reported
mean +- std (``genframe table``). Fresh seeds matter: the search seeds are the ones selection
looked at, so their numbers are optimistically biased.

The trial list is a pure function of the sweep file: setting ``j`` of model ``m`` is drawn from a
random stream seeded by (sweep seed, model name, j) alone, so it does not depend on how the sweep
is started, on the budget, or on the other models, and raising the budget keeps finished trials
valid. Each trial is one run folder plus a ``result.json`` written atomically when it ends; a
trial with a result is skipped on restart, and one interrupted half-way resumes from its last
checkpoint. Trials can therefore run in one process, one per GPU, or as independent jobs
(``--trial K``) of any scheduler, all writing into the same sweep folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import posixpath
import queue
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime
from typing import Any, Callable, Iterable

import attrs
import jsonschema
import torch

from genframe.build.system import build
from genframe.errors import GenframeError, SpecError
from genframe.components.registry import Registry, get_registry
from genframe.spec.load import apply_overrides, build_schema, check_schema, load_spec, parse_yaml, read_text
from genframe.storage import RunStorage

SWEEP_FORMAT = 1
RESULT = "result.json"
DISTRIBUTIONS = ("choice", "uniform", "log_uniform", "int")

_PATH = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_PAIR = {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}], "items": False,
         "minItems": 2, "maxItems": 2}
_INT_PAIR = {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}], "items": False,
             "minItems": 2, "maxItems": 2}
_SEARCH = {
    "type": "object", "propertyNames": {"pattern": _PATH},
    "description": "Dotted spec paths (as for --set) -> one distribution.",
    "additionalProperties": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "choice": {"type": "array", "description": "one of these values, each equally likely"},
            "uniform": {**_PAIR, "description": "[low, high): uniform"},
            "log_uniform": {**_PAIR, "description": "[low, high), both positive: uniform in log space"},
            "int": {**_INT_PAIR, "description": "[low, high], both included: uniform integer"},
        },
    },
}
_SET = {"type": "object", "propertyNames": {"pattern": _PATH},
        "description": "Dotted spec paths -> fixed values, applied before the search."}
_SEEDS = {"type": ["integer", "array"], "if": {"type": "integer"}, "then": {"minimum": 1},
          "else": {"items": {"type": "integer", "minimum": 0}, "minItems": 1, "uniqueItems": True}}
_MODEL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                 "description": "folder name of the model's trials (default: the spec file's stem)"},
        "label": {"type": "string", "description": "row label in the table (default: the name)"},
        "spec": {"type": "string", "description": "base spec, relative to the sweep file"},
        "set": _SET,
        "search": _SEARCH,
    },
}
SWEEP_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "genframe sweep",
    "type": "object", "additionalProperties": False, "required": ["models", "budget", "select"],
    "properties": {
        "seed": {"type": "integer", "minimum": 0, "default": 0, "description": "seeds the drawing of settings"},
        "label": {"type": "string", "description": "the table's column heading (default: the data set's type)"},
        "spec": {"type": "string", "description": "base spec of models that name none (one spec, alternatives)"},
        "set": _SET,
        "search": _SEARCH,
        "models": {"type": "array", "minItems": 1,
                   "items": {"type": ["string", "object"], "if": {"type": "object"}, "then": _MODEL}},
        "budget": {"type": "integer", "minimum": 1, "description": "settings drawn per model"},
        "seeds": {**_SEEDS, "default": 1, "description": "seeds of each setting: a count (0..n-1) or a list"},
        "select": {"type": "object", "additionalProperties": False, "required": ["metric"],
                   "properties": {"metric": {"type": "string"}, "mode": {"enum": ["min", "max"], "default": "min"}}},
        "final": {"type": "object", "additionalProperties": False, "required": ["seeds"],
                  "properties": {"seeds": {**_SEEDS, "description":
                                           "a count (seeds after the search's) or a list"}}},
    },
}


# --------------------------------------------------------------------------- the sweep file


@attrs.frozen
class Dimension:
    """One searched field: a dotted spec path and its distribution."""

    path: str
    kind: str
    values: tuple
    field: str  # where the sweep file declares it, for error messages

    def draw(self, u: float) -> Any:
        """The value at quantile ``u`` in [0, 1): one uniform number per dimension keeps draws stable."""
        if self.kind == "choice":
            return copy.deepcopy(self.values[min(int(u * len(self.values)), len(self.values) - 1)])
        low, high = self.values
        if self.kind == "uniform":
            return low + (high - low) * u
        if self.kind == "log_uniform":
            return min(math.exp(math.log(low) + (math.log(high) - math.log(low)) * u), high)
        return low + min(int(u * (high - low + 1)), high - low)

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice {json.dumps(list(self.values))}"
        bracket = "]" if self.kind == "int" else ")"
        return f"{self.kind} [{self.values[0]:g}, {self.values[1]:g}{bracket}"


@attrs.frozen
class Model:
    """One row of the table: a base spec, the sweep's fixed values for it, and its search space."""

    name: str
    label: str
    spec_url: str
    spec: dict       # the base spec with the sweep's fixed values
    resolved: dict   # the same with every default written out: where paths into defaults resolve
    search: tuple[Dimension, ...]
    fixed: dict


@attrs.frozen
class Trial:
    """One run of the sweep; ``index`` is what ``--trial`` takes."""

    index: int
    phase: str            # "search" or "final"
    model: str
    setting: int | None   # None for final re-runs: the best setting is known only once the search ends
    seed: int
    path: str             # run folder, relative to the sweep folder

    def describe(self) -> str:
        what = f"setting {self.setting}" if self.phase == "search" else "best setting"
        return f"trial {self.index} ({self.model}, {self.phase}, {what}, seed {self.seed})"


@attrs.frozen
class Sweep:
    """A checked sweep file: everything that decides the trial list and how trials are compared."""

    source: str
    seed: int
    label: str
    models: tuple[Model, ...]
    budget: int
    seeds: tuple[int, ...]
    final_seeds: tuple[int, ...]
    metric: str
    mode: str
    overrides: tuple[str, ...] = ()

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)

    def setting(self, model: Model, index: int) -> dict[str, Any]:
        """Setting ``index`` of ``model``: depends on the sweep seed, the model's name and ``index`` only."""
        rng = random.Random(f"genframe-sweep:{self.seed}:{model.name}:{index}")
        return {d.path: d.draw(rng.random()) for d in sorted(model.search, key=lambda d: d.path)}

    def trials(self) -> list[Trial]:
        """Search trials setting by setting (an interrupted sweep has spent the same budget on every
        model), then the final re-runs model by model."""
        out: list[Trial] = []
        for j in range(self.budget):
            for m in self.models:
                for s in self.seeds:
                    out.append(Trial(len(out), "search", m.name, j, s, f"{m.name}/search-{j:04d}-seed{s}"))
        for m in self.models:
            for s in self.final_seeds:
                out.append(Trial(len(out), "final", m.name, None, s, f"{m.name}/final-seed{s}"))
        return out

    def trial_spec(self, model: Model, params: dict[str, Any], seed: int) -> dict:
        spec = copy.deepcopy(model.spec)
        for path, value in params.items():
            _place(spec, model.resolved, path, value)
        spec["seed"] = seed
        return spec

    def describe(self) -> dict:
        """What ``sweep.json`` records: the protocol, the models and every trial, for ``genframe table``."""
        trials = []
        for t in self.trials():
            row = attrs.asdict(t)
            if t.phase == "search":
                row["params"] = self.setting(self.model(t.model), t.setting)
            trials.append(row)
        return {
            "format": SWEEP_FORMAT, "source": self.source, "overrides": list(self.overrides), "seed": self.seed,
            "label": self.label, "metric": self.metric, "mode": self.mode, "budget": self.budget,
            "seeds": list(self.seeds), "final_seeds": list(self.final_seeds),
            "models": [{"name": m.name, "label": m.label, "spec": m.spec_url, "set": m.fixed,
                        "search": {d.path: d.describe() for d in m.search}} for m in self.models],
            "trials": trials,
        }


class _Unresolved(Exception):
    """A dotted path that names no field of the spec."""


def _place(spec: dict, resolved: Any, path: str, value: Any) -> None:
    """Set ``path`` in ``spec``; parts the spec leaves to defaults are first copied from ``resolved``.

    So ``stages.0.trainer.optimizer.betas.0`` works when the spec omits the optimizer, and a path
    that exists in neither (a typo, a field of another component type) is refused.
    """
    keys = path.split(".")
    node, full = spec, resolved
    for depth, key in enumerate(keys):
        here = ".".join(keys[:depth]) or "the spec"
        if isinstance(node, list):
            if not re.fullmatch(r"[0-9]+", key) or int(key) >= len(node):
                raise _Unresolved(f"{here} is a list of {len(node)} items, it has no item {key!r}")
            slot: Any = int(key)
            child_full = full[slot] if isinstance(full, list) and slot < len(full) else None
        elif isinstance(node, dict):
            known = set(node) | (set(full) if isinstance(full, dict) else set())
            if key not in known:
                raise _Unresolved(f"{here} has no field {key!r}; its fields: {', '.join(sorted(known))}")
            if key not in node:
                node[key] = copy.deepcopy(full[key])
            slot, child_full = key, (full.get(key) if isinstance(full, dict) else None)
        else:
            raise _Unresolved(f"{here} is {json.dumps(node)}, it has no field {key!r}")
        if depth == len(keys) - 1:
            node[slot] = copy.deepcopy(value)
        else:
            node, full = node[slot], child_full


def _relative_to(sweep_url: str, path: str) -> str:
    """A base spec's location: paths are relative to the sweep file, like includes in most tools."""
    if "://" in path or path.startswith("/"):
        return path
    protocol, sep, rest = sweep_url.rpartition("://")
    folder = posixpath.dirname(rest if sep else sweep_url)
    joined = posixpath.normpath(posixpath.join(folder, path))
    return f"{protocol}://{joined}" if sep else joined


def _seed_list(value: int | list[int], start: int = 0) -> tuple[int, ...]:
    return tuple(range(start, start + value)) if isinstance(value, int) else tuple(value)


def _dimension(path: str, spec: dict, field: str, source: str) -> Dimension:
    """Check one distribution beyond its shape: a range must not be empty, log bounds must be positive."""
    if path == "seed":
        raise SpecError("the seed is set by the sweep's seeds, not searched", source=source, path=field)
    if len(spec) != 1:
        raise SpecError(f"give exactly one distribution ({', '.join(DISTRIBUTIONS)}), found "
                        f"{', '.join(spec) or 'none'}", source=source, path=field)
    (kind, values), = spec.items()
    where = f"{field}.{kind}"
    if kind == "choice":
        if not values:
            raise SpecError("empty choice: give at least one value", source=source, path=where)
        return Dimension(path, kind, tuple(values), field)
    low, high = (int(v) for v in values) if kind == "int" else values
    if not all(math.isfinite(v) for v in (low, high)):
        raise SpecError(f"bounds must be finite, found [{low}, {high}]", source=source, path=where)
    if low > high:
        raise SpecError(f"low {low} > high {high}", source=source, path=where)
    if kind != "int" and low == high:
        raise SpecError(f"empty range [{low}, {high}); to fix the value, move it to set", source=source, path=where)
    if kind == "log_uniform" and low <= 0:
        raise SpecError(f"log_uniform needs positive bounds, found [{low}, {high}]", source=source, path=where)
    return Dimension(path, kind, (low, high), field)


def _blame(error: GenframeError, fields: dict[str, str]) -> str | None:
    """The sweep field responsible for a spec error: the one whose path contains or is inside its path."""
    spec_path = getattr(error, "path", None)
    if not spec_path:
        return None
    dotted = re.sub(r"\[([0-9]+)\]", r".\1", spec_path)
    for path, field in fields.items():
        if dotted == path or dotted.startswith(path + ".") or path.startswith(dotted + "."):
            return field
    return None


def _check_spec(spec: dict, model_name: str, what: str, fields: dict[str, str], source: str, where: str,
                validator: jsonschema.Draft202012Validator, registry: Registry) -> dict:
    """Validate and build a spec the sweep produced; an error names the sweep field at fault."""
    try:
        check_schema(spec, validator, f"model {model_name}")
        return build(spec, f"model {model_name}", registry).resolved_spec()
    except GenframeError as exc:
        detail = f"{exc.path}: {exc.detail}" if isinstance(exc, SpecError) and exc.path else \
            getattr(exc, "detail", str(exc))
        field = _blame(exc, fields) or where
        raise SpecError(f"{what} gives model {model_name!r} an invalid spec: {detail}",
                        source=source, path=field) from None


def load_sweep(url: str, overrides: Iterable[str] = (), registry: Registry | None = None) -> Sweep:
    """Read and check a sweep completely: every setting of every model is built before any trial runs."""
    registry = registry or get_registry()
    overrides = tuple(overrides)
    data = apply_overrides(parse_yaml(read_text(url), url), overrides, url)
    check_schema(data, jsonschema.Draft202012Validator(SWEEP_SCHEMA), url)
    validator = jsonschema.Draft202012Validator(build_schema(registry))
    top_search = {p: _dimension(p, d, f"search.{p}", url) for p, d in data.get("search", {}).items()}
    seeds = _seed_list(data.get("seeds", 1))
    final = data.get("final")
    final_seeds = _seed_list(final["seeds"], max(seeds) + 1) if final else ()
    metric, mode = data["select"]["metric"], data["select"].get("mode", "min")
    models: list[Model] = []
    for i, entry in enumerate(data["models"]):
        entry = {"spec": entry} if isinstance(entry, str) else entry
        where = f"models[{i}]"
        spec_path = entry.get("spec", data.get("spec"))
        if spec_path is None:
            raise SpecError("no spec: give this model a spec, or the sweep a top-level spec",
                            source=url, path=f"{where}.spec")
        spec_url = _relative_to(url, spec_path)
        name = entry.get("name") or posixpath.splitext(posixpath.basename(spec_url))[0]
        if any(m.name == name for m in models):
            raise SpecError(f"model name {name!r} is used twice; give each model its own name",
                            source=url, path=f"{where}.name")
        try:
            base = load_spec(spec_url, registry=registry)
        except GenframeError as exc:
            raise SpecError(f"base spec: {exc}", source=url, path=f"{where}.spec") from None
        spec = copy.deepcopy(base)
        resolved = build(base, spec_url, registry).resolved_spec()
        fixed = {**data.get("set", {}), **entry.get("set", {})}
        set_fields = {p: (f"{where}.set.{p}" if p in entry.get("set", {}) else f"set.{p}") for p in fixed}
        for path, value in fixed.items():
            if path == "seed":
                raise SpecError("the seed is set by the sweep's seeds", source=url, path=set_fields[path])
            try:
                _place(spec, resolved, path, value)
            except _Unresolved as exc:
                raise SpecError(f"no such field in {spec_url}: {exc}", source=url, path=set_fields[path]) from None
        resolved = _check_spec(spec, name, "set", set_fields, url, where, validator, registry)
        if not resolved["evaluation"]["metrics"]:
            raise SpecError(f"{spec_url} computes no evaluation metrics, so its trials cannot be compared on "
                            f"{metric!r}; add them with set: {{evaluation.metrics: [...]}}", source=url, path=where)
        search = dict(top_search)
        for p, d in entry.get("search", {}).items():
            search[p] = _dimension(p, d, f"{where}.search.{p}", url)
        for dim in search.values():
            try:
                _place(copy.deepcopy(spec), resolved, dim.path, None)
            except _Unresolved as exc:
                raise SpecError(f"no such field in the spec of model {name!r} ({spec_url}): {exc}",
                                source=url, path=dim.field) from None
        models.append(Model(name, entry.get("label", name), spec_url, spec, resolved,
                            tuple(search.values()), fixed))
    label = data.get("label") or str(models[0].spec["data"]["type"])
    sweep = Sweep(url, data.get("seed", 0), label, tuple(models), data["budget"], seeds, final_seeds,
                  metric, mode, overrides)
    for i, model in enumerate(sweep.models):
        fields = {d.path: d.field for d in model.search}
        for j in range(sweep.budget):
            params = sweep.setting(model, j)
            _check_spec(sweep.trial_spec(model, params, seeds[0]), model.name, f"setting {j} ({_short(params)})",
                        fields, url, f"models[{i}]", validator, registry)
    return sweep


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{p}={_fmt(v)}" for p, v in params.items()) or "no searched fields"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- results


def spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def read_result(out: str, trial_path: str) -> dict | None:
    storage = RunStorage(f"{out.rstrip('/')}/{trial_path}")
    if not storage.exists(RESULT):
        return None
    try:
        return storage.read_json(RESULT)
    except ValueError as exc:
        raise GenframeError(f"{storage.url}/{RESULT}: unreadable ({exc}); delete it to run the trial again") from None


def setting_scores(results: list[dict]) -> dict[int, float]:
    """Mean metric of each setting over its seeds; a setting that failed for any seed is not eligible."""
    by_setting: dict[int, list[dict]] = {}
    for r in results:
        by_setting.setdefault(r["setting"], []).append(r)
    return {j: statistics.fmean(r["value"] for r in rs) for j, rs in sorted(by_setting.items())
            if all(r["status"] == "ok" for r in rs)}


def best_setting(scores: dict[int, float], mode: str) -> int | None:
    """The best-scoring setting; ties go to the lower index, so the choice is deterministic."""
    if not scores:
        return None
    sign = 1 if mode == "min" else -1
    return min(scores, key=lambda j: (sign * scores[j], j))


def expected_best(values: list[float], budget: int, mode: str) -> float:
    """Expected best of ``budget`` settings picked at random without replacement from ``values``.

    Lucic et al. estimate this by bootstrap (their figure of FID against budget); it has a closed
    form: the i-th best of n values is the best of a random b-subset with probability
    C(n - i, b - 1) / C(n, b).
    """
    ordered = sorted(values, reverse=mode == "max")
    n = len(ordered)
    total = math.comb(n, budget)
    return sum(v * math.comb(n - i, budget - 1) for i, v in enumerate(ordered, start=1)) / total


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
    return best, sweep.setting(model, best)


def _search_missing(sweep: Sweep, out: str, model: str) -> bool:
    return any(read_result(out, t.path) is None for t in sweep.trials() if t.phase == "search" and t.model == model)


# --------------------------------------------------------------------------- running trials


def _silent(line: str) -> None:
    pass


def _last_evaluation(records: list[dict]) -> dict[str, float]:
    """Results of the run's last evaluation: the final model is what a trial is judged by."""
    for record in reversed(records):
        if record.get("event") == "evaluation":
            return {k: v for k, v in record.items() if k not in ("stage", "step", "event")}
    return {}


def _interrupted(exc: BaseException) -> bool:
    """The engine turns Ctrl-C into a GenframeError; that stops the sweep instead of failing the trial."""
    return isinstance(exc.__context__, KeyboardInterrupt) or isinstance(exc.__cause__, KeyboardInterrupt)


def _check_current(trial: Trial, recorded: dict, digest: str, out: str) -> None:
    if recorded.get("spec_sha256") != digest:
        raise GenframeError(f"{out}/{trial.path}: {trial.describe()} was run from a different spec (the sweep, "
                            "a base spec or, for a final re-run, the best setting changed since); use another "
                            "--out, or delete that folder to run it again")


def _planned(sweep: Sweep, out: str, trial: Trial) -> tuple[int, dict[str, Any], dict]:
    """(setting, its values, the spec) that ``trial`` trains now."""
    model = sweep.model(trial.model)
    if trial.phase == "search":
        setting, params = trial.setting, sweep.setting(model, trial.setting)
    else:
        setting, params = _final_choice(sweep, out, model)
    return setting, params, sweep.trial_spec(model, params, trial.seed)


def run_trial(sweep: Sweep, out: str, trial: Trial, *, device: str | None = None,
              registry: Registry | None = None) -> tuple[dict, bool]:
    """Run one trial into its folder unless it has a result; returns (result, whether it ran now)."""
    from genframe.training.engine import run

    registry = registry or get_registry()
    model = sweep.model(trial.model)
    setting, params, spec = _planned(sweep, out, trial)
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
        run(system, out=None if resume else url, device=device, resume=resume, registry=registry)
        results = _last_evaluation(storage.read_log())
        protocol = results.pop("protocol", None)  # what the metrics depended on, as the engine logs it
        value = results.get(sweep.metric)
        if value is None:
            error = (f"the run reported no {sweep.metric!r} (its last evaluation gave "
                     f"{', '.join(results) or 'nothing'})")
        elif not math.isfinite(value):
            error = f"{sweep.metric} is {value}"
        else:
            error = None
        result.update(status="failed" if error else "ok", value=value if error is None else None,
                      results=results, error=error, protocol=protocol,
                      metrics=spec.get("evaluation", {}).get("metrics", []))
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


def _outcome(result: dict, ran: bool, metric: str) -> str:
    if not ran:
        return f"finished earlier ({result['status']})"
    if result["status"] == "ok":
        return f"{metric}={result['value']:.6g} ({result['seconds']:.1f} s)"
    return f"failed: {result['error']}"


def default_out(sweep_url: str) -> str:
    """Fixed (no timestamp), so that independent jobs started from the same file share one folder."""
    return f"runs/sweeps/{posixpath.splitext(posixpath.basename(sweep_url))[0]}"


def run_sweep(sweep: Sweep, out: str, *, trial: int | None = None, device: str | None = None,
              registry: Registry | None = None, echo: Callable[[str], None] = _silent) -> list[dict]:
    """Run the sweep's trials (or only ``trial``) into ``out``; returns the results of those that ended now.

    Several visible GPUs and no explicit device or trial: one worker process per GPU (they load
    plugins from entry points, so a ``registry`` given in code keeps the sweep in this process).
    """
    trials = sweep.trials()
    if trial is not None and not 0 <= trial < len(trials):
        raise GenframeError(f"--trial {trial}: the sweep has {len(trials)} trials, 0..{len(trials) - 1}")
    out = out.rstrip("/")
    RunStorage(out).write_json("sweep.json", sweep.describe())
    if trial is None and registry is None and device in (None, "auto", "cuda"):
        gpus = visible_gpus()
        if gpus:
            return _run_on_gpus(sweep, out, trials, gpus, echo)
    ended: list[dict] = []
    for t in ([trials[trial]] if trial is not None else trials):
        head = f"[{t.index + 1}/{len(trials)}] {t.model} {t.phase} " + \
            (f"setting {t.setting}" if t.phase == "search" else "best setting") + f" seed {t.seed}"
        try:
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


# --------------------------------------------------------------------------- the summary behind the table


def summarise(out: str) -> dict:
    """Per model: the best setting, the reported mean +- std, and the search's scores, from a sweep folder."""
    storage = RunStorage(out.rstrip("/"))
    if not storage.exists("sweep.json"):
        raise GenframeError(f"{out}: not a sweep folder (no sweep.json); run genframe sweep SWEEP.yaml --out {out}")
    plan = storage.read_json("sweep.json")
    results = {t["index"]: read_result(out, t["path"]) for t in plan["trials"]}
    rows = []
    for model in plan["models"]:
        search = [t for t in plan["trials"] if t["model"] == model["name"] and t["phase"] == "search"]
        finals = [t for t in plan["trials"] if t["model"] == model["name"] and t["phase"] == "final"]
        done = [results[t["index"]] for t in search if results[t["index"]] is not None]
        scores = setting_scores(done)
        complete = {t["setting"] for t in search} - {t["setting"] for t in search if results[t["index"]] is None}
        scores = {j: v for j, v in scores.items() if j in complete}
        failed = {r["setting"] for r in done if r["status"] != "ok"}
        best = best_setting(scores, plan["mode"])
        if finals:
            reported = [results[t["index"]] for t in finals if results[t["index"]] is not None]
            planned = len(finals)
            if reported:
                best = reported[0]["setting"]
        else:
            reported = [r for r in done if r["setting"] == best]
            planned = len(plan["seeds"])
        values = [r["value"] for r in reported if r["status"] == "ok"]
        params = next((t["params"] for t in search if t["setting"] == best), {}) if best is not None else {}
        metrics = next((r["metrics"] for r in reported + done if r.get("metrics")), [])
        rows.append({
            "name": model["name"], "label": model["label"], "spec": model["spec"], "search": model["search"],
            "best_setting": best, "params": params, "values": values,
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "seeds_ok": len(values), "seeds_done": len(reported), "seeds_planned": planned,
            "reported_on": "final" if finals else "search",
            "settings_ok": len(scores), "settings_failed": len(failed),
            "settings_pending": plan["budget"] - len(complete),
            "scores": scores, "metrics": metrics,
            "errors": sorted({r["error"] for r in done + reported if r["status"] != "ok"}),
        })
    return {"protocol": {k: plan[k] for k in ("source", "seed", "label", "metric", "mode", "budget", "seeds",
                                              "final_seeds")}, "models": rows}
