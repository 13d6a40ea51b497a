"""Loss curves as a PNG in the run folder when a run ends (finished, failed or interrupted)."""

from __future__ import annotations

from genframe import hookimpl, loss_curves_png


@hookimpl
def genframe_run_finished(run, status, error):
    png = loss_curves_png(run.read_log())
    if png is not None:
        run.write_bytes("curves.png", png)
