"""The run report: a self-contained page with the run's numbers and images, rendered by a real browser."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from genframe.api import train
from genframe.cli import main
from genframe.reporting.report import build_report
from genframe.storage import RunStorage


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from ..conftest import TINY
    import copy
    import yaml

    spec = copy.deepcopy(TINY)
    spec["evaluation"] = {"every": 4, "n_samples": 4}
    folder = tmp_path_factory.mktemp("report")
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return train(str(path), out=str(folder / "run")).url


def test_report_holds_spec_metrics_curves_and_images(finished_run, capsys):
    assert main(["report", finished_run]) == 0
    page = (RunStorage.open(finished_run).read_bytes("report.html")).decode()
    assert capsys.readouterr().out.strip() == f"{finished_run}/report.html"
    assert "<h1>tiny</h1>" in page
    assert re.search(r"<td>glo</td><td>12</td><td>loss=[0-9.]+</td>", page)
    assert re.search(r"<td>mapper</td><td>8</td>", page)
    images = list((RunStorage.open(finished_run).fs.glob(f"{finished_run}/images/**/*.png")))
    # every image written (at most 8 per kind here) plus the loss curves, all embedded
    assert page.count("src=\"data:image/png;base64,") == len(images) + 1
    assert "type: latent_codes" in page  # the resolved spec
    assert "http" not in page.replace("https://", "").split("<pre>")[0]  # nothing fetched from elsewhere


def test_loss_curves_are_written_when_a_run_ends(finished_run):
    curves = Image.open(f"{finished_run}/curves.png")
    assert curves.size[0] >= 2 * 400  # one panel per stage


def test_tensorboard_events_hold_the_logged_losses(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged = [r for r in RunStorage.open(finished_run).read_log() if r["stage"] == "glo" and "loss" in r]
    events = EventAccumulator(f"{finished_run}/tensorboard/glo").Reload()
    scalars = events.Scalars("loss/loss")
    assert [s.step for s in scalars] == [r["step"] for r in logged]
    assert [s.value for s in scalars] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert "images/reconstructions" in events.Tags()["images"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed")
    main(["report", finished_run, "--out", str(tmp_path / "report.html")])
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}",
                    f"file://{tmp_path / 'report.html'}"], check=True, capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--dump-dom", f"file://{tmp_path / 'report.html'}"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    assert "Resolved spec" in dom and "<h1>tiny</h1>" in dom
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 20  # text, tables and image grids, not a blank page
    assert (pixels < 40).mean() > 0.02  # the black backgrounds of the sample grids are visible


def test_a_resumed_stage_purges_its_replayed_tensorboard_steps(tiny_spec, write_spec, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ..conftest import crash_and_resume

    _, resumed = crash_and_resume(write_spec(tiny_spec), "glo", 6, tmp_path)
    steps = [s.step for s in EventAccumulator(f"{resumed}/tensorboard/glo").Reload().Scalars("loss/loss")]
    assert steps == [2, 4, 6, 8, 10, 12]  # steps 5-6 ran twice; TensorBoard shows them once


def test_figures_written_into_the_run_are_shown(finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    storage = RunStorage.open(str(run))
    picture = RunStorage.open(finished_run).read_bytes("curves.png")
    storage.write_bytes("figures/quality-vs-nfe.png", picture)
    page = build_report(str(run))
    assert "<h2>Figures</h2>" in page and 'alt="quality-vs-nfe"' in page
    assert base64.b64encode(picture).decode() in page
