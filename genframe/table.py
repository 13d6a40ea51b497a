"""The comparison table of a sweep folder: Markdown and CSV, and the plot of best metric against budget.

Laid out like the lecture's table (from Lucic et al. 2018): one row per model, the data set as
the column of "mean +- std" numbers, then what those numbers rest on (seeds, settings, the chosen
hyper-parameters) and, below, the protocol.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from .storage import RunStorage
from .sweep import expected_best, summarise


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _value_cell(row: dict) -> str:
    if row["mean"] is None:
        nothing_left = row["seeds_done"] > 0 or (row["settings_ok"] == 0 and row["settings_pending"] == 0)
        return "failed" if nothing_left else "pending"
    if row["std"] is None:
        return _num(row["mean"])
    return f"{_num(row['mean'])} ± {_num(row['std'], 2)}"


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


def _seeds_text(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(map(str, seeds))


def markdown(summary: dict) -> str:
    proto, rows = summary["protocol"], summary["models"]
    better = "lower" if proto["mode"] == "min" else "higher"
    lines = [f"# {proto['metric']} on {proto['label']} ({better} is better): best setting per model, "
             "mean ± std over seeds", "",
             f"| Model | {proto['label']} | seeds | settings ok / failed / pending | chosen hyper-parameters |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['label']} | {_value_cell(row)} | {row['seeds_ok']}/{row['seeds_planned']} | "
                     f"{row['settings_ok']} / {row['settings_failed']} / {row['settings_pending']} | "
                     f"{_settings_text(row['params']) or '—'} |")
    metrics = next((_metrics_text(r["metrics"]) for r in rows if r["metrics"]), "")
    reported = (f"the best setting trained again with seeds {_seeds_text(proto['final_seeds'])}"
                if proto["final_seeds"] else "the best setting's search seeds")
    lines += ["", "Protocol:", "",
              f"- metric: `{proto['metric']}` ({better} is better) of each run's last evaluation"
              + (f", computed by {metrics}" if metrics else ""),
              f"- search: a budget of {proto['budget']} settings per model, drawn from its search space with sweep "
              f"seed {proto['seed']}; each setting trained with seeds {_seeds_text(proto['seeds'])}",
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


def csv_text(summary: dict) -> str:
    proto, rows = summary["protocol"], summary["models"]
    param_columns = list(dict.fromkeys(p for r in rows for p in r["params"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "label", "metric", "mode", "mean", "std", "seeds_ok", "seeds_planned",
                     "reported_on", "best_setting", *param_columns, "settings_ok", "settings_failed",
                     "settings_pending", "budget", "search_seeds", "final_seeds", "metrics", "sweep_seed", "spec"])
    for r in rows:
        writer.writerow([r["name"], r["label"], proto["metric"], proto["mode"], _repr(r["mean"]), _repr(r["std"]),
                         r["seeds_ok"], r["seeds_planned"], r["reported_on"], _repr(r["best_setting"]),
                         *[_repr(r["params"].get(p)) for p in param_columns], r["settings_ok"],
                         r["settings_failed"], r["settings_pending"], proto["budget"],
                         " ".join(map(str, proto["seeds"])), " ".join(map(str, proto["final_seeds"])),
                         _metrics_text(r["metrics"]), proto["seed"], r["spec"]])
    return buffer.getvalue()


def _repr(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def budget_curves(summary: dict) -> dict[str, list[float]]:
    """Per model, the expected best setting score for budgets 1..n (n: settings that succeeded)."""
    mode = summary["protocol"]["mode"]
    curves = {}
    for row in summary["models"]:
        scores = list(row["scores"].values())
        curves[row["name"]] = [expected_best(scores, b, mode) for b in range(1, len(scores) + 1)]
    return curves


def budget_csv(curves: dict[str, list[float]]) -> str:
    lines = ["model,budget,expected_best"]
    for name, values in curves.items():
        lines += [f"{name},{b},{v!r}" for b, v in enumerate(values, start=1)]
    return "\n".join(lines) + "\n"


def budget_png(summary: dict, curves: dict[str, list[float]]) -> bytes:
    """Line plot without pyplot's global state (safe in threads and servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    proto = summary["protocol"]
    figure = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for row in summary["models"]:
        values = curves[row["name"]]
        if values:
            ax.plot(range(1, len(values) + 1), values, marker="o" if len(values) < 20 else None,
                    markersize=3, label=row["label"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("budget (settings tried)")
    ax.set_ylabel(f"expected best {proto['metric']}")
    ax.set_title(f"{proto['label']}: expected best {proto['metric']} against budget")
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_table(sweep_dir: str, out: str | None = None) -> tuple[str, list[str]]:
    """Write table.md, table.csv, budget.csv and budget.png (into the sweep folder by default);
    returns the Markdown and the files' locations."""
    summary = summarise(sweep_dir)
    storage = RunStorage((out or sweep_dir).rstrip("/"))
    curves = budget_curves(summary)
    files = {"table.md": markdown(summary), "table.csv": csv_text(summary), "budget.csv": budget_csv(curves)}
    for name, text in files.items():
        storage.write_text(name, text)
    storage.write_bytes("budget.png", budget_png(summary, curves))
    return files["table.md"], [f"{storage.url}/{name}" for name in [*files, "budget.png"]]
