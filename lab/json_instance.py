"""A JSON value that conforms to a JSON schema, as the simulated model's structured output: built from
the schema's types, enums, consts, bounds and local references, within a bounded depth and size. A schema
it cannot satisfy that way (a pattern, allOf of several, a recursion with no way out) is Unsupported,
naming the path; what it builds is then checked against the schema, so it never answers a wrong value."""

import random
from typing import Any, TypeVar

import jsonschema

from activities.tools import SchemaTooCostly, bounded_error
from policies.response_format import bounds_problem, pointer

MAX_DEPTH = 16  # nested objects and arrays, references followed included
MAX_VALUES = 2_000  # values in one instance
MAX_STEPS = 20_000  # subschemas visited, alternatives that failed included
MAX_ITEMS = 50  # the most items an array's minItems may ask for
MAX_STRING = 1_000  # the longest string a minLength may ask for
FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}
WORDS = "quiet bright warm simple clear open careful small large early".split()

Path = tuple[str | int, ...]
T = TypeVar("T")


class Unsupported(ValueError):
    """The schema asks for something this generator cannot build; `path` says where."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"at {pointer(path)}: {reason}")
        self.path = path


def instance(schema: dict[str, Any], rng: random.Random) -> Any:
    """A value that validates against `schema` (Draft 2020-12 unless it names its own `$schema`)."""
    if problem := bounds_problem(schema):
        raise Unsupported((), f"not a usable schema ({problem})")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as err:
        raise Unsupported(tuple(err.path), f"not a valid schema: {err.message[:200]}") from None
    try:
        value = _Builder(schema, rng).build(schema, (), 0)
        error = bounded_error(schema, value)
    except SchemaTooCostly as err:
        raise Unsupported((), f"too much work to check a value against it: {err}") from None
    except (ArithmeticError, ValueError, TypeError, RecursionError) as err:  # huge bounds, reference loops
        if isinstance(err, Unsupported):
            raise
        raise Unsupported((), f"cannot build a value that fits: {type(err).__name__}") from None
    if error is not None:  # a keyword the builder does not read (not, if/then, uniqueItems, ...)
        raise Unsupported(tuple(error.schema_path), f"cannot build a value that fits: {error.message[:200]}")
    return value


class _TooMuchWork(Unsupported):
    """Never caught by an alternative: the whole schema is too much work."""


class _Builder:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self._root = root
        self._rng = rng
        self._values = 0
        self._steps = 0

    def build(self, schema: Any, path: Path, depth: int) -> Any:
        self._steps += 1
        if self._steps > MAX_STEPS:
            raise _TooMuchWork(path, f"building a value takes more than {MAX_STEPS} steps")
        if schema is True or schema == {}:
            return self._count(self._rng.choice(WORDS), path)
        if not isinstance(schema, dict):
            raise Unsupported(path, "a schema that accepts nothing (false)")
        if depth > MAX_DEPTH:
            raise Unsupported(path, f"the value would nest deeper than {MAX_DEPTH} levels")
        if "$ref" in schema:
            return self.build(self._resolve(schema["$ref"], path), (*path, "$ref"), depth + 1)
        if "const" in schema:
            return self._count(schema["const"], path)
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._count(schema["enum"][0], path)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                return self._first_fitting(schema[key], (*path, key), depth)
        if isinstance(schema.get("allOf"), list):
            if len(schema["allOf"]) != 1:
                raise Unsupported((*path, "allOf"), "allOf of more than one schema is not supported")
            return self.build(schema["allOf"][0], (*path, "allOf", 0), depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):  # the first type that is not null, as a model would fill it
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self._object(schema, path, depth)
        if kind == "array":
            return self._array(schema, path, depth)
        if kind == "string":
            return self._count(self._string(schema, path), path)
        if kind in ("integer", "number"):
            return self._count(self._number(schema, kind, path), path)
        if kind == "boolean":
            return self._count(self._rng.random() < 0.5, path)
        if kind == "null":
            return self._count(None, path)
        raise Unsupported((*path, "type"), f"unknown type {kind!r}")

    def _count(self, value: T, path: Path) -> T:
        self._values += 1
        if self._values > MAX_VALUES:
            raise Unsupported(path, f"the value would hold more than {MAX_VALUES} values")
        return value

    def _resolve(self, ref: Any, path: Path) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise Unsupported((*path, "$ref"), "only references within the schema (#/...) are followed")
        target: Any = self._root
        for raw in ref[1:].split("/")[1:] if ref != "#" else []:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise Unsupported((*path, "$ref"), f"{ref[:200]!r} points at nothing")
        return target

    def _first_fitting(self, options: list[Any], path: Path, depth: int) -> Any:
        """The first alternative that can be built (a recursive one may not be, at this depth)."""
        last: Unsupported | None = None
        for index, option in enumerate(options):
            counted = self._values
            try:
                return self.build(option, (*path, index), depth + 1)
            except _TooMuchWork:
                raise
            except Unsupported as err:
                self._values, last = counted, err
        assert last is not None
        raise last

    def _object(self, schema: dict[str, Any], path: Path, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if isinstance(name, str)]
        value = {}
        for name in [*required, *(name for name in properties if name not in required)]:
            inner = properties.get(name, True)
            where = (*path, "properties", name)
            if name in required:
                value[name] = self.build(inner, where, depth + 1)
                continue
            try:  # an optional property is left out when it cannot be built
                counted = self._values
                value[name] = self.build(inner, where, depth + 1)
            except _TooMuchWork:
                raise
            except Unsupported:
                self._values = counted
        return self._count(value, path)

    def _array(self, schema: dict[str, Any], path: Path, depth: int) -> list[Any]:
        least, most = int(schema.get("minItems", 0)), schema.get("maxItems")
        if least > MAX_ITEMS:
            raise Unsupported((*path, "minItems"), f"more than {MAX_ITEMS} items asked for")
        prefix = schema.get("prefixItems") or []
        wanted = max(least, len(prefix), 1 if most is None or most >= 1 else 0)
        items: list[Any] = []
        for index in range(wanted):
            if index < len(prefix):
                items.append(self.build(prefix[index], (*path, "prefixItems", index), depth + 1))
            elif index < least:
                items.append(self.build(schema.get("items", True), (*path, "items"), depth + 1))
            else:  # an item beyond the minimum is left out when it cannot be built (a recursion's end)
                counted = self._values
                try:
                    items.append(self.build(schema.get("items", True), (*path, "items"), depth + 1))
                except _TooMuchWork:
                    raise
                except Unsupported:
                    self._values = counted
        return self._count(items, path)

    def _string(self, schema: dict[str, Any], path: Path) -> str:
        if "pattern" in schema:
            raise Unsupported((*path, "pattern"), "strings with a pattern are not supported")
        least, most = int(schema.get("minLength", 0)), schema.get("maxLength")
        if least > MAX_STRING:
            raise Unsupported((*path, "minLength"), f"strings longer than {MAX_STRING} are not supported")
        text = FORMATS.get(schema.get("format", ""), " ".join(self._rng.choice(WORDS) for _ in range(2)))
        while len(text) < least:
            text += " " + self._rng.choice(WORDS)
        return text[: int(most)] if most is not None and len(text) > int(most) >= least else text

    def _number(self, schema: dict[str, Any], kind: str, path: Path) -> int | float:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        step = schema.get("multipleOf")
        if kind == "integer" or step is not None:
            unit = step if step is not None else 1
            start = 0 if low is None else (low // unit + 1) * unit
            if high is not None and start > high:
                start = (high // unit) * unit
            value: int | float = start
            if kind == "integer" or isinstance(unit, int):
                value = int(value)
            return value
        if low is not None and high is not None:
            return (float(low) + float(high)) / 2
        if low is not None:
            return float(low) + 1.5
        if high is not None:
            return float(high) - 1.5
        return round(self._rng.uniform(0, 100), 2)
