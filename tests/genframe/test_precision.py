"""precision: fp64 trains every shipped spec in float64 throughout, and leaves torch's default dtype as it was."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genframe import GenframeError
from genframe.api import sample, train
from genframe.ops.precision import at_least_float32, default_dtype
from genframe.storage import RunStorage
from genframe.training import engine

from ..specs.test_recorded_losses import SHIPPED, SPECS, shrink

LOW = (torch.float32, torch.float16, torch.bfloat16)


class _LowPrecisionOps(TorchDispatchMode):
    """Counts the operations whose floating outputs are below float64."""

    def __init__(self):
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else [out]
        self.seen.update(str(func) for o in results if isinstance(o, torch.Tensor) and o.dtype in LOW)
        return out


def test_default_dtype_is_restored_after_the_block_even_on_error():
    with pytest.raises(RuntimeError), default_dtype(torch.float64):
        assert torch.randn(1).dtype == torch.float64
        raise RuntimeError
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("dtype, widened", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                            (torch.int64, torch.float32), (torch.float32, torch.float32),
                                            (torch.float64, torch.float64)])
def test_at_least_float32_widens_only_below_float32(dtype, widened):
    x = torch.arange(3).to(dtype)
    out = at_least_float32(x)
    assert out.dtype == widened and out.tolist() == [0.0, 1.0, 2.0]
    assert (out is x) == (dtype == widened)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_training_step_of_an_fp64_run_computes_in_float64(name, tmp_path, monkeypatch):
    spy, step = _LowPrecisionOps(), engine._guarded_step

    def watched(*args, **kwargs):
        with spy:
            return step(*args, **kwargs)

    monkeypatch.setattr(engine, "_guarded_step", watched)
    run = train(str(SPECS / f"{name}.yaml"), out=str(tmp_path / "run"), device="cpu", overrides=shrink(name))
    assert "precision=fp64" in shrink(name)
    assert not spy.seen, f"operations below float64 in training steps: {dict(spy.seen.most_common(5))}"
    state = RunStorage.open(run.url).load_checkpoint()
    kinds = {v.dtype for c in state["components"].values() for v in c.values() if v.is_floating_point()}
    assert kinds == {torch.float64}
    assert torch.get_default_dtype() == torch.float32


def test_an_fp64_run_is_sampled_in_float32_like_any_other(tmp_path):
    run = train(str(SPECS / "glo.yaml"), out=str(tmp_path / "run"), device="cpu", overrides=shrink("glo"))
    images, _ = sample(run.url, 5, seed=1)
    again, _ = sample(run.url, 5, seed=1)
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 16, 16) and torch.equal(images, again)
    assert Path(run.url, "spec.yaml").read_text().count("precision: fp64") == 1


def test_fp64_on_mps_is_refused_with_the_setting_named(tiny_spec, write_spec, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "resolve_device", lambda name: torch.device("mps"))
    tiny_spec["precision"] = "fp64"
    with pytest.raises(GenframeError, match=r"spec\.yaml: precision: fp64 needs float64, which MPS does not have"):
        train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
