"""genframe sweep: run a hyper-parameter sweep, all of it or one trial (for a scheduler's array job)."""

from __future__ import annotations

import argparse
import sys
from genframe.commands._args import count


def _cmd_sweep(args: argparse.Namespace) -> int:
    from genframe.sweep.plan import load_sweep
    from genframe.sweep.run import default_out, run_sweep, trial_status

    sweep = load_sweep(args.sweep, args.set)
    out = args.out or default_out(args.sweep)
    trials = sweep.trials()
    if args.list:
        finals = sum(t.phase == "final" for t in trials)
        print(f"{len(trials)} trials ({len(trials) - finals} search, {finals} final re-runs) in {out}")
        for t in trials:
            status = trial_status(sweep, out, t)
            print(f"{t.index:5d}  {t.phase:6}  {t.model}  "
                  f"{'setting ' + str(t.setting) if t.phase == 'search' else 'best setting'}  seed {t.seed}  "
                  f"{status}")
        return 0
    ended = run_sweep(sweep, out, trial=args.trial, device=args.device, worker=args.worker,
                      echo=lambda line: print(line, file=sys.stderr, flush=True))
    failed = [r for r in ended if r["status"] == "failed"]
    pruned = sum(r["status"] == "pruned" for r in ended)
    print(f"{out}: {len(ended)} trials ran, {len(failed)} failed" + (f", {pruned} pruned" if pruned else "")
          + f"; the table: genframe table {out}")
    return 1 if failed else 0


def register(sub) -> None:
    sweep = sub.add_parser("sweep", help="run a seeded hyper-parameter sweep (or one of its trials)")
    sweep.add_argument("sweep", help="sweep file (YAML) or fsspec URL")
    sweep.add_argument("--out", help="sweep folder, any fsspec URL (default runs/sweeps/<sweep file name>)")
    sweep.add_argument("--trial", type=count(0), metavar="K",
                       help="run only trial K (e.g. $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX)")
    sweep.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides the specs)")
    sweep.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                       help="override a field of the sweep file, e.g. budget=10 (repeatable)")
    sweep.add_argument("--list", action="store_true", help="print the trials and their status, run nothing")
    sweep.add_argument("--worker", metavar="ID",
                       help="strategy optuna: this worker's id in the studies (default: trial-K with --trial K, "
                            "else the machine's name); a worker restarted with its id continues its trial")
    sweep.set_defaults(func=_cmd_sweep)
