"""The run engine: stages in order, logging, evaluation, checkpoints, resume.

The engine owns the loop and everything around a training step (device, seeds, when to log,
evaluate and checkpoint); a trainer owns what one step does. It never asks which model it runs.
"""

from __future__ import annotations

import json
import math
import random
import time
from datetime import datetime
from typing import Any, Callable

import attrs
import numpy as np
import torch

from genframe.build.context import BuildContext
from genframe.build.dry_run import dry_run
from genframe.build.preflight import preflight
from genframe.build.prepare import compile_components, prepare, resolve_device, restore_components
from genframe.build.sampler import Sampler
from genframe.build.system import System, build, walk
from genframe.components.hooks import RunInfo
from genframe.components.params import ref_read_only, ref_roles
from genframe.components.registry import Registry, get_registry
from genframe.components.roles import ModuleComponent
from genframe._version import __version__
from genframe.errors import GenframeError
from genframe.evaluation.metrics import compute_metrics
from genframe.ops import distributed, log
from genframe.ops.denormals import denormals_flushed
from genframe.ops.images import image_grid, png_bytes, to_uint8
from genframe.ops.precision import RUN_DTYPES, at_least_float32, default_dtype
from genframe.storage import RunStorage
from genframe.training import graphs
from genframe.training.context import StageContext
from genframe.training.graphs import StepRunner

FIXED_NOISE_SEED = 1234  # sample grids use the same noise at every evaluation, so progress is comparable
INTERPOLATION_ROWS, INTERPOLATION_STEPS = 6, 10  # the interpolation strips written at each evaluation


