"""lcp through LangChain's ChatOpenAI (langchain-openai): a one-shot reply, a stream, tools, structured
output, and durable turns. LangChain drops `model_kwargs={"metadata": ...}`, so the conversation id goes
in a header (`default_headers`) or in the body (`extra_body`). Run with LCP_URL and LCP_KEY set; prints
one JSON object of what came back."""

import json
import os

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel


class Ticket(BaseModel):
    title: str
    priority: str


@tool
def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order}: shipped"


base = {"base_url": f"{os.environ['LCP_URL']}/v1", "api_key": os.environ["LCP_KEY"], "model": "sim-zero"}
llm = ChatOpenAI(**base)
out: dict[str, object] = {"one_shot": llm.invoke("[echo] hello").content}
out["streamed"] = "".join(str(chunk.content) for chunk in llm.stream("[echo] streamed words"))
out["tool_calls"] = [
    call["name"] for call in llm.bind_tools([lookup]).invoke("please lookup order 7").tool_calls
]
out["structured"] = llm.with_structured_output(Ticket).invoke("file a ticket").model_dump()

# Durable: the conversation id in a header, or in the body.
by_header = ChatOpenAI(**base, default_headers={"X-Conversation-Id": os.environ["LCP_CONVERSATION"] + "-h"})
by_body = ChatOpenAI(**base, extra_body={"conversation_id": os.environ["LCP_CONVERSATION"] + "-b"})
out["durable"] = [by_header.invoke("[echo] kept").content, by_body.invoke("[echo] kept too").content]
print(json.dumps(out))
