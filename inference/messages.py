"""The messages a chat completion sends and the reply it gets: what the gateway, the inference activity's
contract and the conversation workflow share, without the gateway's clients."""

from dataclasses import dataclass
from typing import Any

from policies.models import STABLE_VERSION


@dataclass
class ChatMessage:
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None = None  # an assistant's tool calls: {"id", "name", "arguments"}
    tool_call_id: str | None = None  # a "tool" message's: the id of the call it answers


@dataclass
class ChatCompletionResult:
    content: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    version: str = STABLE_VERSION  # the version of the model that answered (see the models policy)
    tool_calls: list[dict[str, Any]] | None = None  # the tools the model calls: {"id", "name", "arguments"}
    deployment: str | None = None  # the deployment of the model that answered (see the models policy)
