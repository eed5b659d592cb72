"""The inference activity: one chat completion through the gateway (text, or the tools the model calls),
optionally streamed to the API through the token relay while it is generated. One call per attempt:
Temporal's retry policy is the only retry loop on this path (the gateway's own is the one-shot path's)."""

import asyncio
import time

from temporalio import activity

from activities.contracts import inference as contract
from activities.contracts.inference import ChatCompletionInput, ChatCompletionResult, ChatMessage
from inference.gateway import Gateway
from inference.token_relay import Delta, TokenRelay

__all__ = ["ChatCompletionInput", "ChatCompletionResult", "ChatMessage", "InferenceActivities"]

HEARTBEAT_EVERY_S = 1.0


class InferenceActivities(contract.InferenceActivities):
    def __init__(self, gateway: Gateway, relay: TokenRelay | None = None) -> None:
        self._gateway = gateway
        self._relay = relay

    @activity.defn(name="inference.chat_completion")
    async def chat_completion(self, request: ChatCompletionInput) -> ChatCompletionResult:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            if request.stream_channel and self._relay is not None:
                return await self._streamed(request, request.stream_channel, self._relay)
            return await self._gateway.complete(
                request.model,
                request.messages,
                request.params,
                tools=request.tools,
                tool_choice=request.tool_choice,
                previous=request.previous_deployment,
                single_attempt=True,
                tenant=request.tenant,
            )
        finally:
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        # Only calls that take a while heartbeat: a fast reply costs no extra round trip.
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_S)
            activity.heartbeat()

    async def _streamed(
        self, request: ChatCompletionInput, channel: str, relay: TokenRelay
    ) -> ChatCompletionResult:
        attempt = activity.info().attempt
        pending: list[str] = []
        last_publish = 0.0
        replies = self._gateway.stream(
            request.model,
            request.messages,
            request.params,
            tools=request.tools,
            tool_choice=request.tool_choice,
            previous=request.previous_deployment,
            single_attempt=True,
            tenant=request.tenant,
        )
        # Text deltas, then the reply. The channel carries exactly the reply's text, in tool-call rounds
        # too (what a model writes before its calls): what was not yet published goes out at the end.
        published = 0
        async for item in replies:
            if isinstance(item, ChatCompletionResult):
                if rest := item.content[published:]:
                    await relay.publish(Delta(channel, attempt, rest))
                return item
            pending.append(item)
            now = time.monotonic()
            if now - last_publish >= relay.batch_s:
                text = "".join(pending)
                await relay.publish(Delta(channel, attempt, text))
                published += len(text)
                pending.clear()
                last_publish = now
        raise AssertionError("the gateway's stream ended without the whole reply")
