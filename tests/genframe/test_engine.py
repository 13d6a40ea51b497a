"""The engine end to end on CPU: stages, run folder, resume, sampling, observers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genframe import GenframeError, ReconstructionLoss, component, hookimpl, param
from genframe.api import load_system, sample, train
from genframe.training.engine import run
from genframe.components.registry import create_registry
from genframe.storage import RunStorage

from ..conftest import checkpoint_weights, crash_and_resume
from .tiny_specs import assert_same_losses


def test_two_stage_run_writes_a_complete_run_folder(tiny_spec, write_spec, tmp_path):
    out = tmp_path / "run"
    finished = train(write_spec(tiny_spec), out=str(out))
    assert finished.url == str(out)
    resolved = RunStorage.open(str(out)).read_spec()
    # every default is written out, so the run can be reproduced from the folder alone
    assert resolved["stages"][0]["trainer"]["loss"] == {"type": "l2"}
    assert resolved["stages"][1]["trainer"]["sample_factor"] == 2.0
    log = RunStorage.open(str(out)).read_log()
    glo = [r for r in log if r["stage"] == "glo"]
    # 64 images, batch 16 -> 4 steps per epoch, 3 epochs; logged every 2 steps
    assert [r["step"] for r in glo] == [2, 4, 6, 8, 10, 12]
    assert all(np.isfinite(r["loss"]) for r in log)
    assert (out / "images" / "glo" / "reconstructions-0000012.png").exists()
    assert (out / "images" / "mapper" / "samples-0000008.png").exists()
    assert not (out / "images" / "glo" / "samples-0000012.png").exists()  # only the last stage samples
    checkpoint = RunStorage.open(str(out)).load_checkpoint()
    assert (checkpoint["stage"], checkpoint["step"]) == (2, 0)


def test_glo_loss_decreases(tiny_spec, write_spec, tmp_path):
    tiny_spec["stages"][0]["trainer"]["epochs"] = 30
    tiny_spec["log_every"] = 4
    train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    losses = [r["loss"] for r in RunStorage.open(str(tmp_path / "run")).read_log() if r["stage"] == "glo"]
    assert losses[-1] < 0.5 * losses[0]


def test_cpu_runs_are_reproducible(tiny_spec, write_spec, tmp_path):
    a = train(write_spec(tiny_spec), out=str(tmp_path / "a"))
    b = train(write_spec(tiny_spec), out=str(tmp_path / "b"))
    wa, wb = checkpoint_weights(a.url), checkpoint_weights(b.url)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ("glo", 2): the crash comes before the first checkpoint, so the resumed run starts afresh
@pytest.mark.parametrize("stage, step", [("glo", 2), ("glo", 6), ("mapper", 6), ("mapper", 2)])
def test_resume_after_interruption_gives_the_uninterrupted_result(tiny_spec, write_spec, tmp_path, stage, step):
    reference, resumed = crash_and_resume(write_spec(tiny_spec), stage, step, tmp_path)
    steps = [(r["stage"], r["step"]) for r in RunStorage.open(resumed).read_log()]
    reference_steps = [(r["stage"], r["step"]) for r in RunStorage.open(reference).read_log()]
    assert steps == reference_steps  # replayed steps are logged once


def test_resume_refuses_a_different_spec(tiny_spec, write_spec, tmp_path):
    path = write_spec(tiny_spec)
    train(path, out=str(tmp_path / "run"))
    tiny_spec["stages"][0]["trainer"]["epochs"] = 4
    with pytest.raises(GenframeError, match=r"differs from the run's spec.yaml at stages\[0\].trainer.epochs"):
        train(write_spec(tiny_spec, "other.yaml"), resume=str(tmp_path / "run"))


def test_reuse_trains_only_the_stages_that_differ_and_equals_a_full_run(tiny_spec, write_spec, tmp_path):
    source = train(write_spec(tiny_spec), out=str(tmp_path / "source"))
    tiny_spec["components"]["mapper"]["hidden"] = [16, 16]  # read by the mapper stage only
    tiny_spec["stages"][1]["trainer"]["sample_factor"] = 3.0
    variant = write_spec(tiny_spec, "variant.yaml")
    full = train(variant, out=str(tmp_path / "full"))
    reused = train(variant, out=str(tmp_path / "reused"), reuse=source.url)
    ours, theirs = checkpoint_weights(reused.url), checkpoint_weights(full.url)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    storage = RunStorage.open(reused.url)
    assert storage.read_json("run.json")["reused"] == {"run": source.url, "stages": ["glo"],
                                                       "checkpoint": "checkpoints/01-000000000.pt"}
    # the log holds the reused stage's records (copied) and the new stage's, as a full run's does
    steps = [(r["stage"], r["step"]) for r in storage.read_log()]
    assert steps == [(r["stage"], r["step"]) for r in RunStorage.open(full.url).read_log()]
    assert [c["stage"] for c in storage.checkpoints()][-1] == 2


@pytest.mark.parametrize("change, message", [
    (lambda s: s["data"].update(limit=32), "its data differs"),
    (lambda s: s.update(seed=1), "its seed differs"),
    (lambda s: s["stages"][0]["trainer"].update(epochs=2), r"not this spec's \(stages\[0\]\.trainer\.epochs of"),
    (lambda s: s["components"]["generator"].update(width=16), r"not this spec's \(components\.generator of stage"),
    (lambda s: None, "nothing is left to train"),
])
def test_reuse_refuses_what_it_cannot_share(tiny_spec, write_spec, tmp_path, change, message):
    source = train(write_spec(tiny_spec), out=str(tmp_path / "source"))
    change(tiny_spec)
    with pytest.raises(GenframeError, match=message):
        train(write_spec(tiny_spec, "variant.yaml"), out=str(tmp_path / "new"), reuse=source.url)
    assert not (tmp_path / "new").exists()  # refused before any folder is created


def _mapper_variant(tiny_spec: dict) -> dict:
    """The tiny GLANN with another mapper stage: it shares the GLO stage."""
    tiny_spec["stages"][1]["trainer"]["epochs"] = 3
    return tiny_spec


def _forget_stage_ends(run_url: str) -> None:
    """Make a run folder look like one written before stage-end checkpoints were kept: only the
    newest checkpoint is left, as keep_checkpoints: 1 used to leave it."""
    storage = RunStorage.open(run_url)
    index = storage.read_json("checkpoints/index.json")
    for entry in index["checkpoints"][:-1]:
        storage.fs.rm(storage.path(entry["file"]))
    index["checkpoints"] = index["checkpoints"][-1:]
    storage.write_json("checkpoints/index.json", index)


def test_every_stage_end_checkpoint_is_kept_so_a_finished_run_can_be_reused(tiny_spec, write_spec, tmp_path):
    """The shipped specs' settings (keep 3, several checkpoints inside the last stage) used to prune
    the GLO stage's end before the run finished."""
    tiny_spec.update(keep_checkpoints=1, checkpoint_every=2)
    source = train(write_spec(tiny_spec), out=str(tmp_path / "source"))
    ends = [(e["stage"], e["step"]) for e in RunStorage.open(source.url).checkpoints() if e["step"] == 0]
    assert ends == [(1, 0), (2, 0)]
    variant = write_spec(_mapper_variant(tiny_spec), "variant.yaml")
    reused = train(variant, out=str(tmp_path / "reused"), reuse=source.url)
    full = train(variant, out=str(tmp_path / "full"))
    ours, theirs = checkpoint_weights(reused.url), checkpoint_weights(full.url)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert RunStorage.open(reused.url).read_json("run.json")["reused"]["checkpoint"] == "checkpoints/01-000000000.pt"


