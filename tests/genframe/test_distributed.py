"""Data-parallel training: torchrun with 2 gloo processes on the CPU against one process, same global batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genframe import distributed
from genframe.context import EpochBatches
from genframe.errors import GenframeError
from genframe.storage import CHECKPOINT_INDEX, RunStorage

# The networks have no batch normalisation: SyncBatchNorm needs CUDA, so on the CPU each process
# would normalise its own shard and the losses would differ from one process by more than rounding.
GAN = {
    "name": "ddp-wgan-gp", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 16, "limit": 256},
    "components": {
        "prior": {"type": "gaussian", "dim": 8},
        "generator": {"type": "dcgan_generator", "latent_dim": 8, "width": 8, "norm": "none"},
        "critic": {"type": "dcgan_critic", "width": 8},
    },
    "stages": [{"name": "gan", "trainer": {
        "type": "adversarial", "divergence": {"type": "wasserstein"}, "n_critic": 2, "batch_size": 16, "steps": 6,
        "constraints": [{"type": "gradient_penalty", "weight": 10}, {"type": "consistency", "weight": 1, "shift": 2}],
    }}],
    "sampler": ["prior", "generator"],
    "evaluation": {"n_samples": 16},
    "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 10,
}

GLANN = {
    "name": "ddp-glann", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 16, "limit": 256},
    "components": {
        "codes": {"type": "latent_codes", "dim": 8},
        "generator": {"type": "dcgan_generator", "latent_dim": 8, "width": 8, "norm": "none"},
        "noise": {"type": "gaussian", "dim": 4},
        "mapper": {"type": "mlp_mapper", "in_dim": 4, "out_dim": 8, "hidden": [16], "batch_norm": False},
    },
    "stages": [
        {"name": "glo", "trainer": {"type": "autoencoding", "encoder": "codes", "generator": "generator",
                                    "loss": {"type": "lap1"}, "epochs": 2, "batch_size": 32}},
        {"name": "mapper", "trainer": {"type": "imle", "model": "mapper", "prior": "noise", "targets": "codes",
                                       "epochs": 2, "batch_size": 32, "noise": 0.1}},
    ],
    "sampler": ["noise", "mapper", "generator"],
    "evaluation": {"n_samples": 16},
    "log_every": 2,
}

VAE = {
    "name": "ddp-vae", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 16, "limit": 256},
    "components": {
        "encoder": {"type": "gaussian_encoder", "dim": 8, "width": 8, "norm": "none"},
        "generator": {"type": "dcgan_generator", "latent_dim": 8, "width": 8, "norm": "layer"},
        "prior": {"type": "gaussian", "dim": 8},
    },
    "stages": [{"name": "vae", "trainer": {"type": "autoencoding", "encoder": "encoder", "generator": "generator",
                                           "latent_divergence": {"type": "kl"},
                                           "epochs": 2, "batch_size": 32}}],
    "sampler": ["prior", "generator"],
    "evaluation": {"n_samples": 16},
    "log_every": 2,
}


# BEGAN: k_t must follow the global batch's energies; spectral norm's power iteration, EMA averages.
BEGAN = {
    "name": "ddp-began", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 16, "limit": 256},
    "components": {
        "prior": {"type": "uniform", "dim": 8},
        "generator": {"type": "began_generator", "latent_dim": 8, "width": 8},
        "critic": {"type": "autoencoder_critic", "latent_dim": 8, "width": 8},
    },
    "stages": [{"name": "gan", "trainer": {
        "type": "adversarial", "divergence": {"type": "began", "lambda_k": 0.5, "k_init": 0.5}, "n_critic": 1,
        "batch_size": 16, "steps": 6, "optimizer": {"type": "adam", "lr": 1e-3,
                                  "schedule": {"type": "plateau", "monitor": "convergence", "patience": 1}},
    }}],
    "sampler": ["prior", "generator"],
    "evaluation": {"n_samples": 16},
    "log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 10,
}

# Class-conditional hinge GAN with spectral norm: labels sharded with their images.
CONDITIONAL = {
    "name": "ddp-cgan", "seed": 0, "device": "cpu",
    "data": {"type": "digits", "image_size": 16, "limit": 256},
    "components": {
        "prior": {"type": "gaussian", "dim": 8},
        "generator": {"type": "dcgan_generator", "latent_dim": 8, "width": 8, "norm": "none", "num_classes": 10,
                      "embedding_dim": 4},
        "critic": {"type": "dcgan_critic", "width": 8, "num_classes": 10},
    },
    "stages": [{"name": "gan", "trainer": {
        "type": "adversarial", "divergence": {"type": "hinge"}, "constraints": [{"type": "spectral_norm"}],
        "n_critic": 2, "batch_size": 16, "steps": 4,
    }}],
    "sampler": ["prior", "generator"],
    "evaluation": {"n_samples": 16},
    "log_every": 1,
}


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _genframe(args: list[str], processes: int) -> None:
    """``genframe ARGS`` in one process, or under torchrun in ``processes`` gloo processes."""
    launcher = ([sys.executable, "-m", "genframe"] if processes == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                 "-m", "genframe"])
    result = subprocess.run([*launcher, *args], env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _losses(run: Path) -> list[dict]:
    """The logged training losses (evaluation records and wall-clock times left out)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records if "event" not in r]


