"""The comparison table of a sweep folder: Markdown and CSV, and the plot of best metric against budget.

Laid out like the lecture's table (from Lucic et al. 2018): one row per model, the data set as
the column of "mean +- std" numbers, then what those numbers rest on (seeds, settings, the chosen
hyper-parameters) and, below, the protocol.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from genframe.errors import GenframeError
from genframe.ops.extras import installed
from genframe.storage import RunStorage
from genframe.sweep.results import expected_best, summarise
from genframe.ops import log


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _spread(value: float) -> str:
    """Two significant digits without an exponent where one is not needed: ``900``, not ``9e+02``."""
    return f"{float(f'{value:.2g}'):g}"


def _value_cell(row: dict) -> str:
    if row["mean"] is None:
        nothing_left = row["seeds_done"] > 0 or (row["settings_ok"] == 0 and row["settings_pending"] == 0)
        return "failed" if nothing_left else "pending"
    floor = "" if row.get("over_floor") is None else f" ({_num(row['over_floor'], 3)}x floor)"
    if row["std"] is None:
        return _num(row["mean"]) + floor
    return f"{_num(row['mean'])} ± {_spread(row['std'])}{floor}"


def short_names(paths: list[str]) -> dict[str, str]:
    """Shortest dotted suffix naming each path unambiguously (``betas.0``, not ``stages.0.trainer...``)."""
    out = {}
    for path in paths:
        parts = path.split(".")
        for n in range(1, len(parts) + 1):
            if n < len(parts) and parts[-n].isdigit():
                continue  # "0" alone says nothing: keep the field it indexes
            suffix = ".".join(parts[-n:])
            if sum(1 for p in paths if p == suffix or p.endswith("." + suffix)) == 1:
                break
        out[path] = suffix
    return out


def _format_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _settings_text(params: dict[str, Any]) -> str:
    names = short_names(list(params))
    return ", ".join(f"{names[p]}={_format_param(v)}" for p, v in params.items())


def _metrics_text(metrics: list[dict]) -> str:
    """``fid(n=10000)``: each metric with its scalar parameters, e.g. how many samples it uses."""
    parts = []
    for m in metrics:
        args = ", ".join(f"{k}={v}" for k, v in m.items() if k != "type" and isinstance(v, (int, float, str, bool)))
        parts.append(f"{m['type']}({args})" if args else m["type"])
    return "; ".join(parts)


def _judge_name(judge: dict) -> str:
    """``classifier features (weights 381b79d8, 28 px, held-out accuracy 0.9843)``."""
    details = [f"weights {judge['weights_sha256'][:8]}" if "weights_sha256" in judge else "",
               f"{judge['resolution']} px" if "resolution" in judge else "",
               f"held-out accuracy {judge['held_out_accuracy']}" if "held_out_accuracy" in judge else ""]
    details = [d for d in details if d]
    return f"{judge['type']} features" + (f" ({', '.join(details)})" if details else "")


def _judges_text(rows: list[dict]) -> str | None:
    """The protocol line saying what measured the metric, and loudly when the models do not share it:
    a Frechet distance in one network's features is not comparable with one in another's."""
    key = lambda judge: json.dumps({k: judge.get(k) for k in ("type", "weights_sha256")}, sort_keys=True)  # noqa: E731
    judges = {key(j): j for r in rows for j in r.get("judges", [])}
    if not judges:
        return None
    if len(judges) == 1:
        return f"- judge: {_judge_name(next(iter(judges.values())))}, the same for every model"
    parts = [f"{_judge_name(judge)} for " + ", ".join(r["label"] for r in rows
                                                      if any(key(j) == k for j in r.get("judges", [])))
             for k, judge in judges.items()]
    return "- **the models were not measured by one judge, so their numbers do not compare**: " + "; ".join(parts)


def _seeds_text(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def markdown(summary: dict) -> str:
    proto, rows = summary["protocol"], summary["models"]
    better = "lower" if proto["mode"] == "min" else "higher"
    strategy = proto.get("strategy", {"type": "random"})
    adaptive = strategy["type"] == "optuna"
    lines = [f"# {proto['metric']} on {proto['label']} ({better} is better): best setting per model, "
             "mean ± std over seeds", "",
             f"| Model | {proto['label']} | seeds | settings ok / {'pruned / ' if adaptive else ''}failed / pending "
             "| chosen hyper-parameters |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        pruned = f"{row['settings_pruned']} / " if adaptive else ""
        lines.append(f"| {row['label']} | {_value_cell(row)} | {row['seeds_ok']}/{row['seeds_planned']} | "
                     f"{row['settings_ok']} / {pruned}{row['settings_failed']} / {row['settings_pending']} | "
                     f"{_settings_text(row['params']) or '—'} |")
    metrics = next((_metrics_text(r["metrics"]) for r in rows if r["metrics"]), "")
    reported = (f"the best setting trained again with seeds {_seeds_text(proto['final_seeds'])}"
                if proto["final_seeds"] else "the best setting's search seeds")
    lines += ["", "Protocol:", "",
              f"- metric: `{proto['metric']}` ({better} is better) of each run's last evaluation"
              + (f", computed by {metrics}" if metrics else ""),
              (f"- search: a budget of {proto['budget']} settings per model, proposed by an Optuna study per model "
               f"({strategy['sampler']} sampler seeded by sweep seed {proto['seed']}, {strategy['pruner']} pruner "
               "judging each evaluation); pruned settings stopped early and are not eligible"
               if adaptive else
               f"- search: a budget of {proto['budget']} settings per model, drawn from its search space with sweep "
               f"seed {proto['seed']}; each setting trained with seeds {_seeds_text(proto['seeds'])}"),
              *[line for line in [_judges_text(rows)] if line],
              f"- selection: the setting with the best mean `{proto['metric']}` over its seeds; settings that "
              "failed for any seed are not eligible",
              f"- reported: {reported}; mean ± sample standard deviation over the seeds that succeeded",
              f"- sweep: `{proto['source']}`", "", "Search spaces:", ""]
    for row in rows:
        space = "; ".join(f"`{p}` {d}" for p, d in row["search"].items()) or "none (fixed spec)"
        lines.append(f"- {row['label']} (`{row['spec']}`): {space}")
    failures = [(row["label"], error) for row in rows for error in row["errors"]]
    if failures:
        lines += ["", "Failures (each trial's folder holds its result.json and error.txt):", ""]
        lines += [f"- {label}: {error}" for label, error in failures]
    return "\n".join(lines) + "\n"


def _strategy_text(proto: dict) -> str:
    strategy = proto.get("strategy", {"type": "random"})
    return "random" if strategy["type"] == "random" else f"optuna {strategy['sampler']} {strategy['pruner']}"


def csv_text(*summaries: dict) -> str:
    """One row per model of each sweep; with several sweeps, a first ``data`` column names the sweep."""
    several = len(summaries) > 1
    param_columns = list(dict.fromkeys(p for s in summaries for r in s["models"] for p in r["params"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*(["data"] if several else []), "model", "label", "metric", "mode", "mean", "std", "over_floor",
                     "seeds_ok",
                     "seeds_planned", "reported_on", "best_setting", *param_columns, "settings_ok", "settings_failed",
                     "settings_pruned", "settings_pending", "budget", "search_seeds", "final_seeds", "metrics",
                     "sweep_seed", "strategy", "search_seconds", "judge", "spec"])
    for summary in summaries:
        proto = summary["protocol"]
        for r in summary["models"]:
            writer.writerow([*([proto["label"]] if several else []), r["name"], r["label"], proto["metric"],
                             proto["mode"], _repr(r["mean"]), _repr(r["std"]), _repr(r.get("over_floor")),
                             r["seeds_ok"], r["seeds_planned"],
                             r["reported_on"], _repr(r["best_setting"]),
                             *[_repr(r["params"].get(p)) for p in param_columns], r["settings_ok"],
                             r["settings_failed"], r.get("settings_pruned", 0), r["settings_pending"], proto["budget"],
                             " ".join(map(str, proto["seeds"])), " ".join(map(str, proto["final_seeds"])),
                             _metrics_text(r["metrics"]), proto["seed"], _strategy_text(proto),
                             _repr(r.get("search_seconds")),
                             " ".join(_judge_name(j) for j in r.get("judges", [])), r["spec"]])
    return buffer.getvalue()


def combined_markdown(summaries: list[dict]) -> str:
    """Lucic et al.'s layout over several sweeps: a row per model, a column per data set (sweep label),
    then each sweep's own table and protocol."""
    proto = summaries[0]["protocol"]
    better = "lower" if proto["mode"] == "min" else "higher"
    labels = [s["protocol"]["label"] for s in summaries]
    cells = {(s["protocol"]["label"], row["label"]): _value_cell(row) for s in summaries for row in s["models"]}
    models = list(dict.fromkeys(row["label"] for s in summaries for row in s["models"]))
    lines = [f"# {proto['metric']} ({better} is better): best setting per model and data set, mean ± std over "
             "seeds", "", "| Model | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(cells.get((label, model), "—") for label in labels) + " |")
    for summary in summaries:
        lines += ["", "#" + markdown(summary).rstrip("\n")]  # each sweep's table one heading level down
    return "\n".join(lines) + "\n"


def _repr(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def budget_curves(summary: dict) -> dict[str, list[float]]:
    """Per model, the best setting score against the budget. Random settings are exchangeable, so the
    curve is the expected best of b of them (b = 1..settings that succeeded); a study's settings
    depend on the earlier ones, so its curve is the best so far after each trial that ended (pruned
    and failed ones included; NaN before the first success)."""
    mode = summary["protocol"]["mode"]
    adaptive = summary["protocol"].get("strategy", {}).get("type") == "optuna"
    curves = {}
    for row in summary["models"]:
        if adaptive:
            best, values = math.nan, []
            for setting in row["settings_ended"]:
                score = row["scores"].get(setting)
                if score is not None and (math.isnan(best) or (score < best if mode == "min" else score > best)):
                    best = score
                values.append(best)
            curves[row["name"]] = values
            continue
        scores = list(row["scores"].values())
        curves[row["name"]] = [expected_best(scores, b, mode) for b in range(1, len(scores) + 1)]
    return curves


def budget_csv(curves: dict[str, list[float]], data: str | None = None, header: bool = True) -> str:
    """``model,budget,expected_best`` rows (preceded by a ``data`` column when ``data`` is given)."""
    lead = "" if data is None else f"{data},"
    lines = [("data," if data is not None else "") + "model,budget,expected_best"] if header else []
    for name, values in curves.items():
        lines += [f"{lead}{name},{b},{v!r}" for b, v in enumerate(values, start=1)]
    return "\n".join(lines) + "\n"


def budget_png(summaries: list[dict], curves: list[dict[str, list[float]]]) -> bytes:
    """Line plots, one panel per sweep, without pyplot's global state (safe in threads and servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.4 * len(summaries), 4.2), dpi=120)
    FigureCanvasAgg(figure)
    for i, (summary, panel) in enumerate(zip(summaries, curves)):
        _budget_panel(figure.add_subplot(1, len(summaries), i + 1), summary, panel)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def sample_grids_png(summary: dict, sweep_url: str) -> bytes | None:
    """Each model's sample grid from its best reported run (the newest ``images/*/samples-*.png`` there),
    titled with that run's metric; None when no run folder holds one (a record kept without images)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    tiles = []
    for row in summary["models"]:
        if row.get("best_run") is None:
            continue
        run = RunStorage(f"{sweep_url.rstrip('/')}/{row['best_run']}")
        grids = run.fs.glob(run.path("images/*/samples-*.png"))
        if grids:  # the step is in the name, zero-padded: the newest sorts last
            tiles.append((row, imread(io.BytesIO(run.fs.cat_file(max(grids, key=lambda g: g.rsplit("-", 1)[1]))),
                                      format="png")))
    if not tiles:
        return None
    columns = min(len(tiles), 5)
    lines = -(-len(tiles) // columns)
    figure = Figure(figsize=(2.6 * columns, 2.9 * lines), dpi=120)
    FigureCanvasAgg(figure)
    metric = summary["protocol"]["metric"]
    for i, (row, image) in enumerate(tiles):
        ax = figure.add_subplot(lines, columns, i + 1)
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")  # imread gives [0, 1]
        ax.set_title(f"{row['label']}\n{metric} {_num(row['best_value'])} ({row['best_run'].rsplit('/', 1)[-1]})",
                     fontsize=8)
        ax.axis("off")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _budget_panel(ax, summary: dict, curves: dict[str, list[float]]) -> None:
    from matplotlib.ticker import MaxNLocator

    proto = summary["protocol"]
    for i, row in enumerate(summary["models"]):
        values = curves[row["name"]]
        if values:  # the colour cycle has 10 colours: past them, another line style tells models apart
            ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 20 else None,
                    markersize=3, label=row["label"], linestyle=("-", "--", ":", "-.")[i // 10 % 4])
    finite = [v for values in curves.values() for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > 20 * min(finite):
        ax.set_yscale("log")  # scores spanning orders of magnitude: the best models stay readable
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("budget (settings tried)")
    ax.set_ylabel(f"expected best {proto['metric']}")
    ax.set_title(f"{proto['label']}: expected best {proto['metric']} against budget")
    ax.grid(alpha=0.3)
    if any(curves.values()):  # beside the plot, where it covers no curve
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))


def write_table(sweep_dirs: str | list[str], out: str | None = None) -> tuple[str, list[str]]:
    """Write table.md, table.csv, budget.csv, budget.png and, when the run folders hold sample grids,
    samples.png (each model's best reported run); returns the Markdown and the files' locations.

    One sweep folder: its table, written into it by default. Several (the same models and metric on
    different data sets, say): one table with a column per sweep label, written to ``out``.
    """
    dirs = [sweep_dirs] if isinstance(sweep_dirs, str) else list(sweep_dirs)
    if len(dirs) > 1 and out is None:
        raise GenframeError("several sweep folders make one combined table: say where it goes with --out")
    summaries = [summarise(d) for d in dirs]
    _check_comparable(dirs, summaries)
    storage = RunStorage((out or dirs[0]).rstrip("/"))
    curves = [budget_curves(s) for s in summaries]
    several = len(summaries) > 1
    files = {
        "table.md": combined_markdown(summaries) if several else markdown(summaries[0]),
        "table.csv": csv_text(*summaries),
        "budget.csv": "".join(budget_csv(c, s["protocol"]["label"] if several else None, header=i == 0)
                              for i, (s, c) in enumerate(zip(summaries, curves))),
    }
    for name, text in files.items():
        storage.write_text(name, text)
    written = list(files)
    if installed("matplotlib"):
        storage.write_bytes("budget.png", budget_png(summaries, curves))
        written.append("budget.png")
        grids = None if several else sample_grids_png(summaries[0], dirs[0])
        if grids is not None:
            storage.write_bytes("samples.png", grids)
            written.append("samples.png")
    else:
        log.note("budget.png needs matplotlib: pip install 'genframe[plots]' (budget.csv holds "
                 "its numbers)")
    return files["table.md"], [f"{storage.url}/{name}" for name in written]


def _check_comparable(dirs: list[str], summaries: list[dict]) -> None:
    """Sweeps side by side must rank by the same metric, in the same direction, under distinct labels."""
    first = summaries[0]["protocol"]
    for folder, summary in zip(dirs[1:], summaries[1:]):
        proto = summary["protocol"]
        if (proto["metric"], proto["mode"]) != (first["metric"], first["mode"]):
            raise GenframeError(f"{folder}: ranks by {proto['metric']} ({proto['mode']}) but {dirs[0]} by "
                                f"{first['metric']} ({first['mode']}); one table compares one metric")
    labels = [s["protocol"]["label"] for s in summaries]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise GenframeError(f"sweeps share the label {repeated[0]!r}, which names their column; give each sweep "
                            "file its own label")
