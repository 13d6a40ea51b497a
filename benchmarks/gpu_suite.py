"""Every GPU check of ``benchmarks/RESULTS.md`` in one command, most important first, within a time budget.

    python benchmarks/gpu_suite.py --out DIR [--budget 540]
    python benchmarks/gpu_suite.py --out DIR --smoke      # the same steps, tiny, on the CPU: checks the plumbing

GPU time is often lent by the minute, and a benchmark that runs past its slot leaves nothing. So
each step runs as its own process with a time limit (its own cap, or what is left of ``--budget``
when that is less) and writes its output as it goes; a step that fails or times out is recorded
and the next one starts; a step that no longer fits is skipped. The order is the order of what
matters: the GPU tests (is the fast path correct?), the engine's cost and the fast path against
hand-written loops, GLANN's epochs, the nearest-neighbour kernel, GLANN end to end with sample
quality, a flow's sampling replayed from CUDA graphs, FID-50k against torch-fidelity, and last
the scaling curves.

``DIR`` receives each step's log (``<step>.log``) and JSON (``<step>.json``), the environment
(``environment.json``: GPU, driver, torch, triton) and ``suite.json``: the environment and, per step,
its command, status (passed, failed, timed out, skipped), exit code, seconds and its JSON results,
so that this one file holds every figure. MNIST is read from ``$GENFRAME_DATA``
(or ``../shared/datasets``); without it the timing steps fall back to scikit-learn's digits and the
GLANN quality step is skipped. FID needs ``torch-fidelity`` installed; without it that step is skipped.
genframe itself must be installed (``pip install -e .``, or ``pip install --no-deps --no-build-isolation
-e .`` on a machine that has the dependencies but no package index).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attrs
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: Never start a step with less time than this left: it would only be killed.
MIN_STEP_SECONDS = 20


@attrs.frozen
class Step:
    name: str
    argv: list[str]  # after the Python interpreter
    cap: int  # seconds at most
    needs: str | None = None  # why it cannot run here, or None


def mnist_present() -> bool:
    root = Path(os.environ.get("GENFRAME_DATA") or REPO.parent / "shared" / "datasets") / "mnist"
    return any(root.glob("*idx3-ubyte*"))


def steps(out: Path, smoke: bool) -> list[Step]:
    """The suite, in order of importance; ``smoke``: tiny sizes on the CPU."""
    device = "cpu" if smoke else "cuda"
    script = lambda name: str(HERE / f"{name}.py")  # noqa: E731
    json_of = lambda name: str(out / f"{name}.json")  # noqa: E731
    no_mnist = None if mnist_present() else "MNIST IDX files not found (set GENFRAME_DATA)"
    no_fidelity = None if importlib.util.find_spec("torch_fidelity") else "torch-fidelity is not installed"
    tests = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", str(REPO / "tests")]
    if smoke:  # no CUDA test can run: collect them, so that a broken import still shows
        tests.append("--collect-only")
    return [
        Step("gpu_tests", tests, cap=150),
        Step("engine_overhead", [script("engine_overhead"), "--device", device, "--out", json_of("engine_overhead"),
                                 *(["--steps", "4", "--warmup", "2"] if smoke else ["--steps", "300", "--warmup", "30"])],
             cap=150),
        Step("training_epochs", [script("training_epochs"), "--device", device, "--fast", "--out",
                                 json_of("training_epochs"),
                                 *(["--images", "256", "--repeats", "1"] if smoke else ["--repeats", "5"])], cap=120),
        Step("neighbours", [script("neighbours"), "--device", device, "--out", json_of("neighbours"),
                            *(["--quick", "--repeats", "1"] if smoke else ["--sweep"])], cap=120),
        Step("glann_quality", [script("quality"), "--systems", "glann", "--fast", "--device", device,
                               "--set", "stages.0.trainer.loss.type=l1", "--out", str(out / "glann_quality"),
                               *(["--quick", "--iterations", "3", "--n", "200", "--set", "stages.0.trainer.epochs=1",
                                  "--set", "stages.1.trainer.epochs=1"] if smoke else [])],
             cap=240, needs=no_mnist),
        Step("flow_sampling", [script("flow_sampling"), "--device", device, "--out", json_of("flow_sampling"),
                               *(["--n", "32", "--batch-size", "16", "--steps", "2", "--width", "8",
                                  "--repeats", "1"] if smoke else [])], cap=120),
        Step("metrics", [script("metrics"), "--device", device, "--out", json_of("metrics"),
                         *(["--n", "8", "--batch-size", "8", "--skip-distance"] if smoke else ["--n", "50000"])],
             cap=180, needs=no_fidelity),
        Step("scaling", [script("scaling"), "--device", device, "--out", json_of("scaling"),
                         *(["--quick", "--data", "digits", "--batch-sizes", "16", "--sizes", "256", "--repeats", "1",
                            "--wgan-interval", "2"] if smoke else [])], cap=300),
        # The official GLANN procedure (pixel L1, 10k images) at the paper's step counts: GLO 1,200
        # epochs halved every 120, IMLE 300 epochs; about 4.5 hours a seed on one CPU thread.
        Step("official_glann_equal_steps", [script("official_glann"), "--device", device, "--seeds", "0",
                                            "--out", str(out / "official_glann_equal_steps"),
                                            *(["--glo-scale", "0.01", "--imle-epochs", "1", "--n", "200"] if smoke
                                              else ["--glo-scale", "6", "--imle-epochs", "300"])],
             cap=420, needs=no_mnist),
    ]


def environment() -> dict:
    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    if importlib.util.find_spec("triton"):
        import triton

        info["triton"] = triton.__version__
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader"], capture_output=True, text=True)
        info["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    return info


def run_step(step: Step, out: Path, limit: float) -> dict:
    """Run ``step`` with ``limit`` seconds at most, its output in ``<out>/<name>.log``; its record."""
    started = time.monotonic()
    command = [sys.executable, *step.argv]
    record = {"step": step.name, "command": " ".join(command[1:]), "limit_s": round(limit)}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results = out / f"{step.name}.json"
    results.unlink(missing_ok=True)  # a reused folder's old figures must not pass for this run's
    with (out / f"{step.name}.log").open("w") as log:
        try:
            code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=limit).returncode
            record.update(status="passed" if code == 0 else "failed", exit_code=code)
        except subprocess.TimeoutExpired:
            record["status"] = "timed out"
    record["seconds"] = round(time.monotonic() - started, 1)
    if results.exists():
        try:
            record["results"] = json.loads(results.read_text())
        except ValueError:
            record["results"] = None  # cut off while writing: the log says how far it got
    return record


def tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for logs and JSON results")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole suite (default 540)")
    parser.add_argument("--only", help="comma-separated step names to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, to check the suite itself")
    parser.add_argument("--tail", type=int, default=12, help="lines of each step's log printed when it ends")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("gpu_suite: no CUDA device here (use --smoke to check the suite on the CPU)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    machine = environment()
    (out / "environment.json").write_text(json.dumps(machine, indent=2) + "\n")
    chosen = steps(out, args.smoke)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {s.name for s in chosen}
        if unknown:
            sys.exit(f"gpu_suite: --only: unknown step(s) {', '.join(sorted(unknown))}; "
                     f"steps: {', '.join(s.name for s in chosen)}")
        chosen = [s for s in chosen if s.name in wanted]
    deadline = time.monotonic() + args.budget
    records = []
    for step in chosen:
        left = deadline - time.monotonic()
        if step.needs or left < MIN_STEP_SECONDS:
            why = step.needs or f"{left:.0f} s of the budget left"
            records.append({"step": step.name, "status": "skipped", "why": why})
            print(f"== {step.name}: skipped ({why})", flush=True)
        else:
            record = run_step(step, out, min(step.cap, left))
            records.append(record)
            print(f"== {step.name}: {record['status']} in {record['seconds']} s\n"
                  f"{tail(out / f'{step.name}.log', args.tail)}", flush=True)
        (out / "suite.json").write_text(json.dumps({"smoke": args.smoke, "budget_s": args.budget,
                                                    "environment": machine, "steps": records}, indent=2) + "\n")
    print("\n| step | status | seconds |\n| --- | --- | --- |")
    for record in records:
        print(f"| {record['step']} | {record['status']} | {record.get('seconds', '-')} |")
    if any(r["status"] in ("failed", "timed out") for r in records):
        sys.exit(1)


if __name__ == "__main__":
    main()
