"""What a sweep's table rests on, per model, read from the sweep folder's records alone.

``genframe table`` reports the selected metric. Beside it, this prints for each model the other
metrics of its reported runs (mean +- std over the final seeds), how much each run trained within
its time budget (steps of each stage, seconds spent against the budget: a stage stops at the first
logging point past its budget), and the spread of the search (best, median and worst setting).
It needs only ``sweep.json`` and each trial's ``result.json`` and ``metrics.jsonl``, so it works on
a record kept without weights or images.

    python benchmarks/sweep_details.py benchmarks/results/lucic_cpu --json benchmarks/results/lucic_cpu_details.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from genframe.storage import RunStorage
from genframe.sweep.results import read_result, summarise


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _budget_events(out: str, path: str) -> list[dict]:
    """The run's ``budget`` events: one per stage that its time budget ended."""
    storage = RunStorage(f"{out}/{path}")
    if not storage.exists("metrics.jsonl"):
        return []
    return [r for r in storage.read_log() if r.get("event") == "budget"]


def details(out: str) -> dict:
    out = out.rstrip("/")
    plan = RunStorage(out).read_json("sweep.json")
    summary = summarise(out)
    rows = {}
    for row in summary["models"]:
        trials = [t for t in plan["trials"] if t["model"] == row["name"]]
        finals = [(t, read_result(out, t["path"])) for t in trials if t["phase"] == "final"]
        finals = [(t, r) for t, r in finals if r is not None and r["status"] == "ok"]
        others = sorted(k for k in {k for _, r in finals for k in r["results"]} - {plan["metric"]}
                        if not k.endswith("_std"))  # a metric's own spread over splits, not over seeds
        metrics = {k: _mean_std([r["results"][k] for _, r in finals if k in r["results"]]) for k in others}
        stages: dict[str, dict] = {}
        for t, _ in finals:
            for event in _budget_events(out, t["path"]):
                entry = stages.setdefault(event["stage"], {"steps": [], "seconds": [], "budget": event["budget"]})
                entry["steps"].append(event["step"])
                entry["seconds"].append(event["seconds"])
        searched = sorted(row["scores"].values(), reverse=plan["mode"] == "max")
        rows[row["name"]] = {
            "label": row["label"], "mean": row["mean"], "std": row["std"], "over_floor": row["over_floor"],
            "other_metrics": {k: {"mean": m, "std": s} for k, (m, s) in metrics.items()},
            "stages": {name: {"budget": e["budget"], "steps": e["steps"], "seconds": e["seconds"]}
                       for name, e in stages.items()},
            "search": {"settings": len(searched), "best": searched[0] if searched else None,
                       "median": statistics.median(searched) if searched else None,
                       "worst": searched[-1] if searched else None},
            "best_run": row["best_run"],
        }
    return {"sweep": out, "metric": plan["metric"], "mode": plan["mode"], "models": rows}


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _spread(value: float | None) -> str:
    return "–" if value is None else f"{float(f'{value:.2g}'):g}"  # 900, not 9e+02


def markdown(result: dict) -> str:
    metric = result["metric"]
    names = sorted({k for r in result["models"].values() for k in r["other_metrics"]})
    lines = [f"| model | {metric} (x floor) | " + " | ".join(names) +
             " | steps per stage (final seeds) | seconds / budget | search: best / median / worst |",
             "| --- | --- | " + "--- | " * len(names) + "--- | --- | --- |"]
    for r in result["models"].values():
        value = f"{_num(r['mean'], 4)} ± {_spread(r['std'])} ({_num(r['over_floor'])}x)"
        others = [f"{_num(r['other_metrics'][k]['mean'])} ± {_spread(r['other_metrics'][k]['std'])}"
                  if k in r["other_metrics"] else "–" for k in names]
        steps = "; ".join(f"{name} {min(s['steps'])}-{max(s['steps'])}" for name, s in r["stages"].items())
        seconds = "; ".join(f"{max(s['seconds']):.1f} / {s['budget']}" for s in r["stages"].values())
        search = r["search"]
        lines.append(f"| {r['label']} | {value} | " + " | ".join(others) + f" | {steps or '–'} | {seconds or '–'} | "
                     f"{_num(search['best'], 4)} / {_num(search['median'], 4)} / {_num(search['worst'], 4)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="sweep folder (genframe sweep --out)")
    parser.add_argument("--json", type=Path, help="write the details here")
    args = parser.parse_args()
    result = details(args.sweep)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