def hardware(device: torch.device) -> dict:
    """What the run ran on, for the run folder and the report."""
    import os
    import platform

    info = {"device": str(device), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def set_matmul_precision(precision: str, device: torch.device) -> None:
    """``tf32`` lets CUDA matmuls and convolutions use TensorFloat-32; the other settings keep full float32."""
    if device.type == "cuda":
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_stage(seed: int, index: int) -> None:
    """Seed the global random streams for stage ``index`` (after the first) from the run's seed and
    the index alone: a stage then draws the same numbers however many its predecessors drew, so
    changing an earlier stage's length leaves its noise alone, and a run that starts at a stage
    boundary (resumed there, or reusing an earlier run's stages) needs no random state from before it."""
    seed_everything(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


def rng_state() -> dict:
    """Global random states in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def default_run_url(name: str) -> str:
    return f"runs/{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


class Run:
    """One execution of a system into a run folder (observer hooks receive its ``info``)."""

    def __init__(self, system: System, storage: RunStorage, device: torch.device, registry: Registry,
                 resumed: bool):
        self.system = system
        self.spec = system.resolved_spec()
        self.storage = storage
        self.device = device
        self.registry = registry
        self.resumed = resumed
        self.started = time.time()
        self.build_ctx: BuildContext | None = None
        self.resume_point: tuple[int, int] | None = None  # (stage, step) of the checkpoint resumed from
        self.world = distributed.current()  # this process's rank among those training the run
        self.graph_mode = graphs.resolve_mode(system.cuda_graphs, device)  # off, cuda, emulate
        self._hooks = _IsolatedHooks(registry)
        self.metric_data: tuple[torch.Tensor, torch.Tensor | None] | None = None  # what metrics compare with
        self.prune: Pruner | None = None
        #: "completed", or "pruned" when ``prune`` ended it early (``pruned`` then says why)
        self.status: str | None = None
        self.pruned: str | None = None

    @property
    def name(self) -> str:
        return self.system.name

    @property
    def hook(self):
        """The observer hooks; silent outside rank 0, so that one process reports a distributed run."""
        return self._hooks if self.world.is_main else _SILENT_HOOKS

    @property
    def url(self) -> str:
        return self.storage.url

    @property
    def info(self) -> RunInfo:
        """This run as observer hooks see it: a frozen value, not this object."""
        return RunInfo(name=self.name, url=self.url, spec=self.spec, device=str(self.device), resumed=self.resumed,
                       resume_point=self.resume_point, world_size=self.world.size, rank=self.world.rank)


class _SilentHooks:
    """Stands in for the hook relay on ranks other than 0: every hook call does nothing."""

    def __getattr__(self, name: str):
        return lambda **kwargs: None


_SILENT_HOOKS = _SilentHooks()


class _IsolatedHooks:
    """The observer hooks, each plugin's implementation called on its own: an observer that raises
    (a tracker that lost its network) is reported once, naming the plugin and the hook, and switched
    off for the rest of the run; training and the other observers go on."""

    def __init__(self, registry: Registry):
        self._relay = registry.hook
        self.failed: set[str] = set()  # plugins switched off in this run

    def __getattr__(self, name: str):
        caller = getattr(self._relay, name)

        def call(**kwargs) -> None:
            for impl in reversed(caller.get_hookimpls()):  # pluggy's own order: the last registered first
                if impl.plugin_name in self.failed:
                    continue
                try:
                    impl.function(*[kwargs[arg] for arg in impl.argnames])
                except Exception as exc:
                    self.failed.add(impl.plugin_name)
                    detail = (str(exc).splitlines() or [""])[0]
                    # entry-point plugins are named "<distribution>:<entry point>"; ones registered in code by id
                    label = impl.plugin_name if not impl.plugin_name.isdigit() else \
                        getattr(impl.plugin, "__name__", type(impl.plugin).__name__)
                    log.warning(f"observer plugin {label!r} failed in {name} "
                                f"({type(exc).__name__}: {detail}); it is switched off for the rest of this run")

        return call


#: A rule that may end a run early, consulted after each evaluation before the run's last: it gets
#: the stage's name, the step and the evaluation's results (empty when its metrics failed) and
#: returns why the run should stop, or None to go on. A hyper-parameter search's pruner is one.
Pruner = Callable[[str, int, dict[str, float]], str | None]


class _Pruned(Exception):
    """The run's ``prune`` rule ended it; the checkpoint of the point where it stopped is written."""


def run(system: System, *, out: str | None = None, device: str | None = None, resume: str | None = None,
        reuse: str | None = None, registry: Registry | None = None, prune: Pruner | None = None) -> Run:
    """Train every stage of ``system`` (or continue the run at ``resume``) and return the finished run.

    ``reuse`` names a finished (or interrupted) run whose leading stages this spec shares: the new
    run starts from that run's checkpoint at the end of the shared stages (see :func:`reused_checkpoint`).

    ``prune`` (see :data:`Pruner`) may end the run after an evaluation: it then ends cleanly, with
    status ``pruned``, its checkpoints kept and the reason logged (an ``event: pruned`` record).

    Started by ``torchrun``, every process runs this with the same arguments; see
    :mod:`genframe.ops.distributed` for how they share the work.
    """
    registry = registry or get_registry()
    dev = resolve_device(distributed.local_device(device or system.device))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if system.precision == "fp64" and dev.type == "mps":
        raise GenframeError(f"{system.source}: precision: fp64 needs float64, which MPS does not have; "
                            "use device: cpu or cuda, or precision: fp32")
    distributed.join(dev)
    try:
        with denormals_flushed(dev), default_dtype(RUN_DTYPES[system.precision]):
            return _run(system, out, dev, resume, registry, reuse, prune)
    finally:
        distributed.leave()


def _preflight(system: System) -> None:
    """The main process fetches what the run needs first (so that no two processes write one cache
    file) and every process stops on its error; the others then find what it fetched."""
    problem = None
    if distributed.current().is_main:
        try:
            preflight(system)
        except GenframeError as exc:
            problem = str(exc)
    problem = distributed.broadcast_object(problem)
    if problem:
        raise GenframeError(problem)
    if not distributed.current().is_main:
        preflight(system)


def _open_storage(system: System, out: str | None, resume: str | None,
                  registry: Registry) -> tuple[RunStorage, dict | None]:
    """The run folder and the checkpoint to resume from; only rank 0 creates a new folder."""
    if resume:
        storage = RunStorage.open(resume)
        _check_same_spec(system, storage, registry)
        return storage, storage.load_checkpoint()
    url, problem = distributed.broadcast_object(out or default_run_url(system.name)), None
    if distributed.current().is_main:
        try:
            RunStorage.create(url)
        except GenframeError as exc:
            problem = str(exc)
    problem = distributed.broadcast_object(problem)  # every process stops on rank 0's error
    if problem:
        raise GenframeError(problem)
    return RunStorage(url), None


def _run(system: System, out: str | None, dev: torch.device, resume: str | None, registry: Registry,
         reuse: str | None = None, prune: Pruner | None = None) -> Run:
    if resume and reuse:
        raise GenframeError("--resume continues a run and --reuse starts a new one; give one of them")
    dry_run(system, dev)  # shapes and memory checked on the meta device before anything is allocated
    _preflight(system)  # weights, data and statistics files fetched or checked before anything trains
    reused = reused_checkpoint(system, reuse, registry) if reuse else None
    storage, checkpoint = _open_storage(system, out, resume, registry)
    if reused is not None:
        checkpoint = reused
    seed_everything(system.seed)
    set_matmul_precision(system.precision, dev)
    the_run = Run(system, storage, dev, registry, resumed=resume is not None and checkpoint is not None)
    the_run.prune = prune
    if checkpoint is not None:
        the_run.resume_point = (checkpoint["stage"], checkpoint["step"])
    the_run.build_ctx = prepare(system, dev)
    the_run.metric_data = metric_data(system, the_run.build_ctx)
    compile_components(system)
    if not resume and the_run.world.is_main:
        storage.write_spec(the_run.spec)
        storage.write_json("run.json", {
            "data_shape": {k: getattr(the_run.build_ctx, k)
                           for k in ("num_examples", "channels", "image_size", "num_classes", "class_names")},
            "genframe": __version__, "torch": torch.__version__,
            "created": datetime.now().isoformat(timespec="seconds"), "source": system.source,
            "hardware": {**hardware(dev), "processes": the_run.world.size},
            **({"reused": {"run": reuse, "stages": [s.name for s in system.stages[:checkpoint["stage"]]],
                           "checkpoint": reused["file"]}} if reused is not None else {}),
        })
        if reused is not None:  # the log tells the whole story, reused stages included
            shared = {s.name for s in system.stages[:checkpoint["stage"]]}
            for record in RunStorage.open(reuse).read_log():
                if record.get("stage") in shared:
                    storage.log(record)
    hook = the_run.hook
    hook.genframe_run_started(run=the_run.info)
    the_run.status = "completed"
    try:
        _run_with_recovery(the_run, checkpoint)
    except _Pruned as exc:
        the_run.status, the_run.pruned = "pruned", str(exc)
    except KeyboardInterrupt:
        hook.genframe_run_finished(run=the_run.info, status="interrupted", error=None)
        raise GenframeError(f"interrupted; continue with: genframe run --resume {storage.url}") from None
    except Exception as exc:
        hook.genframe_run_finished(run=the_run.info, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    hook.genframe_run_finished(run=the_run.info, status=the_run.status, error=None)
    distributed.barrier()  # no process leaves while rank 0 still evaluates and writes
    return the_run


class _NonFinite(Exception):
    """A loss became NaN or infinite; handled by the spec's ``nonfinite`` policy."""


def _run_with_recovery(the_run: Run, checkpoint: dict | None) -> None:
    """Run the stages; on a non-finite loss stop, or roll back to the last checkpoint with lower rates."""
    policy = the_run.system.nonfinite
    rollbacks, lr_scale = 0, None
    while True:
        try:
            _run_stages(the_run, checkpoint, lr_scale)
            return
        except _NonFinite as exc:
            if policy.action != "rollback":
                raise GenframeError(f"{exc}; lower the learning rate, check the data scaling, or set "
                                    "nonfinite: {action: rollback}") from None
            if rollbacks >= policy.retries:
                raise GenframeError(f"{exc}; still non-finite after {rollbacks} rollbacks") from None
            checkpoint = the_run.storage.load_checkpoint()
            if checkpoint is None:
                raise GenframeError(f"{exc}; no checkpoint to roll back to yet") from None
            rollbacks += 1
            lr_scale = policy.lr_factor ** rollbacks
            log.warning(f"{exc}; rolling back to stage {checkpoint['stage']} step "
                        f"{checkpoint['step']} with learning rates x{lr_scale:g}")


def _check_same_spec(system: System, storage: RunStorage, registry: Registry) -> None:
    """Refuse to resume with another spec. The recorded spec is rebuilt first, so that settings
    added to genframe since the run began take their defaults on both sides."""
    recorded = build(storage.read_spec(), f"{storage.url}/spec.yaml", registry).resolved_spec()
    current = system.resolved_spec()
    if recorded != current:
        diffs = _diff(recorded, current)
        raise GenframeError(f"{storage.url}: the spec differs from the run's spec.yaml at {', '.join(diffs[:3])}; "
                            "resume with the run's own spec (omit SPEC) or start a new run")


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in dict.fromkeys([*a, *b]) for d in _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "(top level)"]


def _run_stages(the_run: Run, checkpoint: dict | None, lr_scale: float | None = None) -> None:
    """Run the stages from ``checkpoint`` (or the start). ``lr_scale`` (after a rollback) is the
    learning-rate multiplier the resumed stage must run with; None keeps the checkpoint's."""
    system = the_run.system
    start_stage, start_step = (checkpoint["stage"], checkpoint["step"]) if checkpoint else (0, 0)
    if checkpoint:
        restore_components(system, checkpoint)
    _trim_log(the_run, start_stage, start_step)  # a run resumed before its first checkpoint starts afresh
    for stage in system.stages:
        if stage.index < start_stage:
            continue
        generator = torch.Generator(device=the_run.device)
        generator.manual_seed(system.seed * 1_000_003 + stage.index)
        ctx = StageContext(build=the_run.build_ctx, components=system.components, stage=stage.name,
                           stage_index=stage.index, generator=generator)
        resuming_here = checkpoint is not None and stage.index == start_stage
        if stage.index > 0 and not (resuming_here and start_step > 0):
            seed_stage(system.seed, stage.index)  # a stage boundary needs no random state from before it
        stage.trainer.bind(ctx)  # its optimisers start with fresh schedules
        step = 0
        if resuming_here and start_step > 0:
            step = start_step
            stage.trainer.load_state_dict(checkpoint["trainer"])  # optimisers, schedules and their scale
            generator.set_state(checkpoint["generator"])
            set_rng_state(checkpoint["rng"])
        if resuming_here and lr_scale is not None:
            ctx.set_learning_rate_scale(lr_scale)
        spent = (checkpoint.get("stage_seconds") or 0.0) if resuming_here and start_step > 0 else 0.0
        best = _run_stage(the_run, stage, ctx, step, spent)
        _save_checkpoint(the_run, stage.index + 1, 0, best=best)


def _trim_log(the_run: Run, stage: int, step: int) -> None:
    """Drop records written after the checkpoint: those steps run again and are logged again."""
    if not the_run.world.is_main:
        return
    order = {s.name: s.index for s in the_run.system.stages}
    records = the_run.storage.read_log()
    kept = [r for r in records if (order.get(r.get("stage"), -1), r.get("step", 0)) <= (stage, step)]
    if len(kept) != len(records):
        the_run.storage.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))