def test_a_run_without_its_stage_end_checkpoint_is_reused_through_its_final_one(tiny_spec, write_spec, tmp_path):
    """The mapper stage only reads the codes and the generator (IMLE declares prior and targets
    read_only), so the final checkpoint holds them as GLO left them."""
    source = train(write_spec(tiny_spec), out=str(tmp_path / "source"))
    _forget_stage_ends(source.url)
    variant = write_spec(_mapper_variant(tiny_spec), "variant.yaml")
    reused = train(variant, out=str(tmp_path / "reused"), reuse=source.url)
    full = train(variant, out=str(tmp_path / "full"))
    ours, theirs = checkpoint_weights(reused.url), checkpoint_weights(full.url)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert RunStorage.open(reused.url).read_json("run.json")["reused"] == {
        "run": source.url, "stages": ["glo"], "checkpoint": "checkpoints/02-000000000.pt"}


def test_a_later_stage_that_trains_a_shared_component_rules_out_later_checkpoints(tiny_spec, write_spec, tmp_path):
    tiny_spec["stages"].append({"name": "polish", "trainer": {"type": "autoencoding", "encoder": "codes",
                                                               "generator": "generator", "epochs": 1}})
    source = train(write_spec(tiny_spec), out=str(tmp_path / "source"))
    _forget_stage_ends(source.url)
    tiny_spec["stages"] = tiny_spec["stages"][:2]
    with pytest.raises(GenframeError, match=r"holds no checkpoint at the end of stage 'glo'; no checkpoint after "
                                            r"it holds that state \(stage 'polish' trains codes, generator\)"):
        train(write_spec(_mapper_variant(tiny_spec), "variant.yaml"), out=str(tmp_path / "new"), reuse=source.url)
    assert not (tmp_path / "new").exists()


