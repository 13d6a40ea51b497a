"""The mapper-geometry reading: snapped samples are the generator on each output's nearest code."""

from __future__ import annotations

import importlib.util
import sys

import torch

from genframe.api import train
from genframe.ops.images import to_uint8
from genframe.trained.loading import load_trained

from ..conftest import REPO


def _module(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("mapper_geometry", REPO / "benchmarks" / "mapper_geometry.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mapper_geometry", module)
    spec.loader.exec_module(module)
    return module


class MeanPixelJudge:
    """Scores a batch by its mean pixel, so that a reading can be recomputed by hand."""

    n = 16
    floor = {"fd": 2.0, "is": 4.0}

    def score(self, images: torch.Tensor) -> dict:
        return {"n": len(images), "fd": float(images.float().mean()), "is": 1.0}

    def relative(self, result: dict) -> dict:
        return {**result, "fd_over_floor": result["fd"] / self.floor["fd"], "is_over_real": result["is"] / 4.0}


def test_snapped_samples_and_geometry_are_measured_against_the_runs_own_codes(tiny_spec, write_spec, tmp_path,
                                                                              monkeypatch):
    geometry_module = _module(monkeypatch)
    run = train(write_spec(tiny_spec), out=str(tmp_path / "run"))
    judge = MeanPixelJudge()
    reading = geometry_module.read_run(judge, run.url, seed=3)

    system, device = load_trained(run.url)
    noise, mapper, generator = (system.components[name] for name in system.sampler)
    codes = torch.nn.functional.normalize(system.components["codes"].codes.detach(), dim=1)
    mapper.eval()
    generator.eval()
    with torch.no_grad():
        outputs = mapper(noise.sample(judge.n, device=device, generator=torch.Generator(device).manual_seed(3)))
        cosine, nearest = (torch.nn.functional.normalize(outputs, dim=1) @ codes.T).max(dim=1)
        snapped = to_uint8(generator(codes[nearest]))
    assert reading["snapped"]["fd"] == float(snapped.float().mean())
    assert reading["geometry"]["cosine_to_nearest_code"] == round(float(cosine.mean()), 3)
    assert reading["geometry"]["distinct_codes_reached"] == int(nearest.unique().numel())
    assert reading["samples"]["n"] == reading["reconstructions"]["n"] == judge.n
    table = geometry_module.markdown({run.url: reading})
    assert f"{reading['snapped']['fd_over_floor']:.2f}x" in table.splitlines()[-1]
