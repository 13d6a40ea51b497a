"""Specs: YAML in, validated plain data out, with errors that name the file and the field.

The JSON Schema is generated from the registered components' attrs fields and from the top-level
``Settings``, so a parameter or setting is declared exactly once. ``genframe schema`` writes it to
``schemas/spec.schema.json`` for editors.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

import attrs
import fsspec
import jsonschema

from genframe.errors import GenframeError, SpecError
from genframe.components.params import field_schema, is_required
from genframe.components.registry import Registry, get_registry
from genframe.components.roles import NAMED_ROLES, ROLES, Component
from genframe.spec.settings import Settings, in_spec_order, property_schemas
from genframe.ops.safe_yaml import load_yaml

SCHEMA_ID = "https://genframe.dev/schemas/spec.schema.json"
SCHEMA_COMMENT = "# yaml-language-server: $schema=../schemas/spec.schema.json"


# --------------------------------------------------------------------------- schema generation


def _def_name(role: str, name: str) -> str:
    return f"{role}.{name}"


def component_def(cls: type[Component], role_schema) -> dict:
    """Schema of one component: its ``type`` plus one property per attrs field."""
    props: dict[str, Any] = {"type": {"const": cls.type_name}}
    required = ["type"]
    for f in attrs.fields(cls):
        props[f.name] = field_schema(f, role_schema)
        if is_required(f):
            required.append(f.name)
    doc = (cls.__doc__ or "").strip()
    return {"title": f"{cls.role} {cls.type_name}", "description": doc.splitlines()[0] if doc else "",
            "type": "object", "properties": props, "required": required, "additionalProperties": False}


def _union(names_by_role: dict[str, list[str]], title: str) -> dict:
    """``{type: <name>, ...}`` dispatched on ``type`` with if/then, so errors point inside the match."""
    names = [n for role_names in names_by_role.values() for n in role_names]
    branches = [{"if": {"properties": {"type": {"const": n}}, "required": ["type"]},
                 "then": {"$ref": f"#/$defs/{_def_name(role, n)}"}}
                for role, role_names in names_by_role.items() for n in role_names]
    schema: dict[str, Any] = {"title": title, "type": "object", "required": ["type"],
                              "properties": {"type": {"enum": names} if names else {"not": {}}}}
    if branches:
        schema["allOf"] = branches
    return schema


def build_schema(registry: Registry | None = None) -> dict:
    """The JSON Schema of a spec, for every component the registry knows."""
    registry = registry or get_registry()
    defs: dict[str, Any] = {}

    def role_schema(role_cls: type[Component]) -> dict:
        return {"$ref": f"#/$defs/role.{role_cls.role}"}

    for role in ROLES:
        for name in registry.names(role):
            defs[_def_name(role, name)] = component_def(registry.get(role, name), role_schema)
        defs[f"role.{role}"] = _union({role: registry.names(role)}, f"a {role} component")
    defs["named_component"] = _union({r: registry.names(r) for r in NAMED_ROLES},
                                     "a component shared by name: " + ", ".join(NAMED_ROLES))
    structure = {
        "data": {"$ref": "#/$defs/role.dataset"},
        "components": {
            "type": "object", "minProperties": 1,
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"$ref": "#/$defs/named_component"},
            "description": "Components shared by name between stages and the sampler.",
        },
        "stages": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "required": ["name", "trainer"], "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
                    "trainer": {"$ref": "#/$defs/role.trainer"},
                    "sample": {"type": "boolean", "description":
                               "Write sample grids during this stage (default: last stage only)."},
                    "seconds": {"type": ["number", "null"], "exclusiveMinimum": 0, "description":
                                "Training time this stage may take (CPU seconds of this process on the CPU, "
                                "wall-clock seconds on an accelerator; evaluations during the stage do not count), "
                                "checked after every step on the CPU (at each logging point on an accelerator or under "
                                "torchrun); the stage ends early at the step that spends it. For comparisons at "
                                "equal compute."},
                },
            },
        },
        "sampler": {"type": "array", "minItems": 2, "items": {"type": "string"},
                    "description": "Chain of component names: a prior, optional mappers, a generator."},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "genframe spec",
        "description": "A generative system: data, named components, training stages, sampler, evaluation.",
        "type": "object",
        "required": [f.name for f in attrs.fields(Settings) if is_required(f)] + list(structure),
        "additionalProperties": False,
        "properties": in_spec_order(property_schemas(role_schema), structure),
        "$defs": defs,
    }


def schema_json(registry: Registry | None = None) -> str:
    return json.dumps(build_schema(registry), indent=2, sort_keys=False) + "\n"


# --------------------------------------------------------------------------- loading


def read_text(url: str) -> str:
    try:
        with fsspec.open(url, "r", encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise GenframeError(f"{url}: no such spec file") from None
    except (OSError, ValueError) as exc:
        raise GenframeError(f"{url}: cannot read spec: {exc}") from None


def parse_yaml(text: str, source: str) -> dict:
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError(f"a spec is a mapping of fields, found {type(data).__name__}", source=source)
    return data


def apply_overrides(data: dict, overrides: Iterable[str], source: str) -> dict:
    """Apply ``a.b.0.c=value`` assignments; values are parsed as YAML (``1e-3``, ``[1, 2]``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected PATH=VALUE, e.g. stages.0.trainer.steps=100",
                            source=source)
        path, raw = item.split("=", 1)
        try:
            value = load_yaml(raw, f"--set {path.strip()}") if raw.strip() else ""
        except SpecError:
            value = raw
        _assign(data, [p for p in path.strip().split(".") if p], value, path.strip(), source)
    return data