def test_reuse_needs_a_run_that_finished_the_shared_stages(tiny_spec, write_spec, tmp_path):
    tiny_spec["stages"][0]["trainer"]["epochs"] = 1
    source = train(write_spec(tiny_spec), out=str(tmp_path / "source"))
    storage = RunStorage.open(source.url)
    index = storage.read_json("checkpoints/index.json")
    index["checkpoints"] = [e for e in index["checkpoints"] if e["stage"] == 0]  # as if it stopped in GLO
    storage.write_json("checkpoints/index.json", index)
    tiny_spec["stages"][0]["trainer"]["epochs"] = 1
    with pytest.raises(GenframeError, match=r"holds no checkpoint at the end of stage 'glo' or after it "
                                            r"\(the run stopped earlier\)"):
        train(write_spec(_mapper_variant(tiny_spec), "variant.yaml"), out=str(tmp_path / "new"), reuse=source.url)


def test_run_folder_may_be_any_fsspec_url(tiny_spec, write_spec):
    url = "memory://genframe-tests/run"
    train(write_spec(tiny_spec), out=url)
    storage = RunStorage.open(url)
    assert storage.checkpoints()[-1]["file"] == "checkpoints/02-000000000.pt"
    assert storage.exists("images/mapper/samples-0000008.png")
    images, name = sample(url, 5, seed=1)
    assert name == "tiny" and images.shape == (5, 1, 8, 8) and images.dtype == torch.uint8


def test_sampling_is_reproducible(tiny_spec, write_spec, tmp_path):
    finished = train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    a, _ = sample(finished.url, 16, seed=3)
    b, _ = sample(finished.url, 16, seed=3)
    c, _ = sample(finished.url, 16, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.max()) > int(a.min())  # not a constant image


def test_a_second_run_into_the_same_folder_is_refused(tiny_spec, write_spec, tmp_path):
    path = write_spec(tiny_spec)
    train(path, out=str(tmp_path / "run"))
    with pytest.raises(GenframeError, match="already holds a run"):
        train(path, out=str(tmp_path / "run"))


def test_non_finite_loss_stops_with_the_stage_and_step(tiny_spec, write_spec, tmp_path):
    @component("reconstruction_loss", "nan_after_test")
    class NanAfter(ReconstructionLoss):
        """Turns NaN after a number of calls (test only)."""

        calls: int = 5

        def __call__(self, reconstruction, target):
            self.calls -= 1
            loss = (reconstruction - target).abs().sum()
            return loss * float("nan") if self.calls < 0 else loss

    class Plugin:
        @hookimpl
        def genframe_components(self):
            return [NanAfter]

    registry = create_registry([Plugin()])
    tiny_spec["stages"][0]["trainer"]["loss"] = {"type": "nan_after_test"}
    system = load_system(write_spec(tiny_spec), registry=registry)
    with pytest.raises(GenframeError, match=r"^stage 'glo', step 6: non-finite loss loss \(loss=nan\)"):
        run(system, out=str(tmp_path / "run"), registry=registry)


