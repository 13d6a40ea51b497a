"""Plugin discovery: built-ins through the entry-point group, broken and conflicting plugins, switches."""

from __future__ import annotations

import textwrap

import pytest

from genframe import Divergence, component, hookimpl
from genframe.components.registry import create_registry
from genframe.components.roles import ROLES


def test_builtins_arrive_through_the_entry_point_group():
    registry = create_registry()
    info = registry.components["trainer"]["adversarial"]
    assert info.distribution == "genframe" and info.plugin == "adversarial"
    expected = {
        "dataset": {"mnist", "digits"}, "prior": {"gaussian"}, "generator": {"dcgan_generator"},
        "critic": {"dcgan_critic"}, "encoder": {"latent_codes"}, "latent_mapper": {"mlp_mapper"},
        "divergence": {"wasserstein"}, "constraint": {"gradient_penalty"},
        "reconstruction_loss": {"l2", "lap1"}, "optimizer": {"adam", "rmsprop"},
        "trainer": {"autoencoding", "imle", "adversarial"},
    }
    for role, names in expected.items():
        assert names <= set(registry.names(role)), role
    assert not registry.problems
    assert set(ROLES) >= set(registry.components)


def _fake_distribution(site, dist: str, module: str, source: str, entry: str = "plugin") -> None:
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[genframe]\n{entry} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


def test_a_broken_plugin_is_reported_once_and_the_rest_works(tmp_path, monkeypatch, capsys):
    _fake_distribution(tmp_path, "broken-plugin", "broken_genframe_plugin",
                       "import a_module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = create_registry()
    (problem,) = registry.problems
    assert problem.distribution == "broken-plugin"
    assert "ModuleNotFoundError" in problem.message and "a_module_that_is_not_installed" in problem.message
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genframe: warning: plugin 'plugin' from broken-plugin: failed to load")
    assert "adversarial" in registry.names("trainer")


def test_a_name_taken_twice_keeps_the_first_and_says_so(tmp_path, monkeypatch, capsys):
    _fake_distribution(tmp_path, "copycat", "copycat_plugin", """
        import genframe

        @genframe.component("divergence", "wasserstein")
        class Impostor(genframe.Divergence):
            '''Not the real one.'''
            def critic_loss(self, real, fake):
                return real.mean()
            def generator_loss(self, real, fake):
                return fake.mean()

        @genframe.hookimpl
        def genframe_components():
            return [Impostor]
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = create_registry()
    assert registry.components["divergence"]["wasserstein"].distribution == "genframe"
    (problem,) = registry.problems
    assert problem.distribution == "copycat" and "already provided by a divergence of genframe" in problem.message


def test_load_plugins_switch_limits_what_loads(monkeypatch):
    monkeypatch.setenv("GENFRAME_LOAD_PLUGINS", "adversarial,priors")
    registry = create_registry()
    assert set(registry.components) == {"trainer", "prior"}
    monkeypatch.setenv("GENFRAME_LOAD_PLUGINS", "")
    assert create_registry().components == {}


def test_trace_switch_prints_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv("GENFRAME_LOAD_PLUGINS", "priors")
    monkeypatch.setenv("GENFRAME_TRACE_PLUGINS", "1")
    registry = create_registry()
    registry.hook.genframe_components()
    assert "genframe_components" in capsys.readouterr().err


def test_plugins_registered_in_code_use_the_same_door():
    @component("divergence", "zero_test_divergence")
    class Zero(Divergence):
        """Always zero (test only)."""

        def critic_loss(self, real_scores, fake_scores):
            return real_scores.sum() * 0

        def generator_loss(self, real_scores, fake_scores):
            return fake_scores.sum() * 0

    class Plugin:
        @hookimpl
        def genframe_components(self):
            return [Zero]

    registry = create_registry([Plugin()])
    assert registry.get("divergence", "zero_test_divergence") is Zero


def test_component_decorator_checks_the_role():
    with pytest.raises(TypeError, match="must subclass Divergence"):
        component("divergence", "x")(type("X", (), {}))
    with pytest.raises(TypeError, match="unknown role 'critc'"):
        component("critc", "x")(type("X", (), {}))
