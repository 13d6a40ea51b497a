"""``genframe export``: a trained run as the folder people exchange, not as resumable checkpoints.

A run folder holds pickled checkpoints with optimiser and random states, made to resume training.
What is shared is smaller and safer: the resolved spec, ``run.json`` (the data's shape, versions),
``model.safetensors`` with the weights of the sampler chain's components only (an EMA generator's
averaged weights included; no optimiser state, no pickle), the log of losses and evaluations, a
sample grid and a ``README.md`` model card in the Hugging Face layout. ``genframe sample``,
``eval``, ``interpolate`` and ``report`` read such a folder like a run folder, through any fsspec
URL: a folder on the Hugging Face Hub (``hf://...``) works with ``huggingface_hub`` installed.
"""

from __future__ import annotations

import json

import torch
import yaml
from safetensors.torch import save as safetensors_bytes

from genframe._version import __version__
from genframe.build.sampler import sample_images
from genframe.components.registry import Registry
from genframe.components.roles import ModuleComponent
from genframe.ops.images import image_grid, png_bytes
from genframe.storage import EXPORT_FORMAT, EXPORTED_WEIGHTS, RunStorage
from genframe.trained.loading import load_trained

SAMPLE_GRID = "samples.png"


def export_run(run_url: str, out: str, *, checkpoint: str = "last", samples: int = 64, seed: int = 0,
               registry: Registry | None = None) -> str:
    """Write the export of ``run_url``'s checkpoint (``last`` or ``best``) into the new folder ``out``."""
    source = RunStorage.open(run_url)
    system, device = load_trained(run_url, device="cpu", registry=registry, checkpoint=checkpoint)
    target = RunStorage.create(out)
    tensors, names = {}, []
    for name in system.sampler:
        comp = system.components[name]
        if isinstance(comp, ModuleComponent):
            names.append(name)
            for key, value in comp.state_dict().items():
                tensors[f"{name}.{key}"] = value.detach().cpu().contiguous().clone()  # no shared storage
    metadata = {"format": EXPORT_FORMAT, "genframe": __version__,
                "spec_name": system.name, "components": ",".join(names), "checkpoint": checkpoint}
    target.write_bytes(EXPORTED_WEIGHTS, safetensors_bytes(tensors, metadata=metadata))
    spec = source.read_spec()
    target.write_text("spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    target.write_json("run.json", {**source.read_json("run.json"), "exported": {
        "from": source.url, "checkpoint": checkpoint, "components": names}})
    log = source.read_log()
    target.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in log))
    if samples:
        images = sample_images(system, device, samples, seed)
        target.write_bytes(SAMPLE_GRID, png_bytes(image_grid(images)))
    target.write_text("README.md", model_card(system, spec, log, names, tensors, bool(samples), out))
    return target.url


def _parameter_count(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in tensors.values() if t.is_floating_point())


def _stage_line(stage: dict) -> str:
    trainer = stage["trainer"]
    length = next((f"{trainer[k]} {k}" for k in ("steps", "epochs") if k in trainer), "")
    budget = f", stopped after {stage['seconds']:g} s of training" if stage.get("seconds") else ""
    return f"- **{stage['name']}**: `{trainer['type']}` trainer, {length}{budget}"


def model_card(system, spec: dict, log: list[dict], names: list[str], tensors: dict[str, torch.Tensor],
               with_samples: bool, out: str) -> str:
    """A README.md in the Hugging Face model card layout: what the model is, how it was trained, its
    numbers with their protocol, and how to load it."""
    evaluations = [r for r in log if r.get("event") == "evaluation"]
    last = evaluations[-1] if evaluations else None
    chain = " -> ".join(f"{n} (`{spec['components'][n]['type']}`)" for n in system.sampler)
    lines = ["---", "library_name: genframe", "tags:", "- genframe", "- generative-model",
             f"- {spec['data']['type']}", "---", "", f"# {system.name}", "",
             f"A generative image model trained with [genframe](https://pypi.org/project/genframe/) on "
             f"`{spec['data']['type']}` data. It samples through the chain {chain}.", "",
             f"`model.safetensors` holds the weights of {', '.join(f'`{n}`' for n in names)} "
             f"({_parameter_count(tensors):,} parameters; no optimiser state), `spec.yaml` the full resolved "
             "spec, `metrics.jsonl` the training log.", ""]
    if with_samples:
        lines += [f"![samples]({SAMPLE_GRID})", ""]
    lines += ["## Training", "", f"Seed {spec.get('seed')}, precision {spec.get('precision')}, on "
              f"`{spec['data']['type']}` ({json.dumps(spec['data'])}).", ""]
    lines += [_stage_line(stage) for stage in spec["stages"]]
    lines += ["", "## Evaluation", ""]
    if last is None:
        lines.append("The run logged no metrics; measure them with `genframe eval` on this folder.")
    else:
        values = {k: v for k, v in last.items() if isinstance(v, (int, float)) and k != "step"}
        lines += [f"At stage `{last['stage']}`, step {last['step']}:", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" for k, v in values.items()]
        lines += ["", "Protocol (numbers of another protocol are not comparable):", "", "```json",
                  json.dumps(last.get("protocol", {}), indent=1), "```"]
    lines += ["", "## Use", "", "```bash", "pip install genframe",
              f"genframe sample {out} --n 64 --seed 0 --out samples.npz", "```", "", "```python",
              "from genframe.api import sample", "", f"images, _ = sample({out!r}, 64, seed=0)  # uint8, N x C x H x W",
              "", "from safetensors.torch import load_file  # the weights alone, no genframe needed",
              "", "weights = load_file('model.safetensors')", "```", ""]
    return "\n".join(lines)
