"""Assistants as data: a versioned spec (instructions, model, params, tools), its validation, what an
edit changed, and which version serves a user (the live one, or an experiment arm)."""

import re
import re._constants as sre_constants
import re._parser as sre_parse
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from policies.assignment import Arm, assign
from policies.errors import PermanentError

__all__ = [
    "BUILTIN_TOOLS",
    "GENERATION_PARAMS",
    "AssistantBinding",
    "AssistantSpec",
    "Experiment",
    "InvalidAssistant",
    "Served",
    "ToolSpec",
    "changed_fields",
    "parameters_problem",
    "serve",
    "spec_from_data",
    "validate_spec",
    "version_name",
]

BUILTIN_TOOLS = ("clock", "calculator")  # what a tool of kind "builtin" may name
TOOL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
GENERATION_PARAMS = (
    "temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed", "stop",
)  # fmt: skip
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
SECRET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_TOOL_ROUNDS = 16
MAX_TOOL_TIMEOUT_S = 300.0
MAX_SCHEMA_VALUES = 5_000  # objects, lists and scalars in one tool's parameters schema
MAX_SCHEMA_DEPTH = 32
REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# What all of a schema's patterns may expand to: the regex module that matches them compiles a bounded
# repeat by unrolling it, so ((a{1000}){1000}){1000} took 12 s and over 4 GiB before matching began, out
# of reach of its match timeout. A pattern's size counts each repeat's count times what it repeats.
MAX_PATTERN_SIZE = 100_000
_REPEATS = tuple(
    getattr(sre_constants, name)
    for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if hasattr(sre_constants, name)
)


class InvalidAssistant(PermanentError, ValueError):
    """An assistant spec that cannot be used; the message says which field and what is wrong."""


