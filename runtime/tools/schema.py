"""A small JSON Schema validator for tool arguments.

Tools declare their parameters as JSON Schema; models produce arguments that do
not always match. This module supports the subset tool schemas use, and refuses
(at registration) a schema with any other keyword, so validation is never
silently weaker than the schema reads:

- ``type`` (a name or a list of names: ``object``, ``array``, ``string``,
  ``integer``, ``number``, ``boolean``, ``null``), ``enum``, ``const``;
- objects: ``properties``, ``required``, ``additionalProperties`` (a boolean or a
  schema);
- arrays: ``items``, ``minItems``, ``maxItems``;
- strings: ``minLength``, ``maxLength``;
- numbers: ``minimum``, ``maximum``;
- annotations, ignored: ``title``, ``description``, ``default``, ``examples``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "title",
        "description",
        "default",
        "examples",
    }
)


class SchemaError(ValueError):
    """A tool's schema uses something this validator does not support."""


def check_schema(schema: Any, where: str = "$") -> None:
    """Refuse a schema outside the supported subset (see the module docstring)."""
    if not isinstance(schema, Mapping):
        msg = f"{where}: a schema must be an object"
        raise SchemaError(msg)
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        msg = f"{where}: unsupported schema keyword(s) {', '.join(unknown)}"
        raise SchemaError(msg)
    kinds = schema.get("type")
    names = [kinds] if isinstance(kinds, str) else kinds
    if names is not None and (
        not isinstance(names, list) or not names or any(n not in TYPES for n in names)
    ):
        msg = f"{where}: type must be one of {', '.join(TYPES)} (or a list of them)"
        raise SchemaError(msg)
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        msg = f"{where}: properties must be an object"
        raise SchemaError(msg)
    for name, sub in properties.items():
        check_schema(sub, f"{where}.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        msg = f"{where}: required must be a list of names"
        raise SchemaError(msg)
    extra = schema.get("additionalProperties", True)
    if not isinstance(extra, bool):
        check_schema(extra, f"{where}.*")
    if "items" in schema:
        check_schema(schema["items"], f"{where}[]")
    if "enum" in schema and not isinstance(schema["enum"], list):
        msg = f"{where}: enum must be a list"
        raise SchemaError(msg)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _matches(value: Any, kind: str) -> bool:
    found = _type_of(value)
    if kind == "number":
        return found in ("integer", "number")
    if kind == "integer" and found == "number":
        return float(value).is_integer()
    return found == kind


def validate(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty when it conforms), each as
    ``"<path>: <problem>"``; values are never quoted back."""
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_matches(value, kind) for kind in names):
            return [f"{where}: expected {' or '.join(names)}, got {_type_of(value)}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: not one of the allowed values")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: not the expected constant")
    if isinstance(value, dict):
        problems += _validate_object(value, schema, where)
    elif isinstance(value, list):
        problems += _validate_array(value, schema, where)
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where}: longer than {schema['maxLength']}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: greater than {schema['maximum']}")
    return problems


def _validate_object(
    value: dict[str, Any], schema: Mapping[str, Any], where: str
) -> list[str]:
    problems = [
        f"{where}.{name}: required"
        for name in schema.get("required", [])
        if name not in value
    ]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problems += validate(item, properties[name], f"{where}.{name}")
        elif extra is False:
            problems.append(f"{where}: unexpected property {name[:64]!r}")
        elif isinstance(extra, Mapping):
            problems += validate(item, extra, f"{where}.{name}")
    return problems


def _validate_array(
    value: list[Any], schema: Mapping[str, Any], where: str
) -> list[str]:
    problems: list[str] = []
    if len(value) < schema.get("minItems", 0):
        problems.append(f"{where}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append(f"{where}: more than {schema['maxItems']} items")
    if "items" in schema:
        for index, item in enumerate(value):
            problems += validate(item, schema["items"], f"{where}[{index}]")
    return problems
