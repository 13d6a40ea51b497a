"""A run folder as one self-contained HTML page: spec, metrics, curves, image history, hardware, timings.

Everything (images included) is embedded, so the page can be mailed or attached to a paper's
supplementary material and still open anywhere. Built only from the run folder's files, so it
works for any run, finished or not, on any fsspec store.
"""

from __future__ import annotations

import base64
import html
import re
from collections import defaultdict

import yaml

from genframe.errors import GenframeError
from genframe.ops.extras import installed
from genframe.reporting.curves import loss_curves_png
from genframe.spec.load import validate
from genframe.storage import RUN_SCHEMA, RunStorage

IMAGES_PER_KIND = 8  # the newest images of each kind in the history (the page stays small)


def _img(data: bytes, alt: str, css: str = "") -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" class="{css}" src="data:image/png;base64,{encoded}">'


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _stage_summary(records: list[dict]) -> list[list]:
    rows, by_stage = [], defaultdict(list)
    for record in records:
        if "event" not in record:
            by_stage[record["stage"]].append(record)
    for stage, recs in by_stage.items():
        last = recs[-1]
        losses = ", ".join(f"{k}={_fmt(v)}" for k, v in last.items() if k not in ("stage", "step", "time"))
        seconds = last.get("time", 0.0) - recs[0].get("time", 0.0)
        steps = last["step"] - recs[0]["step"]
        rate = f"{steps / seconds:.1f}" if seconds > 0 else "-"
        rows.append([stage, last["step"], losses, f"{last.get('time', 0.0):.1f}", rate])
    return rows


def _image_history(storage: RunStorage) -> str:
    try:
        paths = sorted(storage.fs.glob(storage.path("images/**/*.png")))
    except (OSError, ValueError):
        paths = []
    groups: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    root = storage.path("")
    for path in paths:
        rel = path[len(root):] if path.startswith(root) else path.split("/images/", 1)[-1]
        match = re.search(r"images/([^/]+)/(.+)-(\d+)\.png$", "images/" + rel.split("images/", 1)[-1])
        if match:
            groups[(match.group(1), match.group(2))].append((int(match.group(3)), f"images/{match.group(1)}/"
                                                             f"{match.group(2)}-{match.group(3)}.png"))
    parts = []
    for (stage, kind), items in groups.items():
        figures = "".join(f"<figure>{_img(storage.read_bytes(rel), f'{kind} at step {step}', 'grid')}"
                          f"<figcaption>step {step}</figcaption></figure>"
                          for step, rel in sorted(items)[-IMAGES_PER_KIND:])
        parts.append(f"<h3>{html.escape(stage)}: {html.escape(kind)}</h3><div class='history'>{figures}</div>")
    return "".join(parts) or "<p>No images were written yet.</p>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1.5rem} td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:1rem;overflow:auto;font-size:.85rem}
.history{display:flex;flex-wrap:wrap;gap:.8rem} figure{margin:0;text-align:center;font-size:.8rem;color:#555}
img.grid{image-rendering:pixelated;width:220px;border:1px solid #ddd} img.curves{max-width:100%}
"""


def build_report(run_url: str) -> str:
    """The HTML page of a run folder."""
    storage = RunStorage.open(run_url)
    spec = storage.read_spec()
    validate(spec, f"{storage.url}/spec.yaml")  # the page shows what a valid spec holds
    info = storage.read_json("run.json", RUN_SCHEMA)
    records = storage.read_log()
    evaluations = [r for r in records if r.get("event") == "evaluation"]
    curves = loss_curves_png(records) if installed("matplotlib") else None
    checkpoints = storage.checkpoints()
    hardware = info.get("hardware", {})
    sections = [
        f"<h1>{html.escape(spec['name'])}</h1>",
        f"<p class='sub'>{html.escape(run_url)} · created {html.escape(str(info.get('created', '?')))} · "
        f"genframe {html.escape(str(info.get('genframe', '?')))} · torch {html.escape(str(info.get('torch', '?')))}</p>",
        "<h2>Training</h2>",
        _table(["stage", "last step", "last losses", "seconds since start", "steps/s"], _stage_summary(records))
        if records else "<p>Nothing logged yet.</p>",
        _img(curves, "loss curves", "curves") if curves else
        "" if installed("matplotlib") else "<p>Loss curves need matplotlib: pip install 'genframe[plots]'.</p>",
    ]
    if evaluations:
        keys = sorted({k for r in evaluations for k, v in r.items() if not isinstance(v, (dict, list))}
                      - {"stage", "step", "event"})  # nested values (the metrics' protocol) are not columns
        sections += ["<h2>Evaluations</h2>",
                     _table(["stage", "step", *keys], [[r["stage"], r["step"], *[r.get(k, "") for k in keys]]
                                                       for r in evaluations])]
    figures = _figures(storage)
    if figures:  # written into the run folder by analyses (benchmarks/flow_steps.py: quality against NFE)
        sections += ["<h2>Figures</h2>", *(_img(data, name, "curves") for name, data in figures)]
    sections += ["<h2>Images</h2>", _image_history(storage),
                 "<h2>Hardware</h2>", _table(["", ""], [[k, v] for k, v in hardware.items()])
                 if hardware else "<p>Not recorded.</p>",
                 "<h2>Checkpoints</h2>",
                 _table(["file", "stage", "step", "bytes"], [[c["file"], c["stage"], c["step"], c["size"]]
                                                            for c in checkpoints]) if checkpoints else "<p>None yet.</p>",
                 "<h2>Resolved spec</h2>", f"<pre>{html.escape(yaml.safe_dump(spec, sort_keys=False))}</pre>"]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(spec['name'])} — "
            f"genframe report</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")


def _figures(storage: RunStorage) -> list[tuple[str, bytes]]:
    """(name, PNG) of every picture under the run's ``figures/`` folder, by name."""
    try:
        paths = sorted(storage.fs.glob(storage.path("figures/*.png")))
    except OSError:
        return []
    return [(path.rsplit("/", 1)[1][:-4], storage.fs.cat_file(path)) for path in paths]


def write_report(run_url: str, out: str | None = None) -> str:
    """Write the page (default ``<run>/report.html``) and return where it went."""
    page = build_report(run_url)
    storage = RunStorage.open(run_url)
    if out is None:
        storage.write_text("report.html", page)
        return f"{storage.url}/report.html"
    import fsspec

    try:
        with fsspec.open(out, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as exc:
        raise GenframeError(f"{out}: cannot write the report: {exc.strerror or exc}") from None
    return out
