"""genframe export: a trained run as a folder to share (safetensors weights, spec, model card)."""

from __future__ import annotations

import argparse

from genframe.commands._args import count


def _cmd_export(args: argparse.Namespace) -> int:
    from genframe.trained.export import export_run

    url = export_run(args.run, args.out, checkpoint=args.checkpoint, samples=args.samples, seed=args.seed)
    print(f"wrote {url}: model.safetensors, spec.yaml, run.json, metrics.jsonl, README.md"
          + (", samples.png" if args.samples else ""))
    return 0


def register(sub) -> None:
    cmd = sub.add_parser("export", help="write a trained run as a folder to share: safetensors weights of the "
                                        "sampler chain, the spec, a model card (no optimiser state, no pickle)")
    cmd.add_argument("run", help="run folder")
    cmd.add_argument("out", help="new folder, any fsspec URL (e.g. a local folder to upload to the Hugging Face Hub)")
    cmd.add_argument("--checkpoint", choices=("last", "best"), default="last")
    cmd.add_argument("--samples", type=count(0), default=64, help="images in the model card's sample grid (0: none)")
    cmd.add_argument("--seed", type=count(0), default=0, help="seed of the sample grid")
    cmd.set_defaults(func=_cmd_export)
