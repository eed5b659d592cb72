"""An assistant's tools in OpenAI's function-calling shape, beside lcp's flat one, and the spec the
project ships (examples/assistants/support.yaml) as the API reads it."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from api.assistant_schemas import AssistantCreate
from cli.assistants import spec_body
from policies.assistants import ToolSpec, validate_spec

EXAMPLE = Path(__file__).parents[2] / "examples" / "assistants" / "support.yaml"
PARAMETERS = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}


def _tools(*tools: dict[str, Any]) -> list[ToolSpec]:
    body = {"id": "support", "name": "Support", "model": "sim-llama-8b", "tools": list(tools)}
    spec = AssistantCreate.model_validate(body).applied_to(None)
    validate_spec(spec)
    return spec.tools


def test_openai_shape_and_flat_shape_are_the_same_tool() -> None:
    openai_shape = {
        "type": "function",
        "function": {"name": "calculator", "description": "Arithmetic.", "parameters": PARAMETERS},
        "kind": "builtin",
        "builtin": "calculator",
    }
    flat = {
        "name": "calculator",
        "description": "Arithmetic.",
        "parameters": PARAMETERS,
        "builtin": "calculator",
    }
    assert _tools(openai_shape) == _tools(flat)  # and `builtin` alone makes the kind builtin
    (tool,) = _tools(openai_shape)
    assert tool.kind == "builtin" and tool.openai_tool()["function"]["parameters"] == PARAMETERS


def test_an_http_tool_in_openai_shape_keeps_its_binding_and_strict_is_accepted() -> None:
    (tool,) = _tools(
        {
            "type": "function",
            "function": {"name": "order_status", "parameters": PARAMETERS, "strict": True},
            "url": "https://orders.example.com/status",
            "idempotent": True,
        }
    )
    assert (tool.kind, tool.url, tool.idempotent) == ("http", "https://orders.example.com/status", True)


@pytest.mark.parametrize(
    ("tool", "said"),
    [
        ({"type": "retrieval", "function": {"name": "x"}}, 'type: an OpenAI tool is {"type": "function"'),
        ({"type": "function", "function": "calculator"}, "function: expected an object"),
        ({"type": "function", "function": {"name": "x", "arguments": "{}"}}, "unknown field(s) arguments"),
        (
            {"type": "function", "name": "x", "function": {"name": "x"}},
            "name: given both in function",
        ),
        ({"type": "function", "function": {"name": "x", "strict": "yes"}}, "function.strict: true or false"),
        ({"type": "function", "function": {"name": "no spaces"}, "builtin": "clock"}, "tools.0.name"),
    ],
)
def test_a_malformed_openai_tool_says_what_is_wrong(tool: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _tools(tool)
    errors = raised.value.errors()
    where = ".".join(str(part) for part in errors[0]["loc"])
    assert said in f"{where}: {errors[0]['msg']}"


def test_the_shipped_support_spec_is_valid_and_declares_the_builtins() -> None:
    body = spec_body(EXAMPLE)  # as `lcp assistants create support --file ...` reads it
    spec = AssistantCreate.model_validate({"id": "support", **body}).applied_to(None)
    validate_spec(spec)
    assert [(t.name, t.kind, t.builtin) for t in spec.tools] == [
        ("calculator", "builtin", "calculator"),
        ("clock", "builtin", "clock"),
    ]
    assert yaml.safe_load(EXAMPLE.read_text())["tools"][0]["type"] == "function"  # OpenAI's shape, as shipped