def referenced_components(trainer, *, trained_only: bool = False) -> set[str]:
    """Names of the components a trainer (and anything nested in it) refers to by name; with
    ``trained_only``, those it may change (every reference not declared ``read_only``)."""
    names = set()
    for comp, _ in walk(trainer, "trainer"):
        for f in attrs.fields(type(comp)):
            if ref_roles(f) and not (trained_only and ref_read_only(f)):
                names.add(getattr(comp, f.name))
    return names


def reused_checkpoint(system: System, source: str, registry: Registry) -> dict:
    """The checkpoint at the end of the leading stages ``system`` shares with the run at ``source``.

    Leading stages are shared while their resolved settings, and those of every component they
    train or read, are equal; the data, seed and precision must be equal too, since the stages'
    results are taken as they are. Components the shared stages do not touch (a mapper of another
    width, say) are left out of the checkpoint and start from their initialisation in the new spec.

    The stage-end checkpoint is never pruned. A run written before it was kept (or one that lost it)
    still serves through a later checkpoint, when no stage between the two trains a component the
    shared stages left: GLANN's mapper stage only reads the codes and the generator, so the final
    checkpoint holds them as GLO left them. What each stage trains is what its trainer declares
    (references not marked ``read_only``).
    """
    storage = RunStorage.open(source)
    theirs = build(storage.read_spec(), f"{storage.url}/spec.yaml", registry)
    ours_spec, theirs_spec = system.resolved_spec(), theirs.resolved_spec()
    where = f"--reuse {storage.url}"
    for key in ("data", "seed", "precision", "channels_last"):
        if ours_spec[key] != theirs_spec[key]:
            raise GenframeError(f"{where}: its {key} differs from this spec's; reused stages must have "
                                "trained on the same data with the same settings")
    shared, reason = 0, ""
    while shared < min(len(system.stages), len(theirs.stages)):
        differing = _diff(theirs_spec["stages"][shared], ours_spec["stages"][shared], f"stages[{shared}]")
        used = referenced_components(system.stages[shared].trainer)
        differing += [f"components.{n}" for n in sorted(used)
                      if ours_spec["components"].get(n) != theirs_spec["components"].get(n)]
        if differing:
            reason = f"{', '.join(differing[:3])} of stage {system.stages[shared].name!r} differ"
            break
        shared += 1
    if shared == 0:
        raise GenframeError(f"{where}: its first stage is not this spec's ({reason}); nothing to reuse")
    if shared == len(system.stages):
        raise GenframeError(f"{where}: every stage of this spec is the same as that run's; nothing is left to "
                            f"train (sample it with: genframe sample {storage.url})")
    used = set().union(*(referenced_components(stage.trainer) for stage in system.stages[:shared]))
    end = f"the end of stage {system.stages[shared - 1].name!r}"
    later = sorted((e for e in storage.checkpoints() if (e["stage"], e["step"]) >= (shared, 0)),
                   key=lambda e: (e["stage"], e["step"]))
    problems = []
    for entry in later:
        between = theirs.stages[shared:entry["stage"] + (entry["step"] > 0)]  # stages run since that end
        changed = [f"stage {s.name!r} trains {', '.join(sorted(trained))}" for s in between
                   if (trained := referenced_components(s.trainer, trained_only=True) & used)]
        if changed:  # and so it does for every later checkpoint
            problems.append(f"no checkpoint after it holds that state ({changed[0]})")
            break
        payload, problem = storage.verified_checkpoint(entry)
        if payload is None:
            problems.append(f"{entry['file']}: {problem}")
            continue
        return {"stage": shared, "step": 0, "file": entry["file"], "rng": payload["rng"],
                "components": {n: state for n, state in payload["components"].items() if n in used}}
    raise GenframeError(f"{where}: holds no checkpoint at {end}" + (f"; {'; '.join(problems)}" if problems else
                        " or after it (the run stopped earlier)"))


