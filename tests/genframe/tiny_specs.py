"""Tiny specs of the model families (digits at 16 px, a few steps) and how to compare their runs.

Shared by the tests that check that another way of running a spec trains exactly like the plain
one: several processes (test_distributed), replayed CUDA graphs (test_graphs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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

# Relativistic average hinge with two critic updates: its generator loss reads real scores of the
# step's last batch, rescored after the critic's update, and batch means of the global batch.
RELATIVISTIC = {**GAN, "name": "ddp-rahinge",
                "stages": [{"name": "gan", "trainer": {**GAN["stages"][0]["trainer"], "divergence": {"type": "rahinge"},
                                                       "constraints": [{"type": "gradient_penalty", "weight": 10}]}}]}

# GLANN with a flow-matching mapper on the EDM path: per-example noise and times of the global batch.
GLANN_FLOW = {**GLANN, "name": "ddp-glann-flow",
              "components": {**GLANN["components"], "noise": {"type": "gaussian", "dim": 8},
                             "mapper": {"type": "flow_mapper", "dim": 8, "network": {"type": "time_mlp", "hidden": 16},
                                        "path": {"type": "edm"}, "solver": {"type": "euler", "steps": 4}}},
              "stages": [GLANN["stages"][0], {"name": "mapper", "trainer": {
                  "type": "flow_matching", "model": "mapper", "targets": "codes", "epochs": 2, "batch_size": 32}}]}

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


def losses(run: Path) -> list[dict]:
    """The logged training losses (evaluation records and wall-clock times left out)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records if "event" not in r]


def assert_same_losses(a: list[dict], b: list[dict], rel: float = 1e-4) -> None:
    assert [(r["stage"], r["step"]) for r in a] == [(r["stage"], r["step"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra.keys() - {"stage", "step"}:
            assert rb[key] == pytest.approx(ra[key], rel=rel, abs=rel / 100), (ra["stage"], ra["step"], key)
