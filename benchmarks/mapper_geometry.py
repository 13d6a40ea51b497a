"""Where a GLANN run's second stage lands among its GLO codes, and what that costs the samples.

For each finished run whose sampler is noise -> mapper -> generator over a ``codes`` table (GLANN
with IMLE, ``specs/glann.yaml``, or with a flow, ``specs/glann_flow.yaml``), the digit judge reads,
at the same n:

- the samples,
- the samples with each mapper output replaced by its nearest code (cosine, as the generator
  normalises its input): which codes the mapper reaches,
- the generator on n of its own codes (reconstructions): how good the mapper could make it,

and the geometry: the outputs' mean cosine to their nearest code, against the codes' own mean
cosine to their nearest other code. Samples worse than their snapped version land between codes,
where the GLO generator draws blends; snapped samples worse than the reconstructions reach too few
codes, or the wrong mix of them.

    python benchmarks/mapper_geometry.py RUN... --n 2000 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import sys

from digit_judge import Judge, samples_of
from glann_ablation import glo_rows, judged, snapped_samples


def read_run(judge: Judge, url: str, seed: int = 0) -> dict:
    """The judge's three readings of one run and its geometry (see the module's docstring)."""
    images = samples_of(url, judge.n, seed, None)
    snapped, geometry = snapped_samples(url, judge.n, seed)
    reconstructions = glo_rows(judge, url, seed)["glo_reconstructions"]
    return {"samples": judged(judge, images), "snapped": judged(judge, snapped),
            "reconstructions": reconstructions, "geometry": geometry}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| run | samples FD / floor | snapped | reconstructions | samples IS / real | outputs' cosine to "
             "nearest code | codes' cosine to nearest other code | distinct codes reached |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for url, row in results.items():
        g = row["geometry"]
        lines.append(f"| {url} | {row['samples']['fd_over_floor']:.2f}x | {row['snapped']['fd_over_floor']:.2f}x | "
                     f"{row['reconstructions']['fd_over_floor']:.2f}x | {row['samples']['is_over_real']:.2f} | "
                     f"{g['cosine_to_nearest_code']:.3f} | {g['code_cosine_to_nearest_other_code']:.3f} | "
                     f"{g['distinct_codes_reached']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished GLANN run folders (URLs)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise the samples are drawn from")
    parser.add_argument("--json", help="write the protocol and every reading here")
    args = parser.parse_args()
    judge = Judge("mnist", args.n, log=lambda m: print(m, file=sys.stderr))
    results = {url: read_run(judge, url, args.seed) for url in args.runs}
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"protocol": judge.protocol(), "seed": args.seed, "runs": results}, f, indent=1)


if __name__ == "__main__":
    main()
