"""The documentation's examples are real: its specs validate and its plugin code is the shipped package."""

from __future__ import annotations

import re

import pytest
import yaml

from genframe.api import load_system

from ..conftest import REPO

DOCS = REPO / "docs"


def _blocks(path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def _spec_blocks() -> list[tuple[str, str]]:
    out = []
    for path in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        for i, block in enumerate(_blocks(path, "yaml")):
            if re.search(r"^name:", block, flags=re.M):
                out.append((f"{path.name}#{i}", block))
    return out


@pytest.mark.parametrize("where, block", _spec_blocks(), ids=[w for w, _ in _spec_blocks()])
def test_spec_examples_validate(where, block, tmp_path):
    path = tmp_path / "example.yaml"
    path.write_text(block)
    system = load_system(str(path))
    assert system.name == yaml.safe_load(block)["name"]


def test_there_are_spec_examples():
    assert len(_spec_blocks()) >= 3


def test_plugin_guide_shows_the_shipped_package():
    guide = DOCS / "plugins.md"
    python = _blocks(guide, "python")[0]  # the package; the worked examples follow (test_plugin_guide.py)
    toml, = _blocks(guide, "toml")
    package = REPO / "examples" / "genframe-charbonnier"
    assert python.strip() == (package / "genframe_charbonnier" / "__init__.py").read_text().strip()
    assert toml.strip() == (package / "pyproject.toml").read_text().strip()


def test_user_guide_commands_name_real_subcommands():
    from genframe.cli import parser

    commands = set(parser()._subparsers._group_actions[0].choices)
    for block in _blocks(DOCS / "user-guide.md", "bash") + _blocks(REPO / "README.md", "bash"):
        for used in re.findall(r"genframe (\w+)", block):
            assert used in commands, used
