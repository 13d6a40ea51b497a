"""Spec data -> component objects, with every cross-reference checked before anything runs."""

from __future__ import annotations

import typing
from typing import Any, Iterator

import attrs

from genframe.errors import GenframeError, SpecError
from genframe.components.params import meta, ref_roles, unwrap_optional
from genframe.components.registry import Registry, get_registry
from genframe.components.roles import NAMED_ROLES, Component, Dataset, Generator, LatentMapper, Prior, Trainer
from genframe.spec.settings import Settings, in_spec_order


@attrs.define
class Stage:
    index: int
    name: str
    trainer: Trainer
    sample: bool
    seconds: float | None = None  # training time the stage may take (stages[i].seconds)


@attrs.define(kw_only=True)
class System(Settings):
    """A built spec: what the engine runs. Its settings are inherited from ``Settings`` (``system.log_every``);
    ``source`` names the spec file for error messages."""

    source: str
    data: Dataset
    components: dict[str, Component]
    stages: list[Stage]
    sampler: list[str]

    def resolved_spec(self) -> dict:
        """The spec with every default written out: what the run folder records."""
        return in_spec_order(self.spec_data(), {
            "data": self.data.config(),
            "components": {name: c.config() for name, c in self.components.items()},
            "stages": [{"name": s.name, "trainer": s.trainer.config(), "sample": s.sample, "seconds": s.seconds}
                       for s in self.stages],
            "sampler": list(self.sampler),
        })


def _component_role(tp: Any) -> tuple[type[Component] | None, bool]:
    """(role class, is_list) when a field holds nested components."""
    tp, _ = unwrap_optional(tp)
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(item, type) and issubclass(item, Component):
            return item, True
    if isinstance(tp, type) and issubclass(tp, Component):
        return tp, False
    return None, False


def instantiate(role: str, config: dict, path: str, source: str, registry: Registry) -> Component:
    """Create one component from its spec mapping; nested components are created too."""
    try:
        cls = registry.get(role, config["type"])
    except GenframeError as exc:
        raise SpecError(str(exc), source=source, path=f"{path}.type") from None
    kwargs = {}
    for f in attrs.fields(cls):
        if f.name in config:
            value = config[f.name]
            kwargs[f.name] = tuple(value) if typing.get_origin(unwrap_optional(f.type)[0]) is tuple else value
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError, GenframeError) as exc:
        raise SpecError(f"invalid parameters: {exc}", source=source, path=path) from None
    for f in attrs.fields(cls):
        nested_role, is_list = _component_role(f.type)
        value = getattr(obj, f.name)
        if nested_role is None or value is None:
            continue
        if is_list:
            built = [v if isinstance(v, Component) else
                     instantiate(nested_role.role, v, f"{path}.{f.name}[{i}]", source, registry)
                     for i, v in enumerate(value)]
        else:
            built = value if isinstance(value, Component) else \
                instantiate(nested_role.role, value, f"{path}.{f.name}", source, registry)
        setattr(obj, f.name, built)
    return obj


