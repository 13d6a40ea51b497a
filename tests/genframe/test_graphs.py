"""Whole-step CUDA graphs: replayed steps train exactly like eager ones (emulated on the CPU, captured on a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from genframe import GenframeError, SpecError
from genframe.api import train
from genframe.build.sampler import Sampler
from genframe.training.context import BuildContext, StageContext
from genframe.training import graphs
from genframe.ops.graphs import CaptureError, RecordedGraph
from genframe.training.graphs import WARMUP_STEPS, StepRunner, resolve_mode
from genframe.storage import RunStorage
from genframe.trained.loading import load_trained
from genframe_plugins.networks.flows import FlowMapper

from ..conftest import checkpoint_weights, crash_and_resume
from .tiny_specs import (BEGAN, CONDITIONAL, GAN, GLANN, GLANN_FLOW, RELATIVISTIC, VAE, assert_same_losses,
                         losses)

# More steps than warm-up + capture, so that most steps are replays; a step schedule that changes
# the learning rate among the replays, which a rate frozen into the graph would miss.
WGAN_GP = copy.deepcopy(GAN)
WGAN_GP["stages"][0]["trainer"].update(steps=10, optimizer={
    "type": "adam", "lr": 1e-3, "betas": [0.0, 0.9], "schedule": {"type": "step", "every_epochs": 0.5}})

# EMA generator, R1 and DRAGAN penalties, weight clipping: after-update hooks and more random draws.
EMA_R1 = copy.deepcopy(GAN)
EMA_R1["components"]["generator"] = {"type": "ema", "decay": 0.9, "start": 2,
                                     "generator": GAN["components"]["generator"]}
EMA_R1["stages"][0]["trainer"].update(
    divergence={"type": "nonsaturating"}, steps=8,
    constraints=[{"type": "r1", "gamma": 1.0}, {"type": "dragan", "weight": 1.0},
                 {"type": "weight_clipping", "c": 0.5}])

BEGAN_LONG = copy.deepcopy(BEGAN)  # k_t must be updated in place, not rebound
BEGAN_LONG["stages"][0]["trainer"]["steps"] = 8

WAE = copy.deepcopy(VAE)
WAE["components"]["encoder"] = {"type": "conv_encoder", "dim": 8, "width": 8, "norm": "none"}
WAE["stages"][0]["trainer"]["latent_divergence"] = {"type": "mmd", "prior": "prior"}

IMAGE_IMLE = {  # image-space IMLE: its refresh steps run eagerly between replays
    **{k: GLANN[k] for k in ("seed", "device", "data", "evaluation")},
    "name": "imle",
    "components": {"prior": {"type": "gaussian", "dim": 8},
                   "generator": {"type": "dcgan_generator", "latent_dim": 8, "width": 8, "norm": "none"}},
    "stages": [{"name": "imle", "trainer": {"type": "imle", "model": "generator", "prior": "prior", "targets": "data",
                                            "epochs": 3, "batch_size": 64, "staleness": 1, "sample_factor": 1.0}}],
    "sampler": ["prior", "generator"], "log_every": 1,
}


def _emulated(spec: dict) -> dict:
    return {**spec, "name": spec["name"] + "-graphs", "cuda_graphs": "emulate"}


def _assert_same_weights(a: str, b: str, rtol: float, atol: float) -> None:
    expected, got = checkpoint_weights(a), checkpoint_weights(b)
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("spec", [WGAN_GP, EMA_R1, BEGAN_LONG, CONDITIONAL, RELATIVISTIC, GLANN, GLANN_FLOW, VAE, WAE,
                                  IMAGE_IMLE],
                         ids=lambda s: s["name"])
def test_replayed_steps_train_like_eager_steps(spec, write_spec, tmp_path, monkeypatch):
    path = write_spec(_emulated(spec))
    replayed = train(path, out=str(tmp_path / "graphs")).url
    with monkeypatch.context() as never_captured:  # the same settings, every step run eagerly
        never_captured.setattr(graphs, "WARMUP_STEPS", 10**9)
        eager = train(path, out=str(tmp_path / "eager")).url
    assert len(losses(tmp_path / "eager")) >= 4
    # A replay runs the very operations of an eager step, on tensors of the same shapes, in the same
    # process at the same thread count: the same kernels sum in the same order, so the numbers are
    # bit-identical (measured: at 1 and 2 threads, float32 and float64, every spec here). That
    # capturable optimisers follow plain ones is tested in test_training.
    assert_same_losses(losses(tmp_path / "eager"), losses(tmp_path / "graphs"), rel=0)
    _assert_same_weights(eager, replayed, rtol=0, atol=0)


def test_the_capture_is_announced(write_spec, tmp_path, capsys):
    train(write_spec(_emulated(WGAN_GP)), out=str(tmp_path / "run"))
    assert f"stage 'gan': step {WARMUP_STEPS + 1} captured as an emulated graph; later steps replay it" \
        in capsys.readouterr().err


def test_a_replayed_run_resumes_exactly(write_spec, tmp_path):
    spec = {**_emulated(WGAN_GP), "checkpoint_every": 6}
    # crashes after the checkpoint of step 6: the resumed run warms up again and captures anew
    reference, resumed = crash_and_resume(write_spec(spec), "gan", 8, tmp_path)  # asserts identical weights
    # one process, one thread count: the resumed run repeats the reference's arithmetic exactly
    assert_same_losses(losses(tmp_path / "reference"), losses(tmp_path / "interrupted"), rel=0)


def test_checkpoints_of_replayed_runs_hold_what_eager_optimisers_hold(write_spec, tmp_path):
    run = train(write_spec({**_emulated(WGAN_GP), "checkpoint_every": 6}), out=str(tmp_path / "run")).url
    storage = RunStorage(run)
    mid = next(e for e in storage.checkpoints() if e["step"] == 6)
    state = torch.load(f"{run}/{mid['file']}", weights_only=True)
    updates = {"generator": 6, "critic": 6 * WGAN_GP["stages"][0]["trainer"]["n_critic"]}
    for key, saved in state["trainer"]["optimisers"]["optimisers"].items():
        for group in saved["optimizer"]["param_groups"]:
            assert isinstance(group["lr"], float) and group["capturable"] is False
            assert "eager_capturable" not in group
        steps = [s["step"] for s in saved["optimizer"]["state"].values()]
        assert steps and all(s.device.type == "cpu" and float(s) == updates[key] for s in steps)


def test_a_trainer_without_graph_support_is_refused_at_build(write_spec, tmp_path):
    from genframe.api import load_system

    spec = copy.deepcopy(GLANN)
    spec["cuda_graphs"] = True
    spec["components"]["fitted"] = {"type": "fitted_gaussian", "dim": 8}
    spec["stages"].append({"name": "fit", "trainer": {"type": "fit_prior", "encoder": "codes", "prior": "fitted"}})
    with pytest.raises(SpecError) as info:
        load_system(write_spec(spec))
    assert str(info.value).endswith("spec.yaml: cuda_graphs: stage 'fit': trainer 'fit_prior' does not support "
                                    "CUDA graph capture of its steps; set cuda_graphs: false")


def test_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_mode(False, cuda) == "off"
    assert resolve_mode("emulate", cpu) == "emulate"
    assert resolve_mode(True, cuda) == "cuda"
    assert resolve_mode(True, cpu) == "off"  # with a warning: nothing to capture on the CPU


# --------------------------------------------------------------------------- the recorded graph


def test_a_recorded_step_replays_on_what_its_tensors_hold_now():
    source, total = torch.tensor([1.0, 2.0]), torch.zeros(())
    graph = RecordedGraph()
    out = graph.capture(lambda: {"double": source * 2, "total": total.add_(source.sum())})
    assert out["double"].tolist() == [2.0, 4.0] and float(total) == 3.0
    source.copy_(torch.tensor([5.0, 7.0]))  # updated in place: the replay sees it
    graph.replay()
    assert out["double"].tolist() == [10.0, 14.0] and float(total) == 15.0
    source = torch.tensor([100.0, 100.0])  # rebound: the replay does not see it, as on a GPU
    graph.replay()
    assert out["double"].tolist() == [10.0, 14.0] and float(total) == 27.0


def test_a_recorded_step_replays_autograd_and_the_optimiser():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.SGD([weight], lr=0.1)
    inputs = torch.randn(3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (weight * inputs).square().sum()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    expected_weight = weight.detach().clone()
    expected = []
    for _ in range(3):
        loss = (expected_weight * inputs).square().sum()
        expected.append(float(loss))
        expected_weight -= 0.1 * 2 * expected_weight * inputs.square()
    graph = RecordedGraph()
    out = graph.capture(step)  # runs the first step
    assert float(out["loss"]) == pytest.approx(expected[0])
    graph.replay()
    graph.replay()
    assert float(out["loss"]) == pytest.approx(expected[2])  # the captured outputs hold the last replay's
    torch.testing.assert_close(weight.detach(), expected_weight)


@pytest.mark.parametrize("host_read", [lambda t: t.sum().item(), lambda t: bool(t.sum() > 0), lambda t: t.nonzero()])
def test_reading_a_value_on_the_host_during_capture_is_refused(host_read):
    with pytest.raises(CaptureError, match="host"):
        RecordedGraph().capture(lambda: {"x": host_read(torch.ones(3))})


class _ItemTrainer:
    """A trainer whose step reads a loss on the host: it runs eagerly, but cannot be captured."""

    type_name = "item"

    def __init__(self):
        self.steps = 0

    def replayable(self, step):
        return True

    def train_step(self, step):
        self.steps += 1
        loss = torch.ones(()) * step
        if loss.item() > 100:
            raise AssertionError
        return {"loss": loss}


def _context() -> StageContext:
    build = BuildContext(num_examples=8, channels=1, image_size=4, device=torch.device("cpu"))
    return StageContext(build=build, components={}, stage="s", stage_index=0, generator=torch.Generator())


def test_the_runner_warms_up_captures_and_names_the_setting_when_capture_fails():
    trainer = _ItemTrainer()
    runner = StepRunner(trainer, _context(), "emulate", where="spec.yaml: stage 's'")
    for step in range(WARMUP_STEPS):
        runner(step)
    assert trainer.steps == WARMUP_STEPS
    with pytest.raises(CaptureError) as info:
        runner(WARMUP_STEPS)
    message = str(info.value)
    assert message.startswith("spec.yaml: stage 's'") and message.endswith("set cuda_graphs: false")
    assert "\n" not in message


def test_running_out_of_memory_while_capturing_is_reported_as_such(write_spec, tmp_path, monkeypatch):
    def exhausted(self, step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(RecordedGraph, "capture", exhausted)
    with pytest.raises(GenframeError, match=r"out of GPU memory; lower stages\[0\]\.trainer\.batch_size"):
        train(write_spec(_emulated(WGAN_GP)), out=str(tmp_path / "run"))


@pytest.mark.cuda
@pytest.mark.parametrize("spec", [WGAN_GP, BEGAN_LONG, RELATIVISTIC, GLANN, IMAGE_IMLE,
                                  {**WGAN_GP, "name": "streamed", "data_placement": "host"}], ids=lambda s: s["name"])
def test_cuda_graphs_train_like_eager_steps_on_a_gpu(spec, write_spec, tmp_path, monkeypatch):
    # A replay runs the captured kernels; deterministic convolution algorithms make the eager run
    # comparable with it, rather than differing by cuDNN's atomics in the weight gradients.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    on_gpu = {**spec, "device": "cuda"}
    train(write_spec(on_gpu, "eager.yaml"), out=str(tmp_path / "eager"))
    train(write_spec({**on_gpu, "cuda_graphs": True}, "graphs.yaml"), out=str(tmp_path / "graphs"))
    assert_same_losses(losses(tmp_path / "eager"), losses(tmp_path / "graphs"))


# --------------------------------------------------------------------------- sampling through graphs

#: A flow mapper with the stochastic solver: links that draw random numbers of their own.
STOCHASTIC_FLOW = {**GLANN_FLOW, "name": "stochastic-flow", "components": {
    **GLANN_FLOW["components"],
    "mapper": {**GLANN_FLOW["components"]["mapper"], "solver": {"type": "stochastic", "steps": 3, "churn": 1.0}}}}


@pytest.fixture(scope="module")
def stochastic_flow_run(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("stochastic-flow")
    (folder / "spec.yaml").write_text(yaml.safe_dump(STOCHASTIC_FLOW))
    return train(str(folder / "spec.yaml"), out=str(folder / "run")).url


def _sampled(run_url: str, graphs, seed: int = 0, batches: int = 3) -> tuple[torch.Tensor, Sampler]:
    system, device = load_trained(run_url)
    sampler = Sampler(system, device, graphs=graphs)
    return sampler(5 * batches, torch.Generator().manual_seed(seed), batch_size=5), sampler


def test_the_seed_fixes_what_links_draw_and_the_global_random_state_is_left_alone(stochastic_flow_run):
    system, device = load_trained(stochastic_flow_run)
    before = torch.get_rng_state()
    first = Sampler(system, device, graphs=False)(15, torch.Generator().manual_seed(0), batch_size=5)
    assert torch.equal(torch.get_rng_state(), before)
    again, _ = _sampled(stochastic_flow_run, False)
    other, _ = _sampled(stochastic_flow_run, False, seed=1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    # the solver's own noise matters: without churn the same seed gives other images
    system.components["mapper"].solver.churn = 0.0
    deterministic = Sampler(system, device, graphs=False)(15, torch.Generator().manual_seed(0), batch_size=5)
    assert not torch.equal(first, deterministic)


def test_replayed_sampling_gives_the_eager_samples(stochastic_flow_run, capsys):
    eager, _ = _sampled(stochastic_flow_run, False)
    replayed, sampler = _sampled(stochastic_flow_run, "emulate")
    # batch 1 warms up, batch 2 is captured, batch 3 replays the capture with its own noise and seed
    assert [type(r).__name__ for r in sampler._replays.values()] == ["_Replay"]
    torch.testing.assert_close(replayed, eager, rtol=0, atol=0)
    assert "cannot be captured" not in capsys.readouterr().err


def test_a_chain_that_reads_values_on_the_host_samples_eagerly_with_a_warning(stochastic_flow_run, capsys,
                                                                             monkeypatch):
    eager, _ = _sampled(stochastic_flow_run, False)
    original = FlowMapper.forward
    # a value read on the host (here a boolean of a tensor) cannot be part of a graph
    monkeypatch.setattr(FlowMapper, "forward", lambda self, noise: original(self, noise) * bool(noise.isfinite().all()))
    fallback, sampler = _sampled(stochastic_flow_run, "emulate")
    assert sampler.graphs == "off" and "cannot be captured" in capsys.readouterr().err
    torch.testing.assert_close(fallback, eager, rtol=0, atol=0)


@pytest.mark.cuda
def test_cuda_graph_sampling_matches_eager_sampling_on_a_gpu(stochastic_flow_run):
    system, device = load_trained(stochastic_flow_run, device="cuda")
    eager = Sampler(system, device, graphs=False)(30, torch.Generator(device).manual_seed(0), batch_size=10)
    sampler = Sampler(system, device, graphs=True)
    replayed = sampler(30, torch.Generator(device).manual_seed(0), batch_size=10)
    assert sampler.graphs == "cuda" and len(sampler._replays) == 1
    torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-4)


def test_replayed_sampling_of_a_guided_pixel_flow_gives_the_eager_samples(write_spec, tmp_path):
    # labels are graph inputs too; a U-Net, a diffusion path and guidance's doubled batch inside the graph
    spec = {"name": "guided", "seed": 0, "device": "cpu", "data": {"type": "digits", "image_size": 8, "limit": 32},
            "components": {"noise": {"type": "gaussian"},
                           "generator": {"type": "flow", "guidance": 2.0, "path": {"type": "vp_cosine"},
                                         "solver": {"type": "heun", "steps": 2},
                                         "network": {"type": "unet", "width": 8, "multipliers": [1, 2], "blocks": 1,
                                                     "num_classes": 10}}},
            "stages": [{"name": "flow", "trainer": {"type": "flow_matching", "model": "generator", "targets": "data",
                                                    "epochs": 1, "batch_size": 16}}],
            "sampler": ["noise", "generator"], "evaluation": {"n_samples": 4}}
    run = train(write_spec(spec), out=str(tmp_path / "run")).url
    eager, _ = _sampled(run, False)
    replayed, sampler = _sampled(run, "emulate")
    assert len([r for r in sampler._replays.values() if r is not None]) == 1
    torch.testing.assert_close(replayed, eager, rtol=0, atol=0)
