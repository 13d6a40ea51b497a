"""Seeded hyper-parameter sweeps: the comparison protocol of Lucic et al. (2018) from one YAML file.

Every model (a base spec, or one spec with alternative fixed overrides) is trained under
``budget`` settings drawn from its search space, each with several seeds; the best setting by an
evaluation metric is then trained again with fresh seeds, and those runs give the reported
mean +- std (``genframe table``). Fresh seeds matter: the search seeds are the ones selection
looked at, so their numbers are optimistically biased.

This module reads and checks the sweep file and derives its trial list, a pure function of the
file: setting ``j`` of model ``m`` is drawn from a random stream seeded by (sweep seed, model
name, j) alone, so it does not depend on how the sweep is started, on the budget, or on the other
models, and raising the budget keeps finished trials valid. Running the trials is ``run.py``'s
work, reading their results ``results.py``'s.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
import random
import re
from typing import Any, Iterable

import attrs
import jsonschema

from genframe.build.system import build, reference_data
from genframe.errors import GenframeError, SpecError
from genframe.ops import log
from genframe.components.registry import Registry, get_registry
from genframe.spec.load import (SpecValidator, apply_overrides, build_schema, check_schema, load_spec, load_yaml,
                                parse_yaml, read_text)

SWEEP_FORMAT = 1
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
_STRATEGY = {
    "type": "object", "additionalProperties": False, "required": ["type"],
    "description": "How settings are chosen: random (the Lucic protocol: settings drawn up front, each trained "
                   "to the end) or optuna (later settings learn from earlier ones; hopeless ones are pruned).",
    "properties": {
        "type": {"enum": ["random", "optuna"]},
        "sampler": {"enum": ["random", "tpe", "cmaes"], "default": "tpe",
                    "description": "optuna: how the next setting is proposed"},
        "pruner": {"enum": ["none", "median", "hyperband"], "default": "hyperband",
                   "description": "optuna: what stops a trial early, judged at each of its evaluations"},
        "startup_trials": {"type": "integer", "minimum": 0, "default": 3,
                           "description": "optuna: trials that run to the end before the pruner judges (median), "
                                          "and random settings before the sampler models them (tpe)"},
        "storage": {"type": ["string", "null"], "default": None,
                    "description": "optuna: a database URL (sqlite:///PATH, postgresql://USER@HOST/DB) or a journal "
                                   "file's path; default: optuna.journal in the sweep folder"},
        "study": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                  "description": "optuna: prefix of the studies' names, one per model (default: the sweep "
                                 "file's name)"},
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
        "strategy": _STRATEGY,
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
    #: ``{"type": "random"}``, or the optuna strategy with every default written out
    strategy: dict = attrs.field(factory=lambda: {"type": "random"})

    @property
    def adaptive(self) -> bool:
        """Whether settings come from an Optuna study as the search goes (not drawn up front)."""
        return self.strategy["type"] == "optuna"

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
            if t.phase == "search" and not self.adaptive:  # an adaptive search's settings are its results'
                row["params"] = self.setting(self.model(t.model), t.setting)
            trials.append(row)
        return {
            "format": SWEEP_FORMAT, "source": self.source, "overrides": list(self.overrides), "seed": self.seed,
            "strategy": self.strategy,
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
    own, spec_level = _split_overrides(overrides)
    data = apply_overrides(parse_yaml(read_text(url), url), own, url)
    check_schema(data, SpecValidator(SWEEP_SCHEMA), url)
    validator = SpecValidator(build_schema(registry))
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
        fixed = {**data.get("set", {}), **entry.get("set", {}), **spec_level}
        set_fields = {p: ("--set" if p in spec_level else f"{where}.set.{p}" if p in entry.get("set", {})
                          else f"set.{p}") for p in fixed}
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
    _warn_unless_one_reference(models, url)
    label = data.get("label") or str(models[0].spec["data"]["type"])
    strategy = _strategy(data.get("strategy", {"type": "random"}), seeds, url)
    sweep = Sweep(url, data.get("seed", 0), label, tuple(models), data["budget"], seeds, final_seeds,
                  metric, mode, overrides, strategy)
    for i, model in enumerate(sweep.models):
        fields = {d.path: d.field for d in model.search}
        for j in range(sweep.budget):
            params = sweep.setting(model, j)
            _check_spec(sweep.trial_spec(model, params, seeds[0]), model.name, f"setting {j} ({_short(params)})",
                        fields, url, f"models[{i}]", validator, registry)
    return sweep


def _warn_unless_one_reference(models: list[Model], source: str) -> None:
    """Models that compare with different real images (another size, subset or split) are measured
    against different references, and by different judges where the features learn from them (the
    classifier): the sweep still runs, since such a comparison can be wanted, but not unannounced."""
    references = {m.name: reference_data(m.resolved) for m in models}
    first = models[0].name
    for name, reference in references.items():
        differing = sorted(k for k in set(reference) | set(references[first])
                           if reference.get(k) != references[first].get(k))
        if differing:
            field = differing[0]
            log.warning(f"{source}: model {name!r} compares with other real images than {first!r} (data.{field}: "
                        f"{reference.get(field)!r} against {references[first].get(field)!r}), so their metrics "
                        "are not measured alike; set evaluation.data to make them one reference")
            return


def _strategy(given: dict, seeds: tuple[int, ...], source: str) -> dict:
    """The strategy with its defaults written out (they are recorded in sweep.json)."""
    if given["type"] == "random":
        extra = sorted(set(given) - {"type"})
        if extra:
            raise SpecError(f"{', '.join(extra)} applies to type: optuna only", source=source,
                            path=f"strategy.{extra[0]}")
        return {"type": "random"}
    if len(seeds) > 1:
        raise SpecError("an optuna search trains each setting once: give seeds: 1 (the final re-runs give the "
                        "seeds that the table reports)", source=source, path="seeds")
    defaults = {k: v["default"] for k, v in _STRATEGY["properties"].items() if "default" in v}
    stem = posixpath.splitext(posixpath.basename(source))[0]
    return {**defaults, "study": re.sub(r"[^A-Za-z0-9_.-]", "-", stem) or "sweep", **given}


def _split_overrides(overrides: tuple[str, ...]) -> tuple[list[str], dict[str, Any]]:
    """(overrides of the sweep file, overrides of every model's spec): a path that starts with a field
    of the sweep file (budget, final.seeds, set.x...) changes the sweep; any other path (data.type,
    stages.0.trainer.steps) changes the spec of every model, after the sweep's own set."""
    own, spec_level = [], {}
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or path.strip().split(".")[0] in SWEEP_SCHEMA["properties"]:
            own.append(item)
        else:
            spec_level[path.strip()] = load_yaml(raw, f"--set {path.strip()}") if raw.strip() else ""
    return own, spec_level


def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{p}={_fmt(v)}" for p, v in params.items()) or "no searched fields"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return value if isinstance(value, str) else json.dumps(value)
