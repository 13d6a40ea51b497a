"""Loss curves of a run as a PNG: the report shows them, and the curves observer writes them."""

from __future__ import annotations

import io
from collections import defaultdict

from genframe.ops.extras import require


def loss_curves_png(records: list[dict]) -> bytes | None:
    """Loss curves, one panel per stage, from metrics.jsonl records; None when nothing was logged.

    Drawn on a figure of its own, not through pyplot, so a notebook's backend and figures are left
    alone; needs matplotlib (``pip install 'genframe[plots]'``)."""
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if "event" not in record:
            by_stage[record["stage"]].append(record)
    if not by_stage:
        return None
    figure_module = require("matplotlib.figure", "plots", "loss curves")
    canvas = require("matplotlib.backends.backend_agg", "plots", "loss curves")
    figure = figure_module.Figure(figsize=(5 * len(by_stage), 3.4), dpi=100)
    canvas.FigureCanvasAgg(figure)
    for index, (stage, rows) in enumerate(by_stage.items()):
        axis = figure.add_subplot(1, len(by_stage), index + 1)
        keys = [k for k in rows[0] if k not in ("stage", "step", "time")]
        for key in keys:
            axis.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=key)
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
