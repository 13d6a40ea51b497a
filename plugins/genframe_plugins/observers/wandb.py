"""Weights & Biases tracking for a run (``pip install 'genframe[wandb]'``): config, losses, metrics, protocols, images.

On when the spec lists it (``trackers: [wandb]``) or ``WANDB_PROJECT`` is set (the project; default
``genframe``); W&B's own variables apply as usual (``WANDB_MODE=offline``, ``WANDB_API_KEY``...).
The flattened spec is the run's config; each stage's losses are logged as ``<stage>/<loss>``
against the stage's own step (``<stage>/step``, since W&B steps must only grow across stages),
evaluations as ``<stage>/eval/<name>`` with their sample grids, and each evaluation's protocol in
the run's summary. W&B's files go into the run folder (``wandb/``) when it is local. The W&B run's
id is kept in the run folder, so that ``--resume`` continues the same W&B run.
"""

from __future__ import annotations

import io
import json
import os
import tempfile

from genframe import hookimpl
from genframe_plugins.observers._trackers import enabled, flat, last_protocol, needed, remember, remembered

_RUNS: dict[str, object] = {}  # run folder -> wandb run


@hookimpl
def genframe_run_started(run):
    if not enabled(run, "wandb", ("WANDB_PROJECT",)):
        return
    wandb = needed("wandb")
    previous = remembered(run, "wandb") if run.resumed else None
    tracked = wandb.init(project=os.environ.get("WANDB_PROJECT") or "genframe", name=run.name,
                         id=previous, resume="allow" if previous else None, config=flat(run.spec),
                         dir=run.local_folder() or tempfile.mkdtemp(prefix="genframe-wandb-"),
                         reinit="create_new")
    remember(run, "wandb", tracked.id)
    _RUNS[run.url] = tracked


@hookimpl
def genframe_stage_started(run, stage, index, total_steps, start_step):
    tracked = _RUNS.get(run.url)
    if tracked is not None:
        tracked.define_metric(f"{stage}/step")
        tracked.define_metric(f"{stage}/*", step_metric=f"{stage}/step")


@hookimpl
def genframe_step_end(run, stage, step, total_steps, losses):
    tracked = _RUNS.get(run.url)
    if tracked is not None:
        tracked.log({f"{stage}/step": step, **{f"{stage}/{k}": v for k, v in losses.items()}})


@hookimpl
def genframe_evaluated(run, stage, step, results, images):
    tracked = _RUNS.get(run.url)
    if tracked is None:
        return
    import wandb
    from PIL import Image

    pictures = {f"{stage}/{name}": wandb.Image(Image.open(io.BytesIO(run.read_bytes(rel))).convert("RGB"))
                for name, rel in images.items()}
    tracked.log({f"{stage}/step": step, **{f"{stage}/eval/{k}": v for k, v in results.items()}, **pictures})
    if results:
        tracked.summary[f"protocol/{stage}"] = json.dumps(last_protocol(run, stage, step))


@hookimpl
def genframe_run_finished(run, status, error):
    tracked = _RUNS.pop(run.url, None)
    if tracked is not None:
        tracked.finish(exit_code=0 if status in ("completed", "pruned") else 1)