def _save_checkpoint(the_run: Run, stage_index: int, step: int, trainer=None,
                     generator: torch.Generator | None = None, best: dict | None = None,
                     seconds: float | None = None) -> None:
    """Checkpoint the components, RNG states and (mid-stage) the trainer and its random generator.

    Rank 0 writes it: every process holds the same weights, optimiser states and generator states.
    """
    if not the_run.world.is_main:
        return
    payload = {
        "stage": stage_index, "step": step, "spec_name": the_run.system.name,
        "components": {n: c.state_dict() for n, c in the_run.system.components.items()
                       if isinstance(c, ModuleComponent)},
        "rng": rng_state(),
    }
    if trainer is not None and generator is not None:
        payload["trainer"] = trainer.state_dict()
        payload["generator"] = generator.get_state()
        payload["stage_seconds"] = seconds  # training time spent in the stage, for its budget on resume
    the_run.storage.save_checkpoint(payload, keep=the_run.system.keep_checkpoints, best=best)


def _stage_clock(device: torch.device):
    """Seconds a stage's budget counts: this process's CPU time on the CPU (other work on the machine
    does not count), wall-clock time on an accelerator."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def _run_stage(the_run: Run, stage, ctx: StageContext, start: int, spent: float = 0.0) -> dict | None:
    """Train one stage from ``start``; returns the best-metric mark for its final checkpoint, if any.

    ``spent``: training seconds the stage took before ``start`` (a resumed run), for its budget."""
    system, hook = the_run.system, the_run.hook
    trainer = stage.trainer
    total = trainer.total_steps()
    clock = _stage_clock(the_run.device)
    began = clock() - spent
    hook.genframe_stage_started(run=the_run.info, stage=stage.name, index=stage.index, total_steps=total,
                                start_step=start)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    every_eval = system.evaluation.every
    runner = StepRunner(trainer, ctx, the_run.graph_mode, where=f"{system.source}: stage {stage.name!r}")
    # autocast's cache of cast weights must be off while steps are captured and replayed
    autocast = torch.autocast(the_run.device.type, dtype=torch.bfloat16, enabled=system.precision == "bf16",
                              cache_enabled=the_run.graph_mode == "off")
    # On the CPU, one process reads its clock after every step (a microsecond, and no device to wait
    # for), so a budgeted stage ends at the step that spends it. On an accelerator, or across
    # processes (the decision is broadcast), it is read at logging points only.
    every_step = stage.seconds is not None and the_run.device.type == "cpu" and not the_run.world.active
    done = start
    for step in range(start, total):
        with autocast:
            losses = _guarded_step(runner, step, stage)
        for key, value in losses.items():  # replayed outputs are overwritten by the next step: add them now
            sums[key] = sums[key] + value.detach() if key in sums else at_least_float32(value.detach()).clone()
        count += 1
        done = step + 1
        checkpoint_due = done < total and done % system.checkpoint_every == 0
        budget_spent = every_step and done < total and clock() - began >= stage.seconds
        # Losses are read (one host sync) at the logging interval, before every checkpoint so that a
        # checkpoint never captures weights that already produced a non-finite loss, and where the
        # stage's budget ends it.
        if done % system.log_every == 0 or done == total or checkpoint_due or budget_spent:
            means = _interval_means(sums, count)  # the only host sync of the interval
            _check_finite(means, stage.name, done)
            ctx.observe(means)  # e.g. a plateau schedule lowers the learning rate when a value stalls
            if the_run.world.is_main:
                the_run.storage.log({"stage": stage.name, "step": done,
                                     "time": round(time.time() - the_run.started, 3), **means})
            hook.genframe_step_end(run=the_run.info, stage=stage.name, step=done, total_steps=total, losses=means)
            sums, count = {}, 0
            if done < total and _over_budget(the_run, stage, clock() - began, done, total):
                break
        best, reason = None, None
        if done < total and every_eval and done % every_eval == 0:
            measuring = clock()
            results = evaluate(the_run, stage, done) if the_run.world.is_main else {}
            best = _best_mark(the_run, results) if the_run.world.is_main else None
            reason = _prune_reason(the_run, stage, done, results)
            began += clock() - measuring  # the budget buys training: evaluations do not spend it
        if checkpoint_due or best is not None or reason:
            _save_checkpoint(the_run, stage.index, done, trainer, ctx.generator, best=best, seconds=clock() - began)
        if reason:
            _stop_pruned(the_run, stage, done, reason)
    results = evaluate(the_run, stage, done) if the_run.world.is_main else {}
    best = _best_mark(the_run, results) if the_run.world.is_main else None
    hook.genframe_stage_finished(run=the_run.info, stage=stage.name, index=stage.index)
    if stage.index < len(system.stages) - 1:  # the run's last evaluation ends it anyway
        reason = _prune_reason(the_run, stage, done, results)
        if reason:
            _save_checkpoint(the_run, stage.index + 1, 0, best=best)
            _stop_pruned(the_run, stage, done, reason)
    return best


def _prune_reason(the_run: Run, stage, step: int, results: dict[str, float]) -> str | None:
    """The run's ``prune`` rule after an evaluation (rank 0 decides; every process gets its answer)."""
    if the_run.prune is None:
        return None
    reason = the_run.prune(stage.name, step, results) if the_run.world.is_main else None
    return distributed.broadcast_object(reason)