def _assert_same_losses(a: list[dict], b: list[dict]) -> None:
    assert [(r["stage"], r["step"]) for r in a] == [(r["stage"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra.keys() - {"stage", "step"}:
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (ra["stage"], ra["step"], key)


@pytest.mark.parametrize("spec", [GAN, GLANN, VAE, BEGAN, CONDITIONAL], ids=lambda s: s["name"])
def test_two_processes_follow_one_process_with_the_same_global_batch(spec, write_spec, tmp_path):
    path = write_spec(spec)
    _genframe(["run", path, "--out", str(tmp_path / "one")], processes=1)
    _genframe(["run", path, "--out", str(tmp_path / "two")], processes=2)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) >= 4
    _assert_same_losses(one, two)
    # rank 0 alone wrote the folder: one record per logging point, the same checkpoints
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert json.loads((tmp_path / "two" / "run.json").read_text())["hardware"]["processes"] == 2
    # the same weights, up to Adam's near-sign steps where a gradient is ~0: there the rounding of
    # the all-reduce can move a weight by up to a learning rate (1e-3)
    weights_one = RunStorage(str(tmp_path / "one")).load_checkpoint()["components"]
    weights_two = RunStorage(str(tmp_path / "two")).load_checkpoint()["components"]
    for name, state in weights_one.items():
        for key, tensor in state.items():
            if tensor.is_floating_point():
                torch.testing.assert_close(weights_two[name][key], tensor, rtol=0, atol=1e-3)
    # trainer state that steers training (BEGAN's k_t) is the global batch's in every process
    mid_one, mid_two = _last_mid_stage(tmp_path / "one"), _last_mid_stage(tmp_path / "two")
    if mid_one is not None and "divergence" in mid_one["trainer"]:
        torch.testing.assert_close(mid_two["trainer"]["divergence"], mid_one["trainer"]["divergence"],
                                   rtol=1e-5, atol=1e-6)


def _last_mid_stage(run: Path) -> dict | None:
    """The newest checkpoint taken inside a stage (it holds the trainer's state), if any."""
    storage = RunStorage(str(run))
    inside = [e for e in storage.checkpoints() if e["step"] > 0]
    return torch.load(run / inside[-1]["file"], weights_only=True) if inside else None


def _crash_after(run: Path, step: int) -> None:
    """Leave the run as a crash right after the checkpoint of ``step`` would: later ones uncommitted."""
    index_path = run / CHECKPOINT_INDEX
    index = json.loads(index_path.read_text())
    index["checkpoints"] = [e for e in index["checkpoints"] if (e["stage"], e["step"]) <= (0, step)]
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_under_another_number_of_processes(before, after, write_spec, tmp_path):
    path = write_spec(GAN)
    _genframe(["run", path, "--out", str(tmp_path / "reference")], processes=1)
    _genframe(["run", path, "--out", str(tmp_path / "run")], processes=before)
    _crash_after(tmp_path / "run", step=2)
    _genframe(["run", "--resume", str(tmp_path / "run")], processes=after)
    _assert_same_losses(_losses(tmp_path / "reference"), _losses(tmp_path / "run"))


def test_a_batch_that_does_not_split_over_the_processes_is_refused(write_spec, tmp_path):
    spec = {**GAN, "stages": [{"name": "gan", "trainer": {**GAN["stages"][0]["trainer"], "batch_size": 15}}]}
    path = write_spec(spec)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "genframe"]
    result = subprocess.run([*launcher, "run", path, "--out", str(tmp_path / "run")], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert ("genframe: error: stages[0].trainer.batch_size: 15 does not split evenly over 2 processes; "
            "use a multiple of 2") in result.stderr
    # torchrun reports the failed children with a traceback of its own; none comes from genframe
    assert not re.search(r'File "[^"]*(genframe|plugins)/', result.stderr)


# ------------------------------------------------------------------ one process: everything is the identity


def test_a_single_process_world_changes_nothing():
    assert not distributed.launched() and distributed.current() == distributed.SINGLE
    t = torch.arange(6.0)
    assert distributed.per_example(lambda n: torch.arange(float(n)), 3).tolist() == [0.0, 1.0, 2.0]
    assert distributed.mean(t) is t
    assert distributed.gather_rows(lambda a, b: t[a:b] * 2, 6).tolist() == (t * 2).tolist()
    assert distributed.broadcast_object({"x": 1}) == {"x": 1}
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.average_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]


def test_epoch_batches_split_each_global_batch_into_contiguous_shares():
    whole = EpochBatches(40, 8, seed=3, device=torch.device("cpu"))
    shares = [EpochBatches(40, 8, seed=3, device=torch.device("cpu"), world=distributed.World(rank=r, size=4))
              for r in range(4)]
    for step in (0, 4, 5, 11):  # across epochs too
        assert torch.cat([s.indices(step) for s in shares]).tolist() == whole.indices(step).tolist()
    assert shares[0].local_batch_size == 2 and shares[0].steps_per_epoch == whole.steps_per_epoch
    with pytest.raises(GenframeError, match="does not split evenly over 3 processes"):
        EpochBatches(40, 8, seed=3, device=torch.device("cpu"), world=distributed.World(rank=0, size=3))


def test_the_device_of_a_process_follows_local_rank(monkeypatch):
    assert distributed.local_device("cuda") == "cuda"  # not launched: unchanged
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_device("cuda") == "cuda:3"
    assert distributed.local_device("cpu") == "cpu"
    with pytest.raises(GenframeError, match="would put every process on one GPU"):
        distributed.local_device("cuda:1")
    assert distributed.local_device("auto") == ("cuda:3" if torch.cuda.is_available() else "cpu")
