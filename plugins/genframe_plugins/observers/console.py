"""Console progress: a live bar on a terminal, a few plain lines elsewhere (CI logs stay short)."""

from __future__ import annotations

import sys

from genframe import hookimpl

_bars: dict[str, object] = {}  # by run folder
_PLAIN_LINES_PER_STAGE = 10


def _interactive() -> bool:
    return sys.stderr.isatty()


def _format(losses: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in losses.items())


@hookimpl
def genframe_run_started(run):
    verb = "resuming" if run.resumed else "run"
    print(f"genframe: {verb} {run.name} on {run.device} -> {run.url}", file=sys.stderr)


@hookimpl
def genframe_stage_started(run, stage, index, total_steps, start_step):
    if _interactive():
        from tqdm.auto import tqdm

        _bars[run.url] = tqdm(total=total_steps, initial=start_step, desc=stage, unit="step",
                              dynamic_ncols=True, file=sys.stderr)
    else:
        print(f"genframe: stage {stage}: steps {start_step}..{total_steps}", file=sys.stderr)


@hookimpl
def genframe_step_end(run, stage, step, total_steps, losses):
    bar = _bars.get(run.url)
    if bar is not None:
        bar.update(step - bar.n)
        bar.set_postfix_str(_format(losses), refresh=False)
    elif step == total_steps or step % max(1, total_steps // _PLAIN_LINES_PER_STAGE) < run.log_every:
        print(f"genframe: {stage} {step}/{total_steps} {_format(losses)}", file=sys.stderr)


@hookimpl
def genframe_stage_finished(run, stage, index):
    bar = _bars.pop(run.url, None)
    if bar is not None:
        bar.close()


@hookimpl
def genframe_run_finished(run, status, error):
    bar = _bars.pop(run.url, None)
    if bar is not None:
        bar.close()
    print(f"genframe: {status}: {run.url}", file=sys.stderr)
