"""Plugin manager and component registry: one door for built-in and third-party components.

Plugins are discovered through the ``genframe`` entry-point group. Two environment switches help
debugging: ``GENFRAME_LOAD_PLUGINS`` (comma-separated entry-point or distribution names; only
those load, empty loads none) and ``GENFRAME_TRACE_PLUGINS=1`` (print every hook call and result).
A plugin that fails to import, or that registers a name already taken, is reported once on stderr
and skipped; the rest keeps working.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Iterable

import pluggy

from genframe.components import hooks
from genframe.errors import GenframeError
from genframe.components.roles import NAMED_ROLES, ROLES, Component
from genframe.ops import log

ENTRY_POINT_GROUP = "genframe"


@dataclass(frozen=True)
class ComponentInfo:
    role: str
    name: str
    cls: type[Component]
    plugin: str
    distribution: str
    version: str


@dataclass
class PluginProblem:
    plugin: str
    distribution: str
    message: str


@dataclass
class Registry:
    """Roles -> names -> component classes, plus where each came from."""

    manager: pluggy.PluginManager
    components: dict[str, dict[str, ComponentInfo]] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    @property
    def hook(self):
        return self.manager.hook

    def names(self, role: str) -> list[str]:
        return sorted(self.components.get(role, {}))

    def get(self, role: str, name: str) -> type[Component]:
        try:
            return self.components[role][name].cls
        except KeyError:
            known = ", ".join(self.names(role)) or "none installed"
            raise GenframeError(f"unknown {role} type {name!r}; known: {known}") from None

    def all(self) -> Iterable[ComponentInfo]:
        for role in sorted(self.components):
            yield from (self.components[role][n] for n in sorted(self.components[role]))


def _selected(env: str | None, ep: md.EntryPoint) -> bool:
    if env is None:
        return True
    wanted = {w.strip() for w in env.split(",") if w.strip()}
    dist = ep.dist.name if ep.dist else ""
    return ep.name in wanted or dist in wanted or f"{dist}:{ep.name}" in wanted


def _report(problem: PluginProblem) -> None:
    log.warning(f"plugin {problem.plugin!r} from {problem.distribution}: {problem.message}")


def create_registry(extra_plugins: Iterable[object] = (), *, entry_points: bool = True) -> Registry:
    """Build a fresh plugin manager, load plugins, collect their components."""
    pm = pluggy.PluginManager(hooks.PROJECT)
    pm.add_hookspecs(hooks)
    registry = Registry(manager=pm)
    origin: dict[object, tuple[str, str, str]] = {}
    if entry_points:
        env = os.environ.get("GENFRAME_LOAD_PLUGINS")
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if not _selected(env, ep):
                continue
            dist = ep.dist.name if ep.dist else "unknown distribution"
            version = ep.dist.version if ep.dist else ""
            try:
                plugin = ep.load()
                if pm.is_registered(plugin):
                    continue
                pm.register(plugin, name=f"{dist}:{ep.name}")
            except Exception as exc:  # a broken plugin must not take the others down
                problem = PluginProblem(ep.name, dist, f"failed to load: {type(exc).__name__}: {exc}")
                registry.problems.append(problem)
                _report(problem)
                continue
            origin[plugin] = (ep.name, dist, version)
    for plugin in extra_plugins:
        if not pm.is_registered(plugin):
            pm.register(plugin)
        name = getattr(plugin, "__name__", type(plugin).__name__)
        origin[plugin] = (name, "(registered in code)", "")
    if os.environ.get("GENFRAME_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    _collect(registry, origin)
    return registry


def _collect(registry: Registry, origin: dict[object, tuple[str, str, str]]) -> None:
    # Call each implementation separately so that a failing or conflicting plugin is attributable.
    for impl in reversed(registry.manager.hook.genframe_components.get_hookimpls()):
        plugin_name, dist, version = origin.get(impl.plugin, (impl.plugin_name, "unknown distribution", ""))
        try:
            classes = impl.function() or []
        except Exception as exc:
            problem = PluginProblem(plugin_name, dist, f"genframe_components failed: {type(exc).__name__}: {exc}")
            registry.problems.append(problem)
            _report(problem)
            continue
        for cls in classes:
            role, name = getattr(cls, "role", ""), getattr(cls, "type_name", "")
            if role not in ROLES or not name:
                problem = PluginProblem(plugin_name, dist,
                                        f"{cls!r} is not a component (decorate it with @genframe.component)")
            elif (first := _taken(registry, role, name)) is not None:
                problem = PluginProblem(plugin_name, dist, f"{role} {name!r} is already provided by a "
                                        f"{first.role} of "
                                        f"{first.distribution} ({first.plugin}); keeping that one")
            else:
                registry.components.setdefault(role, {})[name] = ComponentInfo(
                    role, name, cls, plugin_name, dist, version)
                continue
            registry.problems.append(problem)
            _report(problem)


def _taken(registry: Registry, role: str, name: str) -> ComponentInfo | None:
    """Named roles share one namespace, since ``components:`` entries are typed by name alone."""
    roles = NAMED_ROLES if role in NAMED_ROLES else (role,)
    for r in roles:
        if name in registry.components.get(r, {}):
            return registry.components[r][name]
    return None


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, created on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = create_registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (tests, embedding applications)."""
    global _REGISTRY
    _REGISTRY = registry


def plugin_modules(registry: Registry) -> list[ModuleType]:
    return [p for p in registry.manager.get_plugins() if isinstance(p, ModuleType)]