@dataclass
class ToolSpec:
    """A function the model may call (OpenAI's function-calling schema), bound to an HTTP endpoint or a
    built-in tool. `idempotent`: calling it twice is harmless, so a failed call may be retried; a
    non-idempotent tool is called at most once per tool call, even across a worker crash."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    kind: str = "http"  # http | builtin
    url: str = ""
    method: str = "POST"
    timeout_s: float = 10.0
    auth_secret: str = ""  # a named secret whose value is sent as the Authorization header
    idempotent: bool = False
    builtin: str = ""  # kind builtin: one of BUILTIN_TOOLS

    def openai_tool(self) -> dict[str, Any]:
        """The declaration the model sees."""
        function = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": function}


@dataclass
class AssistantSpec:
    """What a version of an assistant is. Every edit makes a new, immutable version of it."""

    name: str
    model: str
    instructions: str = ""  # the system prompt
    params: dict[str, Any] = field(default_factory=dict)  # generation params (GENERATION_PARAMS)
    tools: list[ToolSpec] = field(default_factory=list)
    max_tool_rounds: int = 4  # model → tools → model rounds in one turn before it must answer


def spec_from_data(data: dict[str, Any]) -> AssistantSpec:
    """A spec stored as JSON (the read model's) as the dataclass."""
    return AssistantSpec(**{**data, "tools": [ToolSpec(**tool) for tool in data.get("tools", [])]})


def version_name(number: int) -> str:
    return f"v{number}"


def validate_spec(spec: AssistantSpec) -> None:
    """Raise InvalidAssistant, saying what is wrong, unless `spec` can serve conversations."""
    if not spec.name.strip() or len(spec.name) > 200:
        raise InvalidAssistant("name must be 1 to 200 characters")
    if not spec.model.strip():
        raise InvalidAssistant("model must name a model (GET /v1/models lists them)")
    unknown = sorted(set(spec.params) - set(GENERATION_PARAMS))
    if unknown:
        raise InvalidAssistant(f"params {unknown} are not generation params; use {list(GENERATION_PARAMS)}")
    if not 0 <= spec.max_tool_rounds <= MAX_TOOL_ROUNDS:
        raise InvalidAssistant(f"max_tool_rounds must be 0 to {MAX_TOOL_ROUNDS}, not {spec.max_tool_rounds}")
    seen: set[str] = set()
    for tool in spec.tools:
        _validate_tool(tool)
        if tool.name in seen:
            raise InvalidAssistant(f"tool {tool.name!r} is declared twice; tool names must be unique")
        seen.add(tool.name)


def _validate_tool(tool: ToolSpec) -> None:
    where = f"tool {tool.name!r}"
    if not TOOL_NAME.match(tool.name):
        raise InvalidAssistant(f"{where}: a name is 1 to 64 letters, digits, '_' or '-'")
    if not isinstance(tool.parameters, dict) or tool.parameters.get("type") != "object":
        raise InvalidAssistant(f'{where}: parameters must be a JSON schema with "type": "object"')
    if problem := parameters_problem(tool.parameters):
        raise InvalidAssistant(f"{where}: invalid parameters schema: {problem}")
    if not 0 < tool.timeout_s <= MAX_TOOL_TIMEOUT_S:
        raise InvalidAssistant(f"{where}: timeout_s must be above 0 and at most {MAX_TOOL_TIMEOUT_S:.0f}")
    if tool.auth_secret and (not SECRET_NAME.match(tool.auth_secret) or tool.auth_secret in (".", "..")):
        raise InvalidAssistant(f"{where}: auth_secret names a secret: letters, digits, '_', '.', '-'")
    if tool.kind == "builtin":
        if tool.builtin not in BUILTIN_TOOLS:
            raise InvalidAssistant(f"{where}: builtin must be one of {list(BUILTIN_TOOLS)}")
        return
    if tool.kind != "http":
        raise InvalidAssistant(f"{where}: kind must be 'http' or 'builtin', not {tool.kind!r}")
    url = urlsplit(tool.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise InvalidAssistant(f"{where}: url must be an http(s) URL, not {tool.url!r}")
    if tool.method not in TOOL_METHODS:
        raise InvalidAssistant(f"{where}: method must be one of {list(TOOL_METHODS)}")


def parameters_problem(schema: Any) -> str | None:
    """What makes a parameters schema unusable whatever the arguments, or None: more than
    MAX_SCHEMA_VALUES values, nesting deeper than MAX_SCHEMA_DEPTH, or a reference that does not point
    inside the schema (`#...`), or patterns that unroll to more than MAX_PATTERN_SIZE steps in all. A schema
    is a tenant's: lcp never fetches what it names elsewhere. Nor
    may it use patternProperties and unevaluatedProperties together (that check runs the patterns
    where lcp cannot bound their time)."""
    pending: list[tuple[Any, int]] = [(schema, 1)]
    counted = 1
    unbounded: set[str] = set()
    pattern_steps = 0
    while pending:
        value, depth = pending.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return f"it nests deeper than {MAX_SCHEMA_DEPTH} levels"
        inside: list[Any] = []
        if isinstance(value, dict):
            for key, inner in value.items():
                if key in REFERENCE_KEYWORDS and isinstance(inner, str) and not inner.startswith("#"):
                    return (
                        f"{key} {inner[:200]!r} does not point within the schema (#/...); nothing is fetched"
                    )
                if key in ("patternProperties", "unevaluatedProperties"):
                    unbounded.add(key)
                patterns = [inner] if key == "pattern" and isinstance(inner, str) else []
                if key == "patternProperties" and isinstance(inner, dict):
                    patterns = list(inner)
                for pattern in patterns:
                    pattern_steps += pattern_size(pattern)
                    if pattern_steps > MAX_PATTERN_SIZE:
                        return (
                            f"its patterns expand to more than {MAX_PATTERN_SIZE:,} steps "
                            f"(at {pattern[:100]!r}): use smaller repeat counts, or + and *"
                        )
                inside.append(inner)
        elif isinstance(value, list):
            inside = value
        counted += len(inside)
        if counted > MAX_SCHEMA_VALUES:
            return f"it has more than {MAX_SCHEMA_VALUES} values"
        pending.extend((inner, depth + 1) for inner in inside)
    if len(unbounded) == 2:
        return "patternProperties and unevaluatedProperties cannot be used together; use additionalProperties"
    return None


def pattern_size(pattern: str) -> int:
    """How big `pattern` is once its bounded repeats are unrolled (each counted times what it repeats,
    an open-ended one by its minimum); 0 for a pattern Python cannot read (its check says why later)."""
    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError):
        return 0
    return _size(parsed)


def _size(parsed: sre_parse.SubPattern) -> int:
    total = 0
    for op, value in parsed:
        if op in _REPEATS:
            least, most, inner = value
            times = least if most == sre_constants.MAXREPEAT else most
            total += max(times, 1) * _size(inner)
            continue
        total += 1
        parts = value if isinstance(value, tuple | list) else (value,)
        for part in parts:
            if isinstance(part, sre_parse.SubPattern):
                total += _size(part)
            elif isinstance(part, list):
                total += sum(_size(item) for item in part if isinstance(item, sre_parse.SubPattern))
    return max(total, 1)


def changed_fields(old: AssistantSpec | None, new: AssistantSpec) -> list[str]:
    """The spec fields an edit changed (all of them for the first version)."""
    return [
        f.name for f in fields(AssistantSpec) if old is None or getattr(old, f.name) != getattr(new, f.name)
    ]


@dataclass
class Experiment:
    """An A/B test between versions: arms with shares, assignment sticky per user (policies.assignment)."""

    id: str
    arms: list[Arm]


@dataclass
class Served:
    version: str
    experiment_id: str | None = None
    arm: str | None = None


def serve(
    assistant_id: str,
    live_version: str | None,
    experiment: Experiment | None,
    user: str,
    requested_version: str | None = None,
) -> Served:
    """Which version serves `user`: the version they asked for, else their experiment arm's while an
    experiment runs, else the live (published) one. Raises InvalidAssistant if none is published."""
    if requested_version:
        return Served(requested_version)
    if experiment is not None:
        arm = assign(experiment.arms, assistant_id, experiment.id, user)
        return Served(arm.version, experiment.id, arm.name)
    if live_version is None:
        raise InvalidAssistant(
            f"assistant {assistant_id!r} has no published version yet; publish one or ask for a version"
        )
    return Served(live_version)


@dataclass
class AssistantBinding:
    """What a conversation runs on: one version's spec, copied in when the conversation starts, so later
    edits never change it unless the user switches."""

    assistant_id: str
    version: str
    spec: AssistantSpec
    experiment_id: str | None = None
    arm: str | None = None
