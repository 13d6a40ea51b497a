"""Loss curves as a PNG in the run folder when a run ends (finished, failed or interrupted).

Needs matplotlib (``pip install 'genframe[plots]'``); without it the run folder has no curves.png
and ``genframe report`` says which extra draws them.
"""

from __future__ import annotations

from genframe import GenframeError, hookimpl, loss_curves_png


@hookimpl
def genframe_run_finished(run, status, error):
    try:
        png = loss_curves_png(run.read_log())
    except GenframeError:  # matplotlib is not installed: a base install draws no curves
        return
    if png is not None:
        run.write_bytes("curves.png", png)
