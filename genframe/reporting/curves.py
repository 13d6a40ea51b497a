"""Loss curves of a run as a PNG: the report shows them, and the curves observer writes them."""

from __future__ import annotations

import io
from collections import defaultdict


def loss_curves_png(records: list[dict]) -> bytes | None:
    """Loss curves, one panel per stage, from metrics.jsonl records; None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_stage: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if "event" not in record:
            by_stage[record["stage"]].append(record)
    if not by_stage:
        return None
    figure, axes = plt.subplots(1, len(by_stage), figsize=(5 * len(by_stage), 3.4), squeeze=False)
    for axis, (stage, rows) in zip(axes[0], by_stage.items()):
        keys = [k for k in rows[0] if k not in ("stage", "step", "time")]
        for key in keys:
            axis.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=key)
        axis.set_title(stage)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
