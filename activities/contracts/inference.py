"""What the conversation workflow shares with the inference activity (activities/inference.py): its input,
result and name, without the gateway."""

from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

from inference.messages import ChatCompletionResult, ChatMessage

__all__ = ["ChatCompletionInput", "ChatCompletionResult", "ChatMessage", "InferenceActivities"]


@dataclass
class ChatCompletionInput:
    model: str
    messages: list[ChatMessage]
    params: dict[str, Any] = field(default_factory=dict)
    # When set, the reply's tokens are also published on this relay channel as they arrive.
    stream_channel: str | None = None
    tools: list[dict[str, Any]] | None = None  # OpenAI's tool declarations the model may call
    tool_choice: str | None = None  # "none" | "auto" | "required"; None: the endpoint's default
    # The deployment that served the conversation's previous turn: it most likely still holds the
    # conversation's prefix in its KV cache, so the picker prefers it while it is not overloaded.
    previous_deployment: str | None = None
    tenant: str | None = None  # whose turn it is: the gateway's flow control holds each tenant's in turn


class InferenceActivities:
    """The activity's contract: what workflows call. The implementation, activities/inference.py's
    InferenceActivities, subclasses this and overrides it under the same activity name."""

    @activity.defn(name="inference.chat_completion")
    async def chat_completion(self, request: ChatCompletionInput) -> ChatCompletionResult:
        """One chat completion through the gateway, one attempt (Temporal retries)."""
        raise NotImplementedError
