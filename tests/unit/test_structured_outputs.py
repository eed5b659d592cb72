"""Structured outputs without the API's server: the schema check (api/openai_schemas.py with
policies/response_format.py), the simulator's value builder (lab/json_instance.py), and the simulator
answering `response_format` to the openai SDK."""

import json
import random
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from api.openai_schemas import schema_problem
from lab.json_instance import MAX_STEPS, Unsupported, instance
from lab.llm_simulator import create_app
from tests.http_server import serve_in_thread


class Address(BaseModel):
    city: str
    postcode: str | None


class Node(BaseModel):
    label: str
    children: list["Node"]


class Ticket(BaseModel):
    title: str = Field(min_length=5, max_length=40)
    priority: Literal["low", "high"]
    votes: int = Field(ge=10, le=20)
    score: float = Field(gt=0, lt=1)
    tags: list[str] = Field(min_length=2, max_length=3)
    address: Address
    tree: Node
    due: str = Field(json_schema_extra={"format": "date"})


@pytest.mark.parametrize("strict", [True, False])
def test_pydantic_schemas_get_values_that_validate(strict: bool) -> None:
    schema = to_strict_json_schema(Ticket) if strict else Ticket.model_json_schema()
    assert schema_problem(schema, strict=strict) is None
    for seed in range(20):
        Ticket.model_validate(instance(schema, random.Random(seed)))


@pytest.mark.parametrize(
    ("schema", "strict", "where"),
    [
        ({"type": "objec"}, False, "at #/type:"),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}},
            False,
            "#/properties/n/minimum",
        ),
        ({"type": "object", "properties": {"a": {"type": "string"}}}, True, '"additionalProperties": false'),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
            True,
            "missing: a",
        ),
        ({"type": "array"}, True, "root must be"),
        ({"$ref": "https://example.com/schema.json"}, False, "nothing is fetched"),
        (  # draft-03's `required` is a flag: strict mode's check once raised on it (a 500)
            {
                "$schema": "http://json-schema.org/draft-03/schema#",
                "type": "object",
                "additionalProperties": False,
                "required": True,
            },
            True,
            "draft-03 is not supported",
        ),
    ],
)
def test_malformed_schemas_are_named_by_path(schema: dict[str, Any], strict: bool, where: str) -> None:
    problem = schema_problem(schema, strict=strict)
    assert problem is not None and where in problem


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        (
            {
                "type": "object",
                "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}},
                "required": ["id"],
            },
            "#/properties/id/pattern",
        ),
        ({"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}, "deeper than"),
        ({"type": "array", "minItems": 10_000}, "#/minItems"),
        ({"type": "string", "minLength": 10**9}, "#/minLength"),
        ({"allOf": [{"type": "string"}, {"minLength": 2}]}, "#/allOf"),
        ({"type": "integer", "not": {"const": 0}}, "cannot build"),
    ],
)
def test_schemas_the_builder_cannot_satisfy_are_refused_naming_the_path(
    schema: dict[str, Any], where: str
) -> None:
    with pytest.raises(Unsupported, match=where):
        instance(schema, random.Random(0))


def test_the_builder_is_bounded_on_schemas_that_branch_without_end() -> None:
    """Every alternative recurses and fails only at the depth limit: 4^8 tries unbounded."""
    schema = {"$defs": {"x": {"anyOf": [{"$ref": "#/$defs/x"}] * 4}}, "$ref": "#/$defs/x"}
    with pytest.raises(Unsupported, match=f"more than {MAX_STEPS} steps"):
        instance(schema, random.Random(0))


def test_checking_the_value_is_bounded_on_nested_one_of_references() -> None:
    """The builder takes oneOf's first option, but checking the value tries every option at every level:
    300 options 7 levels deep would never end (N^7); the check follows a bounded number of references."""
    levels = {f"l{i}": {"oneOf": [{"$ref": f"#/$defs/l{i + 1}"}] * 300} for i in range(7)}
    schema = {"$ref": "#/$defs/l0", "$defs": {**levels, "l7": {"type": "string"}}}
    with pytest.raises(Unsupported, match="too much work to check"):
        instance(schema, random.Random(0))


def test_a_recursion_with_a_way_out_ends() -> None:
    schema = {
        "$defs": {
            "n": {
                "anyOf": [
                    {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}, "required": ["next"]},
                    {"type": "null"},
                ]
            }
        },
        "$ref": "#/$defs/n",
    }
    value = instance(schema, random.Random(0))
    depth = 0
    while value is not None:
        value, depth = value["next"], depth + 1
    assert 0 < depth < 16


@pytest.fixture
def sim() -> Iterator[openai.OpenAI]:
    with (
        serve_in_thread(create_app(seed=3)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="x") as client,
    ):
        yield client


def test_the_simulator_answers_parse_with_a_conforming_value(sim: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "file a ticket"}]
    parsed = sim.chat.completions.parse(model="sim-zero", messages=messages, response_format=Ticket)
    assert isinstance(parsed.choices[0].message.parsed, Ticket)
    with sim.chat.completions.stream(model="sim-zero", messages=messages, response_format=Ticket) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Ticket)
    whole = sim.chat.completions.create(
        model="sim-zero", messages=messages, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(whole.choices[0].message.content or ""), dict)


def test_the_simulator_refuses_a_schema_it_cannot_satisfy_with_400(sim: openai.OpenAI) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"id": {"type": "string", "pattern": "^x$"}},
        "required": ["id"],
    }
    with pytest.raises(openai.BadRequestError, match="#/properties/id/pattern"):
        sim.chat.completions.create(
            model="sim-zero",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        )
