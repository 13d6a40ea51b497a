"""TensorBoard event files for every run, written by an observer: the engine does not know about it.

Each stage gets its own event folder (``<run>/tensorboard/<stage>``), so TensorBoard shows stages
as runs side by side, and a resumed stage can purge the events after its checkpoint without
touching other stages. For run folders that are not on the local disk, events are written to a
local temporary folder and copied into the run folder at the end of each stage and of the run.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np

from genframe import hookimpl

_writers: dict[str, dict] = {}  # by run folder


def _available() -> bool:
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return False
    return True


def _local_root(run) -> tuple[Path, bool]:
    """(folder for event files, whether it is a temporary copy to upload)."""
    local = run.local_folder()
    if local is not None:
        return Path(local) / "tensorboard", False
    return Path(tempfile.mkdtemp(prefix="genframe-tb-")), True


@hookimpl
def genframe_run_started(run):
    if not _available():
        return
    root, temporary = _local_root(run)
    _writers[run.url] = {"root": root, "temporary": temporary, "stage": None, "writer": None}


@hookimpl
def genframe_stage_started(run, stage, index, total_steps, start_step):
    state = _writers.get(run.url)
    if state is None:
        return
    from torch.utils.tensorboard import SummaryWriter

    _close(run)
    resumed_here = run.resume_point is not None and run.resume_point[0] == index and start_step > 0
    state["writer"] = SummaryWriter(log_dir=str(state["root"] / stage),
                                    purge_step=start_step + 1 if resumed_here else None)
    state["stage"] = stage


@hookimpl
def genframe_step_end(run, stage, step, total_steps, losses):
    state = _writers.get(run.url)
    if state and state["writer"] is not None:
        for name, value in losses.items():
            state["writer"].add_scalar(f"loss/{name}", value, step)


@hookimpl
def genframe_evaluated(run, stage, step, results, images):
    state = _writers.get(run.url)
    if not state or state["writer"] is None:
        return
    from PIL import Image

    for name, value in results.items():
        state["writer"].add_scalar(f"eval/{name}", value, step)
    for name, rel in images.items():
        picture = np.asarray(Image.open(io.BytesIO(run.read_bytes(rel))).convert("RGB"))
        state["writer"].add_image(f"images/{name}", picture, step, dataformats="HWC")


def _close(run) -> None:
    state = _writers.get(run.url)
    if not state or state["writer"] is None:
        return
    state["writer"].close()
    state["writer"] = None
    if state["temporary"]:
        for path in state["root"].rglob("*"):
            if path.is_file():
                run.write_bytes(f"tensorboard/{path.relative_to(state['root']).as_posix()}",
                                        path.read_bytes())


@hookimpl
def genframe_stage_finished(run, stage, index):
    _close(run)


@hookimpl
def genframe_run_finished(run, status, error):
    _close(run)
    state = _writers.pop(run.url, None)
    if state and state["temporary"]:
        shutil.rmtree(state["root"], ignore_errors=True)
