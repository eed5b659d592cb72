"""A hostile tenant's input is answered, never a 500: lone surrogates and NUL anywhere in a body, bodies
over the API's limit (declared or chunked, refused before they are read whole), 100,000 messages, 200,000
unknown keys, control and bidi characters in names and titles, booleans and huge numbers where numbers go;
and the CLI never prints stored text raw."""

import json
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from rich.console import Console

from api.assistant_schemas import AssistantSummary
from api.schemas import ConversationCreate
from cli.assistants import render_list
from cli.chat import ChatSession
from cli.show import plain, shown
from settings import ApiSettings

# The API tests run against the real stack on one database: the rules do not depend on it.
on_sqlite = pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)

SURROGATE = "\\ud800"  # as the JSON escape a client sends: json.loads turns it into a lone surrogate
LIMIT = ApiSettings().max_body_bytes


class Raw:
    """One keep-alive HTTP/1.1 connection spoken by hand, so a test sees exactly what the server does with
    it: whether it answers before reading a body, and whether the connection stays open."""

    def __init__(self, api_url: str, key: str) -> None:
        url = urlsplit(api_url)
        self.host, self.key = f"{url.hostname}:{url.port}", key
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def head(self, method: str, path: str, extra: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Authorization: Bearer {self.key}"]
        lines += [f"{name}: {value}" for name, value in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        extra = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        self.sock.sendall(self.head(method, path, extra) + body)

    def response(self) -> tuple[int, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        if headers.get("transfer-encoding") == "chunked":  # an SSE stream: read to its terminating chunk
            while b"0\r\n\r\n" not in self.buffer:
                self._read()
            body, self.buffer = self.buffer.split(b"0\r\n\r\n", 1)
            return int(status_line.split()[1]), headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, json.loads(body) if body else None

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data


def _body(text: str) -> bytes:
    return text.encode()


async def _conversation(api: httpx.AsyncClient) -> tuple[str, str]:
    """A conversation with one turn: its id and the user message's id."""
    created = await api.post(
        "/v1/conversations", json={"model": "sim-zero", "message": {"content": "[echo] hello"}}
    )
    assert created.status_code == 201, created.text
    turn = created.json()["turn"]
    return created.json()["conversation"]["id"], turn["message"]["id"]


@on_sqlite
async def test_lone_surrogates_anywhere_are_a_422_and_the_connection_stays_usable(
    api_url: str, api: httpx.AsyncClient, mint_key: Any
) -> None:
    conversation_id, message_id = await _conversation(api)
    chat = '{"model": "sim-zero", "messages": [{"role": "user", "content": "a' + SURROGATE + 'b"}]%s}'
    cases: list[tuple[str, str, dict[str, str], str]] = [
        ("POST", "/v1/conversations", {}, '{"title": "t", "message": {"content": "' + SURROGATE + '"}}'),
        ("POST", "/v1/conversations", {}, '{"title": "x' + SURROGATE + '"}'),
        ("POST", f"/v1/conversations/{conversation_id}/messages", {}, '{"content": "' + SURROGATE + '"}'),
        (
            "POST",
            f"/v1/conversations/{conversation_id}/messages/{message_id}/edit",
            {},
            '{"content": "\\udfff alone"}',
        ),
        ("POST", "/v1/chat/completions", {}, chat % ""),
        ("POST", "/v1/chat/completions", {}, chat % ', "stream": true'),
        ("POST", "/v1/chat/completions", {"X-Conversation-Id": f"s-{uuid.uuid4().hex[:8]}"}, chat % ""),
        (
            "POST",
            "/v1/chat/completions",
            {"X-Conversation-Id": f"s-{uuid.uuid4().hex[:8]}"},
            chat % ', "stream": true',
        ),
        ("POST", "/v1/chat/completions", {}, chat.replace('"content"', '"' + SURROGATE + '"') % ""),
        (
            "POST",
            "/v1/rollouts",
            {},
            '{"service": "s", "namespace": "lab", "image": "i", "version": "v", '
            '"templates": {"' + SURROGATE + '": {"query": "up"}}}',
        ),
        ("POST", "/v1/conversations", {}, '{"title": "\\u0000 nul"}'),
    ]
    raw = Raw(api_url, await mint_key(roles=("admin", "client")))
    try:
        for method, path, headers, body in cases:
            raw.send(method, path, _body(body), headers)
            status, response_headers, answer = raw.response()
            assert status == 422, (path, body, status, answer)
            assert "close" not in response_headers.get("connection", ""), (path, body)
            error = answer["error"]
            message = error["message"]
            assert ("surrogate" in message or "NUL" in message) and " in " in message, message
            if path.startswith("/v1/chat/completions"):
                assert error["code"] == "InvalidText" and error["type"] == "invalid_request_error"
            else:
                assert error["type"] == "InvalidText"
            # the same connection answers the next request
            raw.send("GET", "/v1/conversations?limit=1")
            status, _, _ = raw.response()
            assert status == 200
        # and a surrogate pair (a character outside the BMP) is ordinary text
        raw.send("POST", "/v1/chat/completions", _body(chat.replace(SURROGATE, "\\ud83d\\ude00") % ""))
        status, _, answer = raw.response()
        assert status == 200, answer
    finally:
        raw.close()
    # the message that was there is unchanged
    detail = (await api.get(f"/v1/conversations/{conversation_id}")).json()
    assert [m["content"] for m in detail["messages"]][0] == "[echo] hello"


@on_sqlite
async def test_a_nul_in_the_url_is_a_422(api: httpx.AsyncClient) -> None:
    for url in ("/v1/conversations/a%00b", "/v1/conversations?cursor=%00", "/v1/assistants?state=x%00"):
        response = await api.get(url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["error"]["type"] == "InvalidText"


@on_sqlite
async def test_an_error_quotes_the_callers_input_short_and_escaped(api: httpx.AsyncClient) -> None:
    """A message that names what was asked for is cut short, and a bidi override in it comes back escaped."""
    long = (await api.get("/v1/conversations/" + "a" * 60_000)).json()["error"]["message"]
    assert len(long) <= 2_000 and long.endswith("…")
    bidi = (await api.get("/v1/conversations/x%E2%80%AEy")).json()["error"]["message"]
    assert "\u202e" not in bidi and "\\u202e" in bidi


@on_sqlite
async def test_a_body_that_is_not_json_says_why(api: httpx.AsyncClient) -> None:
    """Each way a body can fail to be JSON gets a 400 saying which, not only "an error parsing the body"."""
    headers = {"Content-Type": "application/json"}
    cases = {
        b'{"model":': "not valid JSON: Expecting value (at character 9)",
        b'{"model": "\xff\xfe"}': "the body is not UTF-8 text",
        b"[" * 100_000 + b"]" * 100_000: "the body nests too deeply to read",
        b'{"n": 1' + b"0" * 5_000 + b"}": "a number in the body has too many digits",
    }
    for body, says in cases.items():
        response = await api.post("/v1/chat/completions", content=body, headers=headers)
        assert response.status_code == 400, (body[:40], response.text)
        error = response.json()["error"]
        assert says in error["message"], (body[:40], error)
        assert error["param"] in (None, "body"), error


@on_sqlite
async def test_a_body_over_the_limit_is_refused_before_it_is_read(api_url: str, mint_key: Any) -> None:
    key = await mint_key()
    # Declared too large: answered at once, though the body never comes.
    for path, shape in (("/v1/chat/completions", "openai"), ("/v1/conversations", "lcp")):
        raw = Raw(api_url, key)
        try:
            raw.send("POST", path, b'{"model"', {"Content-Length": str(10 * 1024 * 1024)})
            started = time.monotonic()
            status, headers, answer = raw.response()
            assert status == 413 and time.monotonic() - started < 10
            assert headers.get("connection") == "close"
            if shape == "openai":
                assert answer["error"]["code"] == "BodyTooLarge" and answer["error"]["param"] is None
            else:
                assert answer["error"]["type"] == "BodyTooLarge"
            assert f"{LIMIT:,}" in answer["error"]["message"]
        finally:
            raw.close()
    # Chunked: the server stops once the limit is passed. The last chunk is never sent, so a server that
    # waited for the whole body would never answer.
    raw = Raw(api_url, key)
    try:
        headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        raw.sock.sendall(raw.head("POST", "/v1/chat/completions", headers))
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent <= LIMIT + 1024 * 1024:
                raw.sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed while we were still sending: what it should do
        status, _, answer = raw.response()
        assert status == 413, answer
        assert answer["error"]["code"] == "BodyTooLarge"
    finally:
        raw.close()


@on_sqlite
async def test_a_hundred_thousand_one_shot_messages_are_refused(api: httpx.AsyncClient) -> None:
    body = {"model": "sim-zero", "messages": [{"role": "user", "content": "x"}] * 100_000}
    response = await api.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text[:500]
    assert "messages" in response.json()["error"]["message"]
    assert len(response.content) < 10_000


@on_sqlite
async def test_200k_unknown_keys_get_a_small_answer(api: httpx.AsyncClient) -> None:
    unknown = {f"k{i}": 0 for i in range(200_000)}
    response = await api.post("/v1/conversations", json={"title": "t", **unknown})
    assert response.status_code == 422
    assert len(response.content) < 20_000, len(response.content)
    error = response.json()["error"]
    assert error["type"] == "InvalidRequest" and len(error["details"]) == 20
    assert error["more_problems"] == 200_000 - 20 and "199,980 more" in error["message"]
    # OpenAI's shape on its route: the assistant object refuses unknown keys
    response = await api.post(
        "/v1/chat/completions",
        json={"assistant": {"id": "a", **unknown}, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert len(response.content) < 20_000, len(response.content)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@on_sqlite
@pytest.mark.parametrize(
    "name", ["\x1b[31mred\x1b[0m", "evil\u202etxt.exe", "two\nlines", "bell\x07", "csi\x9b2J", "iso\u2066x"]
)
async def test_control_and_bidi_characters_in_names_and_titles_are_refused(
    admin: httpx.AsyncClient, name: str
) -> None:
    attempts = [
        ("/v1/conversations", {"title": name}),
        ("/v1/conversations", {"user": name}),
        ("/v1/admin/keys", {"name": name}),
        ("/v1/assistants", {"id": f"a{uuid.uuid4().hex[:8]}", "name": name, "model": "sim-zero"}),
    ]
    for path, body in attempts:
        response = await admin.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert "control and bidi-override characters" in response.json()["error"]["message"]


@on_sqlite
async def test_prose_keeps_lines_but_not_terminal_codes(admin: httpx.AsyncClient) -> None:
    ok = await admin.post("/v1/conversations", json={"system_prompt": "Be brief.\n\tAlways.\r\n"})
    assert ok.status_code == 201, ok.text
    for prompt in ("\x1b]0;pwned\x07", "form\x0cfeed"):
        response = await admin.post("/v1/conversations", json={"system_prompt": prompt})
        assert response.status_code == 422 and "control characters" in response.text
    response = await admin.post(
        "/v1/assistants",
        json={"id": f"a{uuid.uuid4().hex[:8]}", "name": "n", "model": "sim-zero", "instructions": "\x1b[2J"},
    )
    assert response.status_code == 422


@on_sqlite
@pytest.mark.parametrize("value", ["true", "1e30", str(10**30), "1.0", '"5"'])
async def test_numbers_are_numbers_in_range(admin: httpx.AsyncClient, value: str) -> None:
    chat = '{"model": "sim-zero", "messages": [{"role": "user", "content": "hi"}], "max_tokens": VALUE}'
    chat = chat.replace("VALUE", value)
    response = await admin.post(
        "/v1/chat/completions", content=chat, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text  # OpenAI's status for a malformed request
    assert response.json()["error"]["param"] == "max_tokens"
    for path, template in (
        ("/v1/conversations", '{"params": {"max_tokens": VALUE}}'),
        ("/v1/admin/keys", '{"name": "k", "requests_per_minute": VALUE}'),
        ("/v1/assistants", '{"id": "a1", "name": "n", "model": "sim-zero", "params": {"max_tokens": VALUE}}'),
    ):
        body = template.replace("VALUE", value)
        response = await admin.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (path, value, response.text)


@on_sqlite
async def test_one_shot_and_durable_turns_take_the_same_content(api: httpx.AsyncClient) -> None:
    too_long = "x" * 32_001
    for content, words in (("   \n\t", "whitespace only"), (too_long, "over the limit of 32,000")):
        for headers in ({}, {"X-Conversation-Id": f"c-{uuid.uuid4().hex[:8]}"}):
            body = {"model": "sim-zero", "messages": [{"role": "user", "content": content}]}
            response = await api.post("/v1/chat/completions", json=body, headers=headers)
            assert response.status_code == 422, (headers, response.text)
            error = response.json()["error"]
            assert error["code"] == "InvalidMessage" and words in error["message"]
            assert error["param"] == "messages.0.content"
    # what one-shot took before, it still takes: a long assistant reply and a tool-call round trip
    ok = await api.post(
        "/v1/chat/completions",
        json={
            "model": "sim-zero",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "y" * 40_000},
                {"role": "user", "content": "[echo] again"},
            ],
        },
    )
    assert ok.status_code == 200, ok.text


def test_the_cli_never_prints_stored_text_raw() -> None:
    hostile = "\x1b]0;owned\x07\x1b[2J[/red][link=http://evil]x[/link]\u202eexe.txt\x9b31m"
    assert plain(hostile) == (
        "\\x1b]0;owned\\x07\\x1b[2J[/red][link=http://evil]x[/link]\\u202eexe.txt\\x9b31m"
    )
    assert plain("line one\nline\ttwo", lines=True) == "line one\nline\ttwo"
    assert plain("one\nline") == "one\\x0aline"
    console = Console(record=True, force_terminal=True, width=200, color_system="truecolor")
    console.print(f"title: {shown(hostile)}")  # markup context: no MarkupError, no link, no escapes
    at = datetime(2026, 1, 1, tzinfo=UTC)
    summary = AssistantSummary(
        id="a", name=hostile, state="live", latest_version="v1", live_version=None,
        experiment=None, created_by="", created_at=at, updated_at=at,
    )  # fmt: skip
    console.print(render_list([summary]))
    output = console.export_text(styles=True, clear=False)
    for raw in ("\x1b]0;", "\x07", "\x1b[2J", "\u202e", "\x9b", "\x1b]8;"):
        assert raw not in output, repr(raw)
    assert "\\x1b]0;owned" in console.export_text()


def test_lcp_chat_shows_a_hostile_reply_and_history_as_text() -> None:
    hostile = "hi\x1b]0;owned\x07 [bold]not bold[/bold] \u202eevil\nsecond line"
    message = {"id": "m1", "role": "assistant", "content": hostile, "model": "sim\x1b[2J"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages"):
            return httpx.Response(200, json={"version": 2, "message": message, "reply": message})
        return httpx.Response(200, json={"messages": [message], "branches": [{}]})

    console = Console(record=True, force_terminal=True, width=120)
    with httpx.Client(base_url="http://lcp", transport=httpx.MockTransport(answer)) as http:
        session = ChatSession(http, console, model=None)
        session.conversation_id = "c1"
        session.send("hello")
        session.history()
    output = console.export_text(styles=True, clear=False)
    for raw in ("\x1b]0;", "\x07", "\x1b[2J", "\u202e"):
        assert raw not in output, repr(raw)
    text = console.export_text()
    assert "[bold]not bold[/bold]" in text and "\\x1b]0;owned" in text and "second line" in text


def test_lcp_chat_titles_a_conversation_with_text_the_api_accepts() -> None:
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(422, json={"error": {"type": "InvalidRequest", "message": "no"}})

    console = Console(record=True, width=120)
    with httpx.Client(base_url="http://lcp", transport=httpx.MockTransport(answer)) as http:
        ChatSession(http, console, model=None).send("pasted\tfrom a \x1b[1mterminal\x1b[0m \u202eand more")
    title = sent[0]["title"]
    assert title == "pasted from a [1mterminal [0m and more"
    ConversationCreate.model_validate({"title": title})  # the API's own rule for titles
