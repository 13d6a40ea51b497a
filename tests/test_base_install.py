"""A base install (no extras) runs the quickstart, and every feature that needs an extra names it."""

from __future__ import annotations

import subprocess
import sys

from .conftest import SPECS

EXTRAS = ("sklearn", "scipy", "matplotlib", "tensorboard", "mlflow", "wandb", "optuna", "cmaes")
BLOCKER = f'''
import sys

class _Hidden:
    """A finder that does not see the packages of the extras (and scikit-learn, scipy): a base install."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS!r}:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)

sys.meta_path[:] = [_Hidden(finder) for finder in sys.meta_path]
'''


def _without_extras(tmp_path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "blocker").mkdir(exist_ok=True)
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    env = {"PYTHONPATH": str(tmp_path / "blocker"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)


def test_the_quickstart_runs_without_any_extra(tmp_path):
    probe = _without_extras(tmp_path, "-c", "import matplotlib")
    assert probe.returncode != 0  # the blocker works
    run = _without_extras(tmp_path, "-m", "genframe", "run", str(SPECS / "quickstart.yaml"), "--out", "run",
                          "--set", "stages.0.trainer.epochs=1", "--set", "stages.1.trainer.epochs=1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "index.json").exists() and not (tmp_path / "run" / "curves.png").exists()
    report = _without_extras(tmp_path, "-m", "genframe", "report", "run")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "pip install 'genframe[plots]'" in (tmp_path / "run" / "report.html").read_text()


def test_the_loss_curves_name_their_extra_in_one_line(tmp_path):
    code = ("from genframe import GenframeError, loss_curves_png\n"
            "try:\n    loss_curves_png([{'stage': 's', 'step': 1, 'loss': 1.0}])\n"
            "except GenframeError as exc:\n    print(exc)\n")
    out = _without_extras(tmp_path, "-c", code)
    assert out.stdout.strip() == "loss curves needs matplotlib: pip install 'genframe[plots]'"
