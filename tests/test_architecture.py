"""The architecture is a checked contract: import-linter's contracts in pyproject.toml hold.

Plugins import only the public API, the core never imports a plugin, the core's subpackages keep
their layers (spec -> build -> train -> evaluate -> report), and no package has import circles.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from .conftest import REPO


def test_import_contracts_hold():
    command = shutil.which("lint-imports")
    assert command, "import-linter is a test dependency: pip install -e '.[test]'"
    done = subprocess.run([command, "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_plugins_name_only_public_names():
    """Every name a built-in plugin takes from genframe is in genframe.__all__ (the stable API)."""
    import ast

    import genframe

    public = set(genframe.__all__)
    for path in (REPO / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "genframe":
                names = {alias.name for alias in node.names}
                assert names <= public, f"{path.relative_to(REPO)} imports {sorted(names - public)} from genframe"


def test_importing_genframe_loads_no_plugin():
    done = subprocess.run([sys.executable, "-c", "import sys, genframe; "
                           "print(any(m.startswith('genframe_plugins') for m in sys.modules))"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