def walk(obj: Component, path: str) -> Iterator[tuple[Component, str]]:
    """The component and every component nested in its fields, with their spec paths."""
    yield obj, path
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        if isinstance(value, Component):
            yield from walk(value, f"{path}.{f.name}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, Component):
                    yield from walk(v, f"{path}.{f.name}[{i}]")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _check_refs(obj: Component, path: str, components: dict[str, Component], source: str) -> None:
    for comp, comp_path in walk(obj, path):
        for f in attrs.fields(type(comp)):
            roles = ref_roles(f)
            if not roles:
                continue
            wanted = " or ".join(roles)
            name = getattr(comp, f.name)
            also = meta(f).get("also", ())
            field_path = f"{comp_path}.{f.name}"
            if name in also:
                continue
            if name not in components:
                options = ", ".join([n for n, c in components.items() if c.role in roles] + list(also))
                raise SpecError(f"{name!r} is not declared under components; {wanted} components: "
                                f"{options or 'none declared'}", source=source, path=field_path)
            if components[name].role not in roles:
                raise SpecError(f"{name!r} is {_a(components[name].role)}, {_a(wanted)} is needed here",
                                source=source, path=field_path)


def _check_sampler(sampler: list[str], components: dict[str, Component], source: str) -> None:
    for i, name in enumerate(sampler):
        if name not in components:
            raise SpecError(f"{name!r} is not declared under components; declared: {', '.join(components)}",
                            source=source, path=f"sampler[{i}]")
        comp = components[name]
        wanted = (Prior,) if i == 0 else (Generator,) if i == len(sampler) - 1 else (LatentMapper,)
        if not isinstance(comp, wanted):
            expected = {Prior: "a prior", Generator: "a generator", LatentMapper: "a latent_mapper"}[wanted[0]]
            raise SpecError(f"{name!r} is {_a(comp.role)}; position {i} of the sampler chain needs {expected} "
                            "(chain: prior, latent mappers..., generator)", source=source, path=f"sampler[{i}]")
    for name, comp in components.items():
        if isinstance(comp, Prior) and comp.dim is None and name != sampler[0]:
            raise SpecError(f"{name!r} does not start the sampler chain, so nothing gives it a size; set its dim",
                            source=source, path=f"components.{name}.dim")
    _size_chain_prior(sampler, components)
    _check_sampler_widths(sampler, components, source)


def _takes(comp: Component) -> int | None:
    """The width of vectors a sampler-chain link takes (None while it waits for the data's shape)."""
    return comp.latent_dim if isinstance(comp, Generator) else comp.in_dim


def _size_chain_prior(sampler: list[str], components: dict[str, Component]) -> None:
    """A prior left without ``dim`` draws vectors as wide as the link it feeds takes, once that is known."""
    prior = components[sampler[0]]
    if prior.dim is None and len(sampler) > 1:
        prior.dim = _takes(components[sampler[1]])


def check_sizes_after_setup(system: System) -> None:
    """Size the chain's prior and repeat the build-time checks of sizes that were waiting for the
    data's shape (a flow generator's noise is as large as the images)."""
    _size_chain_prior(system.sampler, system.components)
    prior = system.sampler[0]
    if system.components[prior].dim is None:
        raise SpecError(f"{prior!r} has no dim and {system.sampler[1]!r} does not say what it takes; set its dim",
                        source=system.source, path=f"components.{prior}.dim")
    _check_sampler_widths(system.sampler, system.components, system.source)
    for stage in system.stages:
        _check_combination(stage.trainer, f"stages[{stage.index}].trainer", system.components, system.source)


def _check_sampler_widths(sampler: list[str], components: dict[str, Component], source: str) -> None:
    """Every link takes vectors as wide as the previous one makes, read from the declared dims
    (a width that waits for the data's shape is checked after setup)."""
    prior = components[sampler[0]]
    assert isinstance(prior, Prior)
    width, previous, made_by = prior.dim, sampler[0], f"components.{sampler[0]}.dim"
    for name in sampler[1:]:
        comp = components[name]
        field = "latent_dim" if isinstance(comp, Generator) else "in_dim"
        wanted = getattr(comp, field)
        if None not in (width, wanted) and wanted != width:
            raise SpecError(f"{previous!r} makes {width}-d vectors ({made_by}) but {name!r} takes {wanted}-d "
                            "ones; make them equal", source=source, path=f"components.{name}.{field}")
        if isinstance(comp, LatentMapper):
            width, previous, made_by = comp.out_dim, name, f"components.{name}.out_dim"


def _check_combination(trainer: Trainer, path: str, components: dict[str, Component], source: str) -> None:
    """The trainer's own check of how its components fit together, with this spec file named."""
    try:
        trainer.check(components, path)
    except SpecError as exc:
        if exc.source is not None:
            raise
        raise SpecError(exc.detail, source=source, path=exc.path) from None


def reference_data(spec: dict) -> dict:
    """The data config of the real images a spec's metrics compare with: ``evaluation.data`` when it
    names a data set (it has a type), else the run's data with those changes (none: the run's data)."""
    changes = (spec.get("evaluation") or {}).get("data") or {}
    return changes if "type" in changes else {**spec["data"], **changes}


def build(spec: dict, source: str = "<spec>", registry: Registry | None = None) -> System:
    """Instantiate every component of a validated spec and check references between them."""
    registry = registry or get_registry()
    components: dict[str, Component] = {}
    for name, config in spec["components"].items():
        role = next((r for r in NAMED_ROLES if config["type"] in registry.names(r)), None)
        if role is None:
            known = ", ".join(n for r in NAMED_ROLES for n in registry.names(r))
            raise SpecError(f"unknown component type {config['type']!r}; known: {known}",
                            source=source, path=f"components.{name}.type")
        components[name] = instantiate(role, config, f"components.{name}", source, registry)
    data = instantiate("dataset", spec["data"], "data", source, registry)
    stages = []
    for i, stage in enumerate(spec["stages"]):
        trainer = instantiate("trainer", stage["trainer"], f"stages[{i}].trainer", source, registry)
        _check_refs(trainer, f"stages[{i}].trainer", components, source)
        sample = stage.get("sample", i == len(spec["stages"]) - 1)
        stages.append(Stage(i, stage["name"], trainer, sample, stage.get("seconds")))
    names = [s.name for s in stages]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise SpecError(f"stage name {name!r} is used twice", source=source, path=f"stages[{i}].name")
    for name, comp in components.items():
        _check_refs(comp, f"components.{name}", components, source)
    _check_sampler(spec["sampler"], components, source)
    cuda_graphs = spec.get("cuda_graphs", attrs.fields(Settings).cuda_graphs.default)
    for stage in stages:
        _check_combination(stage.trainer, f"stages[{stage.index}].trainer", components, source)
        if cuda_graphs and not stage.trainer.supports_cuda_graphs:
            raise SpecError(f"stage {stage.name!r}: trainer {stage.trainer.type_name!r} does not support CUDA graph "
                            "capture of its steps; set cuda_graphs: false", source=source, path="cuda_graphs")
    evaluation = dict(spec.get("evaluation", {}))
    evaluation["metrics"] = [instantiate("metric", m, f"evaluation.metrics[{i}]", source, registry)
                             for i, m in enumerate(evaluation.get("metrics", []))]
    if evaluation.get("data") is not None:
        evaluation["data"] = instantiate("dataset", reference_data(spec), "evaluation.data", source, registry)
    try:
        settings = Settings.from_spec({**spec, "evaluation": evaluation})
    except (TypeError, ValueError) as exc:
        raise SpecError(f"invalid settings: {exc}", source=source) from None
    return System(source=source, data=data, components=components, stages=stages, sampler=list(spec["sampler"]),
                  **attrs.asdict(settings, recurse=False))
