"""`lcp chat` as a person uses it: the conversation's id to come back to, commands that stay local, and
replies labelled with the assistant version that wrote them."""

import json
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from cli.chat import ChatSession


def _reply(**extra: Any) -> dict[str, Any]:
    return {
        "id": "m2",
        "role": "assistant",
        "content": "Hello!",
        "model": "sim-llama-8b",
        "completion_tokens": 3,
        "latency_ms": 12.0,
        **extra,
    }


def _session(
    answer: Callable[[httpx.Request], httpx.Response],
) -> tuple[ChatSession, Console, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answer(request)

    http = httpx.Client(base_url="http://lcp", transport=httpx.MockTransport(handler))
    console = Console(record=True, width=80)
    return ChatSession(http, console, model=None, assistant="support"), console, sent


def test_the_first_message_shows_the_conversation_id_to_continue_it_with() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        conversation = {"id": "c-0123456789abcdef0123", "assistant_id": "support"}
        turn = {"conversation_id": "c-0123456789abcdef0123", "version": 2, "reply": _reply()}
        return httpx.Response(201, json={"conversation": conversation, "turn": turn})

    session, console, sent = _session(answer)
    assert session.handle("hi")
    assert json.loads(sent[0].content)["assistant"] == {"id": "support"}
    text = console.export_text()
    assert "conversation c-0123456789abcdef0123" in text
    assert "lcp chat --conversation c-0123456789abcdef0123" in " ".join(text.split())
    assert session.handle("/id") and "c-0123456789abcdef0123" in console.export_text()


def test_an_unknown_command_is_refused_here_and_never_sent() -> None:
    session, console, sent = _session(lambda request: httpx.Response(500))
    assert session.handle("/regenerate please")
    assert sent == []
    text = console.export_text()
    assert "unknown command /regenerate (not sent)" in text and "/regen" in text
    assert session.handle("/help") and "/history" in console.export_text()
    assert session.handle("/quit") is False


def test_double_slash_sends_a_message_starting_with_a_slash() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        turn = {"conversation_id": "c1", "version": 2, "reply": _reply()}
        return httpx.Response(201, json={"conversation": {"id": "c1"}, "turn": turn})

    session, _, sent = _session(answer)
    session.handle("//etc/hosts is a file")
    assert json.loads(sent[0].content)["message"]["content"] == "/etc/hosts is a file"


def test_a_reply_is_labelled_with_the_assistant_version_not_the_conversation_version() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        reply = _reply(assistant_version="v3", arm="detailed")
        return httpx.Response(200, json={"conversation_id": "c1", "version": 7, "reply": reply})

    session, console, _ = _session(answer)
    session.conversation_id = "c1"
    session.handle("more")
    text = console.export_text()
    assert "support v3, arm detailed · sim-llama-8b" in text
    assert "v7" not in text