def test_sampler_dimensions_are_checked_before_training(tiny_spec, write_spec, tmp_path):
    tiny_spec["components"]["mapper"]["in_dim"] = 5
    with pytest.raises(GenframeError, match=r"components.mapper.in_dim: 'noise' makes 3-d vectors "
                                            r"\(components.noise.dim\) but 'mapper' takes 5-d ones"):
        train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_generator_that_cannot_make_the_data_images_is_refused(tiny_spec, write_spec, tmp_path):
    tiny_spec["components"]["generator"]["channels"] = 3
    with pytest.raises(GenframeError, match=r"components.generator: produces images of shape \(3, 8, 8\) "
                                            r"\(C, H, W\) but the data are \(1, 8, 8\)"):
        train(write_spec(tiny_spec), out=str(tmp_path / "run"))


def _registry_with(*classes):
    class Plugin:
        @hookimpl
        def genframe_components(self):
            return list(classes)
    return create_registry([Plugin()])


@component("reconstruction_loss", "nan_once_test")
class NanOnce(ReconstructionLoss):
    """NaN at exactly one call (test only): a transient divergence a rollback can get past."""

    at_call: int = 7

    def __call__(self, reconstruction, target):
        self.at_call -= 1
        loss = (reconstruction - target).abs().flatten(1).sum(1).mean()
        return loss * float("nan") if self.at_call == 0 else loss


def test_rollback_returns_to_the_last_checkpoint_with_lower_learning_rates(tiny_spec, write_spec, tmp_path, capsys):
    registry = _registry_with(NanOnce)
    tiny_spec["stages"][0]["trainer"]["loss"] = {"type": "nan_once_test"}
    tiny_spec["nonfinite"] = {"action": "rollback", "lr_factor": 0.5}
    system = load_system(write_spec(tiny_spec), registry=registry)
    finished = run(system, out=str(tmp_path / "run"), registry=registry)
    assert "rolling back to stage 0 step 4 with learning rates x0.5" in capsys.readouterr().err
    trainer = system.stages[0].trainer
    assert [o.param_groups[0]["lr"] for o in trainer._optimisers] == pytest.approx([0.5e-3, 0.5e-2])
    log = RunStorage.open(finished.url).read_log()
    assert [r["step"] for r in log if r["stage"] == "glo"] == [2, 4, 6, 8, 10, 12]  # replayed steps logged once
    assert all(np.isfinite(r["loss"]) for r in log)


def test_rollback_gives_up_after_its_retries(tiny_spec, write_spec, tmp_path):
    @component("reconstruction_loss", "always_nan_test")
    class AlwaysNan(ReconstructionLoss):
        """NaN from the fifth call on (test only)."""

        calls: int = 0

        def __call__(self, reconstruction, target):
            self.calls += 1
            loss = (reconstruction - target).abs().sum()
            return loss * float("nan") if self.calls > 4 else loss

    registry = _registry_with(AlwaysNan)
    tiny_spec["stages"][0]["trainer"]["loss"] = {"type": "always_nan_test"}
    tiny_spec["nonfinite"] = {"action": "rollback", "retries": 2}
    system = load_system(write_spec(tiny_spec), registry=registry)
    with pytest.raises(GenframeError, match=r"non-finite loss loss \(loss=nan\); still non-finite after 2 rollbacks"):
        run(system, out=str(tmp_path / "run"), registry=registry)


def test_best_checkpoint_by_an_evaluation_metric(tiny_spec, write_spec, tmp_path):
    from genframe import Metric

    @component("metric", "scripted_test")
    class Scripted(Metric):
        """Returns scripted values, one per evaluation (test only)."""

        values: list[float] = param(factory=lambda: [5.0, 2.0, 4.0, 3.0, 9.0])

        def compute(self, sample, real_images, device):
            return {"score": self.values.pop(0)}

    registry = _registry_with(Scripted)
    tiny_spec["stages"][1]["sample"] = True
    tiny_spec["stages"][0]["sample"] = True
    tiny_spec["evaluation"] = {"every": 4, "n_samples": 4, "metrics": [{"type": "scripted_test"}]}
    tiny_spec["best_checkpoint"] = {"metric": "score", "mode": "min"}
    tiny_spec["keep_checkpoints"] = 1
    system = load_system(write_spec(tiny_spec), registry=registry)
    finished = run(system, out=str(tmp_path / "run"), registry=registry)
    storage = RunStorage.open(finished.url)
    # evaluations: glo 4, 8, 12 (end), mapper 4, 8 (end) -> scores 5, 2, 4, 3, 9: best is glo step 8
    assert storage.best_value() == 2.0
    assert (storage.load_checkpoint("best")["stage"], storage.load_checkpoint("best")["step"]) == (0, 8)
    # the best one and every stage's last one stay, whatever keep_checkpoints says
    assert [(e["stage"], e["step"]) for e in storage.checkpoints()] == [(0, 8), (1, 0), (2, 0)]
    images, _ = sample(finished.url, 2, seed=0, checkpoint="best", registry=registry)
    assert images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("stop_at, checkpoint", [(("glo", 8), (0, 8)), (("glo", 12), (1, 0)), (None, (2, 0))])
