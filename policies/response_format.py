"""Structured outputs' rules for a `response_format` JSON schema: bounded, local references only, and with
`strict` OpenAI's strict-mode rules; problems name the path (whether it is well formed JSON Schema is
checked against the meta-schema by its users, with jsonschema)."""

from collections.abc import Iterator
from typing import Any

from policies.assistants import parameters_problem

# Keywords whose value is one subschema, a list of them, or a map of names to them.
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_LIST = ("anyOf", "allOf", "oneOf", "prefixItems")
_MAP = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


def pointer(path: tuple[str | int, ...]) -> str:
    """A JSON pointer (RFC 6901) to `path` within the schema: '#' is the schema itself."""
    return "#" + "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def subschemas(
    schema: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every subschema of `schema` (itself first) with its path; the schema must be bounded already."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in _ONE:
        if isinstance(schema.get(key), dict):
            yield from subschemas(schema[key], (*path, key))
    for key in _LIST:
        if isinstance(schema.get(key), list):
            for index, inner in enumerate(schema[key]):
                yield from subschemas(inner, (*path, key, index))
    for key in _MAP:
        if isinstance(schema.get(key), dict):
            for name, inner in schema[key].items():
                yield from subschemas(inner, (*path, key, name))


def bounds_problem(schema: dict[str, Any]) -> str | None:
    """What makes a schema unusable whatever it says (too big or deep, a reference outside it), or None."""
    if reason := parameters_problem(schema):
        return f"the schema is unusable: {reason}"
    if "$schema" in schema and not isinstance(schema["$schema"], str):
        return "at #/$schema: it must be a string (a meta-schema URI)"
    if "draft-03" in schema.get("$schema", ""):
        return "at #/$schema: draft-03 is not supported (its keywords differ): use Draft 2020-12 or omit it"
    return None


def strict_problem(schema: dict[str, Any]) -> str | None:
    """OpenAI's strict mode: the root is an object, and every object lists all its properties as
    required and allows no others (a nullable type stands for an optional field)."""
    if schema.get("type") != "object":
        return 'at #: with strict, the schema\'s root must be "type": "object"'
    for path, sub in subschemas(schema):
        kind = sub.get("type")
        if not (kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in sub):
            continue
        if sub.get("additionalProperties") is not False:
            return f'at {pointer(path)}: with strict, an object needs "additionalProperties": false'
        properties = sub.get("properties") or {}
        required = sub.get("required")
        missing = sorted(set(properties) - set(required if isinstance(required, list) else []))
        if missing:
            return (
                f"at {pointer(path)}: with strict, every property must be required (missing: "
                f"{', '.join(missing)[:200]}); make an optional one nullable instead"
            )
    return None