def _assign(node: Any, keys: list[str], value: Any, path: str, source: str) -> None:
    if not keys:
        raise SpecError(f"--set {path!r}: empty path", source=source)
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the spec"
        if isinstance(node, list):
            if not re.fullmatch(r"-?[0-9]+", key):
                raise SpecError(f"--set {path}: {where} is a list, use an index instead of {key!r}", source=source)
            index = int(key)
            if not -len(node) <= index < len(node):
                raise SpecError(f"--set {path}: {where} has {len(node)} items, no index {index}", source=source)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise SpecError(f"--set {path}: {where} is a {type(node).__name__}, it has no field {key!r}",
                            source=source)


def format_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _kind(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _expected(schema: dict) -> str:
    """What one alternative of an ``anyOf`` accepts, in words."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return " or ".join(repr(v) for v in schema["enum"])
    if schema.get("type") == "object" and "properties" in schema:
        return f"a mapping of {', '.join(schema['properties'])}"
    return str(schema.get("type", "?"))


def _describe_error(error: jsonschema.ValidationError, schema: dict) -> tuple[str, str]:
    """One readable line for the most relevant schema violation: (field path, message)."""
    path = list(error.absolute_path)
    value = error.instance
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        field = extra[0] if extra else "?"
        return format_path([*path, field]), f"unknown field {field!r}; allowed: {', '.join(allowed)}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return format_path([*path, missing]), "missing required field"
    if error.validator in ("enum", "const"):
        allowed = error.validator_value if error.validator == "enum" else [error.validator_value]
        return format_path(path), f"found {value!r}; allowed: {', '.join(map(str, allowed))}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        hint = ""
        if isinstance(value, str) and expected in ("number", "integer") and _looks_numeric(value):
            hint = f" (YAML reads {value} as text: write it with a decimal point, e.g. {_float_hint(value)})"
        return format_path(path), f"found {value!r} ({_kind(value)}), expected {expected}{hint}"
    if error.validator == "anyOf":
        expected = " or ".join(_expected(sub) for sub in error.validator_value)
        return format_path(path), f"found {value!r} ({_kind(value)}), expected {expected}"
    if error.validator == "not" and path and path[-1] == "type":
        return format_path(path), f"found {value!r}, but no component of this role is installed"
    return format_path(path), f"found {value!r}: {error.message}"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _float_hint(text: str) -> str:
    mantissa, _, exponent = text.lower().partition("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}" if exponent else text


def _whole_number(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


#: JSON Schema validation where an integer is a whole number as YAML wrote it: JSON Schema itself
#: accepts 1.0 for an integer field, which then reaches a layer size or a step count as a float.
SpecValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _whole_number))


def validate(data: dict, source: str, registry: Registry | None = None) -> None:
    """Raise ``SpecError`` naming the file and field of the first problem found."""
    check_schema(data, SpecValidator(build_schema(registry)), source)


def check_schema(data: Any, validator: jsonschema.Draft202012Validator, source: str) -> None:
    """``validate`` with a prepared validator: reused across many specs, or for other documents (sweeps)."""
    where = _non_finite(data)
    if where is not None:
        path, value = where
        raise SpecError(f"found {value}; only finite numbers are accepted here (YAML reads .inf and .nan as "
                        "numbers)", source=source, path=format_path(path))
    errors = list(validator.iter_errors(data))
    if not errors:
        return
    error = _most_specific(errors)
    path, message = _describe_error(error, validator.schema)
    raise SpecError(message, source=source, path=path)


def _non_finite(data: Any, path: tuple = ()) -> tuple[tuple, float] | None:
    """(path, value) of the first infinite or NaN number in spec data: no setting of a generative
    model is meaningful at infinity (a learning rate, a penalty weight), and NaN compares with nothing."""
    if isinstance(data, float) and not math.isfinite(data):
        return path, data
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        found = _non_finite(value, (*path, key))
        if found is not None:
            return found
    return None


def _most_specific(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    """Prefer the deepest error inside if/then branches; ties go to the first reported."""
    flat: list[jsonschema.ValidationError] = []
    stack = list(errors)
    while stack:
        err = stack.pop(0)
        if err.validator == "anyOf" and err.instance is not None:
            # a nullable field that holds something: explain what is wrong with the something
            not_null = [c for c in err.context if not (c.validator == "type" and c.validator_value == "null")]
            if not_null and len(not_null) < len(err.context):
                stack.extend(not_null)
                continue
        alternatives_here = err.validator == "anyOf" and all(
            list(c.absolute_path) == list(err.absolute_path) for c in err.context)
        if err.context and not alternatives_here:
            stack.extend(err.context)
        else:
            flat.append(err)
    return max(flat, key=lambda e: (len(e.absolute_path), e.validator != "additionalProperties"))


def load_spec(url: str, overrides: Iterable[str] = (), registry: Registry | None = None) -> dict:
    """Read, override and validate a spec; returns plain data (defaults are filled by the build)."""
    data = parse_yaml(read_text(url), url)
    apply_overrides(data, overrides, url)
    validate(data, url, registry)
    return data
