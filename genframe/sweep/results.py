"""A sweep's results: each trial's ``result.json``, and the summary behind ``genframe table``.

Apart from the sweep file and the runner because a summary needs neither: it is made from a
sweep folder alone (its ``sweep.json`` and the trials' results), with no spec loaded or built.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics

from genframe.errors import GenframeError
from genframe.storage import RunStorage

RESULT = "result.json"


def spec_digest(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def read_result(out: str, trial_path: str) -> dict | None:
    storage = RunStorage(f"{out.rstrip('/')}/{trial_path}")
    if not storage.exists(RESULT):
        return None
    try:
        return storage.read_json(RESULT)
    except ValueError as exc:
        raise GenframeError(f"{storage.url}/{RESULT}: unreadable ({exc}); delete it to run the trial again") from None


def setting_scores(results: list[dict]) -> dict[int, float]:
    """Mean metric of each setting over its seeds; a setting that failed for any seed is not eligible."""
    by_setting: dict[int, list[dict]] = {}
    for r in results:
        by_setting.setdefault(r["setting"], []).append(r)
    return {j: statistics.fmean(r["value"] for r in rs) for j, rs in sorted(by_setting.items())
            if all(r["status"] == "ok" for r in rs)}


def best_setting(scores: dict[int, float], mode: str) -> int | None:
    """The best-scoring setting; ties go to the lower index, so the choice is deterministic."""
    if not scores:
        return None
    sign = 1 if mode == "min" else -1
    return min(scores, key=lambda j: (sign * scores[j], j))


def expected_best(values: list[float], budget: int, mode: str) -> float:
    """Expected best of ``budget`` settings picked at random without replacement from ``values``.

    Lucic et al. estimate this by bootstrap (their figure of FID against budget); it has a closed
    form: the i-th best of n values is the best of a random b-subset with probability
    C(n - i, b - 1) / C(n, b).
    """
    ordered = sorted(values, reverse=mode == "max")
    n = len(ordered)
    total = math.comb(n, budget)
    return sum(v * math.comb(n - i, budget - 1) for i, v in enumerate(ordered, start=1)) / total


def judge_of(result: dict, metric: str) -> dict | None:
    """What measured a result's metric: its feature extractor's identity as the run's protocol records it
    (type, and the weights' digest where the extractor has one), or None when the record says nothing."""
    features = ((result.get("protocol") or {}).get(metric) or {}).get("features")
    if not isinstance(features, dict) or "type" not in features:
        return None
    keep = ("type", "weights_sha256", "resolution", "held_out_accuracy")
    return {k: features[k] for k in keep if k in features}


def summarise(out: str) -> dict:
    """Per model: the best setting, the reported mean +- std, and the search's scores, from a sweep folder."""
    storage = RunStorage(out.rstrip("/"))
    if not storage.exists("sweep.json"):
        raise GenframeError(f"{out}: not a sweep folder (no sweep.json); run genframe sweep SWEEP.yaml --out {out}")
    plan = storage.read_json("sweep.json")
    results = {t["index"]: read_result(out, t["path"]) for t in plan["trials"]}
    rows = []
    for model in plan["models"]:
        search = [t for t in plan["trials"] if t["model"] == model["name"] and t["phase"] == "search"]
        finals = [t for t in plan["trials"] if t["model"] == model["name"] and t["phase"] == "final"]
        done = [results[t["index"]] for t in search if results[t["index"]] is not None]
        scores = setting_scores(done)
        complete = {t["setting"] for t in search} - {t["setting"] for t in search if results[t["index"]] is None}
        scores = {j: v for j, v in scores.items() if j in complete}
        failed = {r["setting"] for r in done if r["status"] == "failed"}
        pruned = {r["setting"] for r in done if r["status"] == "pruned"} - failed
        best = best_setting(scores, plan["mode"])
        if finals:
            reported = [results[t["index"]] for t in finals if results[t["index"]] is not None]
            planned = len(finals)
            if reported:
                best = reported[0]["setting"]
        else:
            reported = [r for r in done if r["setting"] == best]
            planned = len(plan["seeds"])
        values = [r["value"] for r in reported if r["status"] == "ok"]
        floors = [r["results"].get(f"{plan['metric']}_floor") for r in reported if r["status"] == "ok"]
        ratios = [v / f for v, f in zip(values, floors) if f]  # the metric over its real-vs-real floor
        params = next((r["params"] for r in done if r["setting"] == best), {}) if best is not None else {}
        metrics = next((r["metrics"] for r in reported + done if r.get("metrics")), [])
        judged = [judge_of(r, plan["metric"]) for r in reported + done if r["status"] == "ok"]
        judges = list({json.dumps(j, sort_keys=True): j for j in judged if j is not None}.values())
        paths = {t["index"]: t["path"] for t in finals + search}
        ranked = sorted((r for r in reported if r["status"] == "ok"),
                        key=lambda r: r["value"] if plan["mode"] == "min" else -r["value"])
        rows.append({
            "name": model["name"], "label": model["label"], "spec": model["spec"], "search": model["search"],
            "best_setting": best, "params": params, "values": values,
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "over_floor": statistics.fmean(ratios) if ratios and len(ratios) == len(values) else None,
            "seeds_ok": len(values), "seeds_done": len(reported), "seeds_planned": planned,
            "reported_on": "final" if finals else "search",
            "settings_ok": len(scores), "settings_failed": len(failed), "settings_pruned": len(pruned),
            "settings_pending": plan["budget"] - len(complete),
            "scores": scores, "metrics": metrics, "judges": judges,
            "best_run": paths[ranked[0]["index"]] if ranked else None,
            "best_value": ranked[0]["value"] if ranked else None,
            "errors": sorted({r["error"] for r in done + reported if r["status"] == "failed"}),
            "search_seconds": sum(r.get("seconds", 0.0) for r in done),
            "settings_ended": sorted({r["setting"] for r in done}),
        })
    protocol = {k: plan[k] for k in ("source", "seed", "label", "metric", "mode", "budget", "seeds", "final_seeds")}
    return {"protocol": {**protocol, "strategy": plan.get("strategy", {"type": "random"})}, "models": rows}
