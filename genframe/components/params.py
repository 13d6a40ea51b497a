"""Component parameters: declared once as attrs fields, turned into validators and JSON Schema.

A component is an attrs class whose fields are exactly its spec parameters. ``param`` attaches
bounds, choices and a help line to a field; ``ref`` marks a field that names another component of
the spec (resolved by the build step); a field annotated with a role class holds a nested
component (``divergence: Divergence``), and one annotated with a plain attrs class holds a nested
mapping of that class's fields (the spec's top-level settings use these). ``field_schema`` reads
all of this back to produce the JSON Schema, so the schema can never disagree with the code.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, Union

import attrs

_META = "genframe"


def param(default: Any = attrs.NOTHING, *, help: str = "", ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None,
          pattern: str | None = None, factory: Any = None) -> Any:
    """A spec parameter with optional numeric bounds or a regular expression for text; both are
    enforced and exported."""
    validators = []
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    for key, value in bounds.items():
        if value is not None:
            validators.append(getattr(attrs.validators, key)(value))
    if pattern is not None:
        validators.append(attrs.validators.matches_re(pattern, func=re.search))
    meta: dict[str, Any] = {"help": help, "bounds": {k: v for k, v in bounds.items() if v is not None}}
    if pattern is not None:
        meta["pattern"] = pattern
    validator = _optional_aware(validators) if validators else None
    if factory is not None:
        return attrs.field(factory=factory, validator=validator, metadata={_META: meta})
    return attrs.field(default=default, validator=validator, metadata={_META: meta})


def _optional_aware(validators: list) -> Any:
    """Bounds apply to numbers; ``None`` (meaning "derive it") passes."""
    inner = attrs.validators.and_(*validators)

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


def ref(role: str | tuple[str, ...], default: Any = attrs.NOTHING, *, help: str = "",
        also: tuple[str, ...] = (), read_only: bool = False) -> Any:
    """A field naming a component declared under ``components:`` (of one of the roles, or one of ``also``).

    ``read_only=True`` declares that the stage only reads that component: its weights, buffers and
    statistics leave the stage as they entered it. ``--reuse`` relies on it to take a shared
    component from a later checkpoint of a run; a reference without it is taken to be trained.
    """
    roles = (role,) if isinstance(role, str) else tuple(role)
    meta = {"help": help, "ref": roles, "also": tuple(also), "read_only": read_only}
    return attrs.field(default=default, metadata={_META: meta})


def meta(field: attrs.Attribute) -> dict:
    return field.metadata.get(_META, {})


def help_of(field: attrs.Attribute) -> str:
    return meta(field).get("help", "")


def ref_roles(field: attrs.Attribute) -> tuple[str, ...]:
    """Roles a reference field may name; empty for ordinary parameters."""
    return meta(field).get("ref", ())


def ref_read_only(field: attrs.Attribute) -> bool:
    """Whether a reference field names a component that is only read (see :func:`ref`)."""
    return meta(field).get("read_only", False)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_schema(tp: Any, component_schema: typing.Callable[[type], dict]) -> dict:
    """JSON Schema of a Python type; role classes are delegated to ``component_schema``."""
    inner, optional = unwrap_optional(tp)
    schema = _plain_type_schema(inner, component_schema)
    if optional:
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


def _plain_type_schema(tp: Any, component_schema: typing.Callable[[type], dict]) -> dict:
    from genframe.components.roles import Component

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [type_schema(a, component_schema) for a in typing.get_args(tp)]}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is Any:
        return {}
    if origin is Literal:
        values = list(typing.get_args(tp))
        return {"const": values[0]} if len(values) == 1 else {"enum": values}
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = [type_schema(a, component_schema) for a in args]
            return {"type": "array", "prefixItems": items, "items": False,
                    "minItems": len(items), "maxItems": len(items)}
        item = args[0] if args else Any
        return {"type": "array", "items": type_schema(item, component_schema)}
    if origin is dict:
        key, value = typing.get_args(tp) or (str, Any)
        return {"type": "object", "additionalProperties": type_schema(value, component_schema)}
    if isinstance(tp, type) and issubclass(tp, Component):
        return component_schema(tp)
    if isinstance(tp, type) and attrs.has(tp):
        return record_schema(tp, component_schema)
    raise TypeError(f"no JSON Schema for parameter type {tp!r}")


def record_schema(cls: type, component_schema: typing.Callable[[type], dict]) -> dict:
    """Schema of a nested mapping declared by a plain attrs class: its fields, and nothing else."""
    fields = attrs.fields(cls)
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False,
                              "properties": {f.name: field_schema(f, component_schema) for f in fields}}
    required = [f.name for f in fields if is_required(f)]
    if required:
        schema["required"] = required
    return schema


def field_schema(field: attrs.Attribute, component_schema: typing.Callable[[type], dict]) -> dict:
    """Schema of one component field: its type, bounds, default and help text."""
    m = meta(field)
    if m.get("ref"):
        schema: dict = {"type": "string"}
        what = " or ".join(m["ref"])
        also = "".join(f", or {a!r}" for a in m.get("also", ()))
        schema["description"] = (m.get("help") or f"name of a {what} component") + \
            f" (a {what} declared under components{also})"
    else:
        schema = type_schema(field.type, component_schema)
        for key, value in m.get("bounds", {}).items():
            schema_key = {"ge": "minimum", "gt": "exclusiveMinimum",
                          "le": "maximum", "lt": "exclusiveMaximum"}[key]
            target = schema["anyOf"][0] if "anyOf" in schema else schema
            target[schema_key] = value
        if m.get("pattern"):
            (schema["anyOf"][0] if "anyOf" in schema else schema)["pattern"] = m["pattern"]
        if m.get("help"):
            schema["description"] = m["help"]
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory() if not default.takes_self else attrs.NOTHING
    if default is not attrs.NOTHING and _jsonable(default):
        schema["default"] = list(default) if isinstance(default, tuple) else default
    return schema


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def is_required(field: attrs.Attribute) -> bool:
    return field.default is attrs.NOTHING
