"""lcp through the litellm SDK (`litellm.completion`, provider `openai/`): a one-shot reply, a stream,
tools, structured output, and durable turns. litellm keeps `metadata=` for its own logging and never
sends it, so the conversation id goes in `extra_headers` or `extra_body`. Run with LCP_URL and LCP_KEY
set; prints one JSON object of what came back."""

import json
import os

import litellm
from pydantic import BaseModel


class Ticket(BaseModel):
    title: str
    priority: str


base = {
    "model": "openai/sim-zero",
    "api_base": f"{os.environ['LCP_URL']}/v1",
    "api_key": os.environ["LCP_KEY"],
}


def ask(text: str, **extra: object) -> litellm.ModelResponse:
    return litellm.completion(**base, messages=[{"role": "user", "content": text}], **extra)


lookup = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
    },
}
out: dict[str, object] = {"one_shot": ask("[echo] hello").choices[0].message.content}
chunks = ask("[echo] streamed words", stream=True)
out["streamed"] = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
out["tool_calls"] = [
    call.function.name for call in ask("please lookup order 7", tools=[lookup]).choices[0].message.tool_calls
]
reply = ask("file a ticket", response_format=Ticket).choices[0].message.content
out["structured"] = Ticket.model_validate_json(reply).model_dump()

# Durable: the conversation id in a header, or in the body.
conversation = os.environ["LCP_CONVERSATION"]
out["durable"] = [
    ask("[echo] kept", extra_headers={"X-Conversation-Id": conversation + "-h"}).choices[0].message.content,
    ask("[echo] kept too", extra_body={"conversation_id": conversation + "-b"}).choices[0].message.content,
]
print(json.dumps(out))