def test_a_prune_rule_ends_the_run_cleanly_after_an_evaluation(tiny_spec, write_spec, tmp_path, stop_at, checkpoint):
    """Mid-stage, at a stage's end, or never (the run's last evaluation is not judged: it ends the run)."""
    finished_as = []

    class Status:
        @hookimpl
        def genframe_run_finished(self, run, status, error):
            finished_as.append((status, error))

    registry = create_registry([Status()])
    tiny_spec["stages"][0]["sample"] = True
    tiny_spec["evaluation"] = {"every": 4, "n_samples": 4}
    seen = []

    def prune(stage, step, results):
        seen.append((stage, step))
        return "scripted" if (stage, step) == stop_at else None

    system = load_system(write_spec(tiny_spec), registry=registry)
    finished = run(system, out=str(tmp_path / "run"), registry=registry, prune=prune)
    storage = RunStorage.open(finished.url)
    events = [r for r in storage.read_log() if r.get("event") == "pruned"]
    if stop_at is None:
        # judged after glo 4, 8 and its end (12), and mapper 4; not after the mapper's end (8), the run's last
        assert seen == [("glo", 4), ("glo", 8), ("glo", 12), ("mapper", 4)]
        assert (finished.status, finished.pruned, events) == ("completed", None, [])
    else:
        assert seen[-1] == stop_at and finished.status == "pruned" and finished.pruned == "scripted"
        assert [(e["stage"], e["step"], e["reason"]) for e in events] == [(*stop_at, "scripted")]
        assert not [r for r in storage.read_log() if r.get("stage") == "mapper"]  # nothing trained after it
    assert (storage.load_checkpoint()["stage"], storage.load_checkpoint()["step"]) == checkpoint
    assert finished_as == [(finished.status, None)]


def test_interpolation_strips_run_between_two_prior_samples(tiny_spec, write_spec, tmp_path):
    from genframe.build.sampler import Sampler

    finished = train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    assert (tmp_path / "run" / "images" / "mapper" / "interpolation-0000008.png").exists()
    sampler = Sampler(finished.system, finished.device)
    strip = sampler.interpolation(3, 5, torch.Generator().manual_seed(0))
    ends = finished.system.components["noise"].sample(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(strip.view(3, 5, 1, 8, 8)[:, 0], sampler.decode(ends[:3]))
    torch.testing.assert_close(strip.view(3, 5, 1, 8, 8)[:, -1], sampler.decode(ends[3:]))
    middle = sampler.decode(0.5 * (ends[:3] + ends[3:]))
    torch.testing.assert_close(strip.view(3, 5, 1, 8, 8)[:, 2], middle)


def test_out_of_gpu_memory_names_the_batch_size_to_lower(tiny_spec, write_spec, tmp_path, monkeypatch):
    from genframe_plugins.trainers.autoencoding import Autoencoding

    def exhausted(self, step):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Autoencoding, "train_step", exhausted)
    with pytest.raises(GenframeError, match=r"^stage 'glo', step 1: out of GPU memory; lower "
                                            r"stages\[0\].trainer.batch_size \(now 16\)"):
        train(write_spec(tiny_spec), out=str(tmp_path / "run"))


