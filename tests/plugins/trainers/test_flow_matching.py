"""The flow-matching trainer for real: codes (GLANN with a flow) and class-conditional pixels with
guidance; an interrupted stage resumes to the same weights; the model is checked at build time."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import genframe
from genframe import SpecError
from genframe.api import load_system, sample, train
from genframe.components.registry import create_registry
from genframe.storage import RunStorage
from genframe.trained.evaluate import evaluate_run
from genframe.trained.loading import load_trained
from genframe_plugins.networks.flows import FlowGenerator, FlowMapper
from genframe_plugins.networks.solvers import Euler
from genframe_plugins.objectives.paths import Linear
from genframe_plugins.networks.time_mlp import TimeMLP

from ...conftest import TINY, crash_and_resume
from ..metrics.metric_helpers import PixelStatsPlugin


def glann_flow(path: str = "linear") -> dict:
    spec = copy.deepcopy(TINY)
    spec["name"] = "tiny-flow"
    spec["components"]["noise"] = {"type": "gaussian", "dim": 4}
    spec["components"]["mapper"] = {"type": "flow_mapper", "dim": 4, "network": {"type": "time_mlp", "hidden": 32},
                                    "path": {"type": path}, "solver": {"type": "heun", "steps": 4}}
    spec["stages"][1]["trainer"] = {"type": "flow_matching", "model": "mapper", "targets": "codes", "epochs": 15,
                                    "batch_size": 16, "optimizer": {"type": "adam", "lr": 3e-3}}
    spec["log_every"] = 12
    return spec


def pixel_flow(limit: int, epochs: int, generator: dict, network: dict | None = None, trainer: dict | None = None):
    """A flow generator on digits at 8 px with a tiny U-Net."""
    return {
        "name": "tiny-pixel-flow", "seed": 0, "device": "cpu",
        "data": {"type": "digits", "image_size": 8, "limit": limit},
        "components": {
            "noise": {"type": "gaussian", "dim": 64},
            "generator": {"type": "flow", "channels": 1, "image_size": 8, **generator,
                          "network": {"type": "unet", "width": 8, "multipliers": [1, 2], "blocks": 1,
                                      **(network or {})}},
        },
        "stages": [{"name": "flow", "trainer": {"type": "flow_matching", "model": "generator", "targets": "data",
                                                "epochs": epochs, "batch_size": 16, **(trainer or {})}}],
        "sampler": ["noise", "generator"], "evaluation": {"n_samples": 4}, "log_every": 1,
    }


def _log(url: str, stage: str) -> list[dict]:
    return [r for r in RunStorage.open(url).read_log() if r["stage"] == stage and "event" not in r]


@pytest.mark.parametrize("path", ["linear", "vp_cosine", "edm"])
def test_a_flow_learns_the_codes(path, write_spec, tmp_path):
    finished = train(write_spec(glann_flow(path)), out=str(tmp_path / "run"))
    losses = [r["loss"] for r in _log(finished.url, "mapper")]
    assert len(losses) >= 5 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) < sum(losses[:3])  # 60 steps on 64 codes: the regression improves
    images, _ = sample(finished.url, 3, seed=0)
    assert images.shape == (3, 1, 8, 8)


@pytest.mark.parametrize("standardize, expected", [(False, 1.25), (True, 2.0)])
def test_the_first_loss_is_what_an_untrained_network_leaves(standardize, expected, write_spec, tmp_path):
    # the network's output starts at zero: the linear path's first loss is E|x1 - x0|^2 per element,
    # about mean(x1^2) + 1: 1/4 + 1 for 4-d codes on the unit sphere, 1 + 1 for standardized codes
    spec = glann_flow()
    spec["components"]["mapper"]["standardize"] = standardize
    spec["log_every"] = 1
    finished = train(write_spec(spec), out=str(tmp_path / "run"))
    assert _log(finished.url, "mapper")[0]["loss"] == pytest.approx(expected, abs=0.35)


def test_standardized_codes_are_fitted_saved_and_undone_when_sampling(write_spec, tmp_path):
    finished = train(write_spec(glann_flow()), out=str(tmp_path / "run"))
    system, _ = load_trained(finished.url)
    mapper, codes = system.components["mapper"], system.components["codes"].codes.detach()
    torch.testing.assert_close(mapper.code_mean, codes.mean(0))  # from the checkpoint: no data read
    torch.testing.assert_close(mapper.code_std, codes.std(0))
    flowed = mapper.to_flow(codes)
    torch.testing.assert_close(flowed.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(flowed.std(0), torch.ones(4))
    # sampling maps the flow's output back: a network that outputs zero leaves noise scaled to the codes
    torch.nn.init.zeros_(mapper.network.out.weight)
    torch.nn.init.zeros_(mapper.network.out.bias)
    noise = torch.randn(5, 4)
    torch.testing.assert_close(mapper.eval()(noise), noise * mapper.code_std + mapper.code_mean)


def test_an_interrupted_flow_stage_resumes_exactly(write_spec, tmp_path):
    spec = glann_flow("edm")
    spec["checkpoint_every"] = 8
    reference, resumed = crash_and_resume(write_spec(spec), "mapper", 24, tmp_path)
    # crash_and_resume checked the final weights bit for bit; the logged losses match too
    assert [r["loss"] for r in _log(reference, "mapper")] == [r["loss"] for r in _log(resumed, "mapper")]


def test_class_conditional_pixels_with_guidance(write_spec, tmp_path):
    spec = pixel_flow(64, 2, {"guidance": 2.0, "path": {"type": "vp_cosine"}, "solver": {"type": "euler", "steps": 4}},
                      network={"num_classes": 10}, trainer={"label_dropout": 0.2})
    finished = train(write_spec(spec), out=str(tmp_path / "run"))
    assert len(_log(finished.url, "flow")) == 8
    images, _ = sample(finished.url, 4, seed=0, label=3)
    assert images.shape == (4, 1, 8, 8)


@pytest.mark.parametrize("change, field", [
    ({"mapper": {"dim": 6}}, "components.generator.latent_dim"),  # the sampler chain's check comes first
    ({"trainer": {"targets": "data"}}, "stages[1].trainer.targets"),
    ({"trainer": {"model": "generator"}}, "stages[1].trainer.model"),
])
def test_the_wiring_is_checked_at_build(change, field, write_spec):
    spec = glann_flow()
    spec["components"]["mapper"].update(change.get("mapper", {}))
    spec["components"]["noise"]["dim"] = spec["components"]["mapper"]["dim"]
    spec["stages"][1]["trainer"].update(change.get("trainer", {}))
    with pytest.raises(SpecError) as info:
        load_system(write_spec(spec))
    assert f": {field}: " in str(info.value), str(info.value)


def test_the_spec_records_the_solver_and_its_steps(write_spec, tmp_path):
    finished = train(write_spec(glann_flow()), out=str(tmp_path / "run"))
    recorded = json.loads(json.dumps(RunStorage.open(finished.url).read_spec()))
    assert recorded["components"]["mapper"]["solver"] == {"type": "heun", "steps": 4}


def test_evaluations_record_the_solver_and_its_network_evaluations(write_spec, tmp_path):
    registry = create_registry([PixelStatsPlugin()])
    spec = glann_flow()
    spec["evaluation"]["metrics"] = [{"type": "fid", "n": 16, "cache": False, "features": {"type": "pixel_stats"}}]
    finished = train(write_spec(spec), out=str(tmp_path / "run"), registry=registry)
    logged = [r for r in RunStorage.open(finished.url).read_log() if r.get("event") == "evaluation"][-1]
    expected = {"mapper": {"path": {"type": "linear", "time_sampling": "uniform"},
                           "solver": {"type": "heun", "steps": 4},
                           "evaluations": 6, "guidance": 1.0, "average": None}}  # 2 x 4 - 2: see test_solvers
    assert logged["protocol"]["sampling"] == expected
    assert evaluate_run(finished.url, registry=registry)["protocol"]["sampling"] == expected


def test_sampling_uses_the_average_of_the_weights(write_spec, tmp_path):
    spec = glann_flow()
    spec["components"]["mapper"]["average"] = 0.9
    spec["checkpoint_every"] = 8
    reference, resumed = crash_and_resume(write_spec(spec), "mapper", 24, tmp_path)  # the average resumes too
    weights = RunStorage.open(reference).load_checkpoint()["components"]["mapper"]
    trained = {k[len("network."):]: v for k, v in weights.items() if k.startswith("network.")}
    averaged = {k[len("averaged."):]: v for k, v in weights.items() if k.startswith("averaged.")}
    assert trained.keys() == averaged.keys() and any(not (trained[k] == averaged[k]).all() for k in trained)
    system, _ = load_trained(reference)
    mapper = system.components["mapper"]
    noise = torch.randn(5, 4)
    mapper.eval()
    with_average = mapper(noise)
    mapper.averaged = None  # the trained weights instead
    assert not torch.allclose(with_average, mapper(noise))


@pytest.mark.parametrize("step, decay", [(0, 0.1), (5, 0.4), (1000, 0.75)])
def test_the_average_follows_its_formula_and_warms_up(step, decay):
    """decay = min(average, (1 + step) / (10 + step)): early averages follow the network, so that
    they do not hold the initial weights long after training moved away from them."""
    flow = FlowMapper(dim=2, network=TimeMLP(hidden=4), average=0.75)
    flow.setup(genframe.BuildContext(num_examples=1, channels=1, image_size=1, device=torch.device("cpu")))
    before = [p.clone() for p in flow.averaged.parameters()]
    with torch.no_grad():
        for p in flow.network.parameters():
            p.add_(1.0)
    flow.update_average(step)
    for old, new, current in zip(before, flow.averaged.parameters(), flow.network.parameters()):
        torch.testing.assert_close(new, decay * old + (1 - decay) * current)


def test_a_pixel_flow_can_be_inverted_by_latent_search(write_spec, tmp_path):
    from genframe.trained import applications as app

    spec = pixel_flow(32, 1, {"solver": {"type": "euler", "steps": 2}})
    finished = train(write_spec(spec), out=str(tmp_path / "run"))
    trained = app.load(finished.url)
    images, _ = sample(finished.url, 2, seed=1)
    result = app.reconstruct(trained, images, search=app.Search(steps=5, candidates=4))
    assert result.images.shape == images.shape and torch.isfinite(result.psnr).all()


def test_edm_takes_sigma_data_from_the_images_and_keeps_it_for_sampling(write_spec, tmp_path):
    finished = train(write_spec(pixel_flow(32, 1, {"path": {"type": "edm"}, "solver": {"type": "heun", "steps": 3}})),
                     out=str(tmp_path / "run"))
    images, _ = load_system(write_spec(pixel_flow(32, 1, {"path": {"type": "edm"}}), "again.yaml")).data.load()
    rms = genframe.to_float(images).square().mean().sqrt().item()  # MNIST-like digits: mostly -1
    state = RunStorage.open(finished.url).load_checkpoint()["components"]["generator"]
    assert state["path.measured_sigma_data"].item() == pytest.approx(rms, rel=1e-5) and rms > 0.8
    trained, _ = load_trained(finished.url)  # no data: the checkpoint's value
    assert trained.components["generator"].path._scale().item() == pytest.approx(rms, rel=1e-5)


def test_a_pixel_flow_clips_its_denoised_estimates_to_the_image_range():
    """The exact estimate E[x1 | x_t] of images in [-1, 1] lies in [-1, 1]: only a network's error is cut."""
    class Overshooting(genframe.TimeNetwork):
        def __init__(self):
            torch.nn.Module.__init__(self)

        def forward(self, x, t, labels=None):
            return torch.full_like(x, 3.0)  # a velocity whose data estimate x + (1 - t) 3 leaves the range

    noise = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    for clip in (True, False):
        flow = FlowGenerator(channels=1, image_size=2, network={"type": "time_mlp"}, path={"type": "linear"},
                             solver={"type": "euler", "steps": 1}, clip_denoised=clip)
        flow.path, flow.solver, flow.network = Linear(), Euler(steps=1), Overshooting()
        out = flow.integrate(noise)  # one step from pure noise: the estimate itself
        torch.testing.assert_close(out, (noise + 3.0).clamp(-1, 1) if clip else noise + 3.0)
    assert not FlowMapper.clip_denoised  # codes have no range