def _stop_pruned(the_run: Run, stage, step: int, reason: str) -> None:
    if the_run.world.is_main:
        the_run.storage.log({"stage": stage.name, "step": step, "event": "pruned", "reason": reason})
        log.note(f"stage {stage.name!r}, step {step}: pruned ({reason})")
    raise _Pruned(reason)


def _over_budget(the_run: Run, stage, seconds: float, done: int, total: int) -> bool:
    """Whether the stage's ``seconds`` are spent (rank 0 decides, so that every process stops at the
    same step); if so, the log records where it stopped."""
    if stage.seconds is None:
        return False
    over = distributed.broadcast_object(seconds >= stage.seconds)
    if over and the_run.world.is_main:
        the_run.storage.log({"stage": stage.name, "step": done, "event": "budget", "seconds": round(seconds, 1),
                             "budget": stage.seconds, "planned_steps": total})
        log.note(f"stage {stage.name!r}: its {stage.seconds:g} s are spent; it ends at step {done} of {total}")
    return over


def _interval_means(sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Mean of each logged loss over the interval's steps (and over processes, under torchrun)."""
    if not sums:
        return {}
    # summed on the device in the run's precision (at least float32), divided on the host in double precision
    totals = distributed.sum_(torch.stack([at_least_float32(v) for v in sums.values()])).tolist()
    steps = count * distributed.current().size
    return {key: total / steps for key, total in zip(sums, totals)}


def _guarded_step(runner: StepRunner, step: int, stage) -> dict[str, torch.Tensor]:
    try:
        return runner(step)
    except torch.cuda.OutOfMemoryError:
        batch = getattr(stage.trainer, "batch_size", None)
        setting = f"stages[{stage.index}].trainer.batch_size" + (f" (now {batch})" if batch else "")
        raise GenframeError(f"stage {stage.name!r}, step {step + 1}: out of GPU memory; lower {setting}, "
                            "or free the GPU of other processes") from None


def _best_mark(the_run: Run, results: dict[str, float]) -> dict | None:
    """``{"metric", "value"}`` when ``results`` improve on the best checkpoint so far, else None."""
    rule = the_run.system.best_checkpoint
    if rule is None or rule.metric not in results:
        return None
    value = results[rule.metric]
    previous = the_run.storage.best_value()
    better = previous is None or (value < previous if rule.mode == "min" else value > previous)
    return {"metric": rule.metric, "value": value} if better and math.isfinite(value) else None


def _check_finite(means: dict[str, float], stage: str, step: int) -> None:
    bad = [k for k, v in means.items() if not math.isfinite(v)]
    if bad:
        raise _NonFinite(f"stage {stage!r}, step {step}: non-finite loss {', '.join(bad)} "
                         f"({', '.join(f'{k}={means[k]}' for k in bad)})")


def evaluate(the_run: Run, stage, step: int) -> dict[str, float]:
    """Write previews and sample grids, compute metrics, log and announce the results."""
    system, storage = the_run.system, the_run.storage
    written: dict[str, str] = {}
    for name, images in stage.trainer.previews().items():
        written[name] = _write_grid(storage, f"images/{stage.name}/{name}-{step:07d}.png", images)
    results: dict[str, float] = {}
    protocols: dict[str, dict] = {}
    if stage.sample:
        sampler = Sampler(system, the_run.device)
        generator = torch.Generator(device=the_run.device).manual_seed(FIXED_NOISE_SEED)
        written["samples"] = _write_grid(storage, f"images/{stage.name}/samples-{step:07d}.png",
                                         sampler(system.evaluation.n_samples, generator))
        written["interpolation"] = _write_grid(storage, f"images/{stage.name}/interpolation-{step:07d}.png",
                                               sampler.interpolation(INTERPOLATION_ROWS, INTERPOLATION_STEPS,
                                                                     generator), nrow=INTERPOLATION_STEPS)
        real_images, labels = the_run.metric_data
        try:
            results, protocols = compute_metrics(system.evaluation.metrics, sampler, real_images, the_run.device,
                                                 labels)
        except Exception as exc:  # a full disk, a lost mount: the trained model is kept, the metric can wait
            error = (str(exc) if isinstance(exc, GenframeError) else f"{type(exc).__name__}: {exc}").splitlines()[0]
            storage.log({"stage": stage.name, "step": step, "event": "evaluation_failed", "error": error})
            log.warning(f"stage {stage.name!r}, step {step}: the evaluation failed ({error}); training "
                        f"goes on and the checkpoints are kept: measure later with genframe eval {storage.url}")
    if results:
        storage.log({"stage": stage.name, "step": step, "event": "evaluation", **results, "protocol": protocols})
    the_run.hook.genframe_evaluated(run=the_run.info, stage=stage.name, step=step, results=results,
                                             images=written)
    return results


def metric_data(system: System, ctx: BuildContext) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The real images and labels metrics compare with: ``evaluation.data`` when the spec names one
    (loaded once, before training, so that a missing data set stops the run at its start), else the
    training data."""
    data = system.evaluation.data
    if data is None or not system.evaluation.metrics:
        return ctx.images, ctx.labels
    images, labels = data.load()
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise GenframeError(f"{system.source}: evaluation.data: {data.type_name} returned {tuple(images.shape)} "
                            f"{images.dtype}; datasets must return uint8 (N, C, H, W)")
    return images, labels


def _write_grid(storage: RunStorage, rel: str, images: torch.Tensor, nrow: int | None = None) -> str:
    storage.write_bytes(rel, png_bytes(image_grid(to_uint8(images), nrow=nrow)))
    return rel