def test_a_crash_while_writing_a_checkpoint_loses_nothing(tiny_spec, write_spec, tmp_path, monkeypatch):
    from ..conftest import SimulatedCrash

    spec_path = write_spec(tiny_spec)
    reference = train(spec_path, out=str(tmp_path / "reference"))
    original = RunStorage.write_bytes
    written = []

    def dies_half_way(self, rel, data):
        if rel.startswith("checkpoints/") and rel.endswith(".pt"):
            written.append(rel)
            if len(written) == 2:  # the second checkpoint: half of it reaches the disk, then the process dies
                with self.fs.open(self.path(rel), "wb") as fh:
                    fh.write(data[: len(data) // 2])
                raise SimulatedCrash("killed while writing a checkpoint")
        return original(self, rel, data)

    monkeypatch.setattr(RunStorage, "write_bytes", dies_half_way)
    with pytest.raises(SimulatedCrash):
        train(spec_path, out=str(tmp_path / "crashed"))
    monkeypatch.setattr(RunStorage, "write_bytes", original)
    # the index still names only the first, complete checkpoint
    assert [e["file"] for e in RunStorage.open(str(tmp_path / "crashed")).checkpoints()] == [written[0]]
    resumed = train(resume=str(tmp_path / "crashed"))
    expected, got = checkpoint_weights(reference.url), checkpoint_weights(resumed.url)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_bf16_autocast_trains_with_finite_losses_and_changes_the_arithmetic(tiny_spec, write_spec, tmp_path):
    exact = train(write_spec(tiny_spec), out=str(tmp_path / "fp32"))
    tiny_spec["precision"] = "bf16"
    mixed = train(write_spec(tiny_spec, "bf16.yaml"), out=str(tmp_path / "bf16"))
    log = RunStorage.open(mixed.url).read_log()
    assert log and all(np.isfinite(r["loss"]) for r in log)
    a, b = checkpoint_weights(exact.url), checkpoint_weights(mixed.url)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 matmuls really ran
    assert all(b[k].dtype == a[k].dtype for k in a)  # weights stay float32


def test_gradient_penalty_under_bf16_autocast(write_spec, tmp_path):
    from ..conftest import load_yaml, SPECS

    spec = load_yaml(SPECS / "wgan_gp.yaml")
    spec.update(precision="bf16", device="cpu", log_every=1, data={"type": "digits", "image_size": 16, "limit": 64})
    spec["components"]["generator"]["width"] = spec["components"]["critic"]["width"] = 8
    spec["stages"][0]["trainer"].update(steps=3, batch_size=16)
    log = RunStorage.open(train(write_spec(spec), out=str(tmp_path / "run")).url).read_log()
    assert [r["step"] for r in log] == [1, 2, 3]
    assert all(np.isfinite(r["penalty"]) and r["penalty"] > 0 for r in log)


def _small_wgan_gp() -> dict:
    from ..conftest import SPECS, load_yaml

    spec = load_yaml(SPECS / "wgan_gp.yaml")
    spec.update(device="cpu", log_every=1, data={"type": "digits", "image_size": 16, "limit": 64})
    spec["components"]["generator"]["width"] = spec["components"]["critic"]["width"] = 8
    spec["stages"][0]["trainer"].update(steps=3, batch_size=16)
    return spec


def _training_losses(url: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in RunStorage.open(url).read_log() if "event" not in r]


@pytest.mark.parametrize("make_spec", [lambda spec: spec, lambda spec: _small_wgan_gp()], ids=["glann", "wgan_gp"])
def test_compiled_components_train_like_eager_ones(make_spec, tiny_spec, write_spec, tmp_path):
    spec = make_spec(tiny_spec)
    eager = train(write_spec(spec), out=str(tmp_path / "eager"))
    spec["compile"] = {"backend": "aot_eager"}  # the graph capture without inductor's C++ build: fast in tests
    compiled = train(write_spec(spec, "compiled.yaml"), out=str(tmp_path / "compiled"))
    assert_same_losses(_training_losses(eager.url), _training_losses(compiled.url), rel=1e-5)
    compiled_names = [n for n, c in compiled.system.components.items()
                      if getattr(c, "_compiled_call_impl", None) is not None]
    if "critic" in spec["components"]:
        # the gradient penalty differentiates the critic twice, which torch.compile cannot do
        assert compiled_names == ["generator"]
    else:
        assert compiled_names == ["codes", "generator", "mapper"]
    assert checkpoint_weights(compiled.url).keys() == checkpoint_weights(eager.url).keys()  # no _orig_mod.


def test_compile_true_builds_with_inductor(tiny_spec, write_spec, tmp_path):
    del tiny_spec["stages"][1]
    tiny_spec["stages"][0]["trainer"]["epochs"] = 1
    tiny_spec["compile"] = True
    log = RunStorage.open(train(write_spec(tiny_spec), out=str(tmp_path / "run")).url).read_log()
    assert log and all(np.isfinite(r["loss"]) for r in log if "loss" in r)


@pytest.mark.parametrize("make_spec", [lambda spec: spec, lambda spec: _small_wgan_gp()], ids=["glann", "wgan_gp"])
def test_channels_last_changes_the_memory_order_not_the_training(make_spec, tiny_spec, write_spec, tmp_path):
    spec = make_spec(tiny_spec)
    default = train(write_spec(spec), out=str(tmp_path / "default"))
    spec["channels_last"] = True
    nhwc = train(write_spec(spec, "nhwc.yaml"), out=str(tmp_path / "nhwc"))
    assert_same_losses(_training_losses(default.url), _training_losses(nhwc.url), rel=1e-4)
    convs = [m for m in nhwc.system.components["generator"].modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    batches = nhwc.system.stages[0].trainer._batches
    assert batches.images(0).is_contiguous(memory_format=torch.channels_last)


def test_a_run_recorded_before_new_settings_existed_still_resumes(tiny_spec, write_spec, tmp_path):
    out = tmp_path / "run"
    tiny_spec["keep_checkpoints"] = 10
    train(write_spec(tiny_spec), out=str(out))
    storage = RunStorage.open(str(out))
    recorded = storage.read_spec()
    for setting in ("compile", "channels_last", "data_placement"):  # as an older genframe wrote it
        del recorded[setting]
    del recorded["components"]["generator"]["norm"]
    storage.write_spec(recorded)
    index = storage.read_json("checkpoints/index.json")
    index["checkpoints"] = [e for e in index["checkpoints"] if (e["stage"], e["step"]) <= (0, 4)]
    storage.write_json("checkpoints/index.json", index)
    resumed = train(resume=str(out))  # the run's own spec, rebuilt with today's defaults
    assert resumed.resume_point == (0, 4)


def test_a_label_is_a_class_number_or_a_recorded_class_name():
    from genframe.build.sampler import class_index

    names = ["cats", "dogs", "7"]
    assert class_index(1, names) == 1
    assert class_index("dogs", names) == 1
    assert class_index("7", names) == 2  # a recorded name wins over reading it as a number
    assert class_index("0", names) == 0
    assert class_index("3", None) == 3
    with pytest.raises(GenframeError, match="'birds': not a class of this run; the run's classes are cats, dogs, 7"):
        class_index("birds", names)
    with pytest.raises(GenframeError, match="the run recorded no class names; give a class number"):
        class_index("birds", None)


def test_a_plateau_schedule_follows_the_logged_loss_and_resumes_exactly(tiny_spec, write_spec, tmp_path):
    schedule = {"type": "plateau", "monitor": "loss", "patience": 1, "threshold": 10.0, "gamma": 0.5}
    tiny_spec["stages"][0]["trainer"]["optimizer"] = {"type": "adam", "lr": 1e-3, "schedule": schedule}
    tiny_spec["stages"][0]["trainer"]["encoder_optimizer"] = None  # codes follow the same settings
    tiny_spec["stages"] = tiny_spec["stages"][:1]
    tiny_spec["keep_checkpoints"] = 10
    reference, resumed = crash_and_resume(write_spec(tiny_spec), "glo", 6, tmp_path)
    # 12 steps logged every 2: the first value is the best, the threshold lets nothing improve on it,
    # so each of the 5 later intervals halves the rate; the last halving acts on no step any more.
    checkpoint = RunStorage.open(reference).load_checkpoint()
    mid = [c for c in RunStorage.open(reference).checkpoints() if c["step"] == 8][0]
    assert checkpoint["step"] == 0 and mid
    state = torch.load(str(tmp_path / "reference" / mid["file"]), weights_only=True)["trainer"]["optimisers"]
    # one schedule, shared by the codes' and the generator's optimisers, saved once with them
    assert state["schedules"] == [{"factor": 0.5 ** 3, "best": pytest.approx(state["schedules"][0]["best"]),
                                   "stalled": 0}]
    # the optimiser still holds the rate its schedule set at step 8, before the step-8 halving
    lrs = [g["lr"] for g in state["optimisers"]["generator"]["optimizer"]["param_groups"]]
    assert lrs == [pytest.approx(1e-3 * 0.5 ** 2)]
    assert _training_losses(reference) == _training_losses(resumed)


def test_a_stage_with_a_time_budget_ends_at_the_step_that_spends_it(tiny_spec, write_spec, tmp_path, monkeypatch):
    """On the CPU the budget is read after every step, not only at logging points: the stage stops
    at step 5 (between the logging points 4 and 8), and its last interval is logged there."""
    from genframe.training import engine

    ticks = iter(range(10**6))
    monkeypatch.setattr(engine, "_stage_clock", lambda device: lambda: float(next(ticks)))  # 1 s per reading
    tiny_spec["stages"][0]["seconds"] = 6.0  # readings: start (0), steps 1-4, log point 4 (5), step 5 (6)
    tiny_spec["log_every"] = 4
    run = train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    storage = RunStorage.open(run.url)
    log = storage.read_log()
    (stop,) = [r for r in log if r.get("event") == "budget"]
    assert (stop["stage"], stop["step"], stop["planned_steps"], stop["budget"]) == ("glo", 5, 12, 6.0)
    assert [r["step"] for r in log if r["stage"] == "glo" and "event" not in r] == [4, 5]
    assert [r["step"] for r in log if r["stage"] == "mapper" and "event" not in r][-1] == 8  # the next stage runs
    assert [stage["seconds"] for stage in storage.read_spec()["stages"]] == [6.0, None]


def test_evaluations_do_not_spend_a_stage_budget(tiny_spec, write_spec, tmp_path, monkeypatch):
    """A stage that evaluates every 2 steps, each evaluation taking 100 s, stops where it stops
    without them: the budget buys training (a pruned sweep measures as it goes)."""
    from genframe.training import engine

    now = [0.0]

    class SlowEvaluation:  # the clock: one second per logged interval of training, 100 per evaluation
        @hookimpl
        def genframe_step_end(self, run, stage, step, total_steps, losses):
            now[0] += 1.0

        @hookimpl
        def genframe_evaluated(self, run, stage, step, results, images):
            now[0] += 100.0
            evaluated.append((run.url[-1], stage, step))

    evaluated = []
    monkeypatch.setattr(engine, "_stage_clock", lambda device: lambda: now[0])
    tiny_spec["stages"][0]["seconds"] = 3.0  # spent at the third logging point, step 6
    tiny_spec["stages"][0]["sample"] = True
    tiny_spec["log_every"] = 2
    stops = []
    for every in (None, 2):
        tiny_spec["evaluation"] = {"every": every, "n_samples": 4}
        registry = create_registry([SlowEvaluation()])
        finished = run(load_system(write_spec(tiny_spec), registry=registry), out=str(tmp_path / f"run{every}"),
                       registry=registry)
        log = RunStorage.open(finished.url).read_log()
        stops.append([r["step"] for r in log if r.get("event") == "budget"])
    assert stops == [[6], [6]]
    assert [step for url, stage, step in evaluated if url == "2" and stage == "glo"] == [2, 4, 6]  # and its end


def test_a_resumed_stage_counts_the_time_it_spent_before(tiny_spec, write_spec, tmp_path, monkeypatch):
    """Interrupted after its checkpoint at step 4 and resumed, a budgeted stage stops where the
    uninterrupted one did: the checkpoint carries the seconds spent (here, clock readings)."""
    from genframe.training import engine

    class Clock:  # one second per reading, per stage: each stage starts its own count
        def __init__(self):
            self.readings = 0

        def __call__(self):
            self.readings += 1
            return float(self.readings)

    monkeypatch.setattr(engine, "_stage_clock", lambda device: Clock())
    tiny_spec["stages"][0]["seconds"] = 11.0  # readings: start, every step, log points, checkpoints: spent at step 7
    tiny_spec["checkpoint_every"] = 4
    tiny_spec["log_every"] = 2
    reference, resumed = crash_and_resume(write_spec(tiny_spec), "glo", 6, tmp_path)
    stops = [[r["step"] for r in RunStorage.open(url).read_log() if r.get("event") == "budget"]
             for url in (reference, resumed)]
    assert stops[0] == stops[1] == [7]
