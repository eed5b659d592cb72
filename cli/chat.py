"""`lcp chat`: a terminal chat against the lcp API, for a first look."""

import re
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.panel import Panel

from cli.connection import HOME, Home, api_address
from cli.show import shown

_NOT_IN_TITLES = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
COMMANDS = {
    "/new": "a new conversation",
    "/regen": "a new reply to your last message",
    "/history": "the conversation so far",
    "/id": "the conversation's id",
    "/help": "these commands",
    "/quit": "leave (Ctrl-D too)",
}
HELP = "commands: " + "  ".join(COMMANDS) + "  (//text sends /text)"


app = typer.Typer()  # its command is the top-level `lcp chat`


@app.command()
def chat(
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL (default: dev.json).")] = None,
    model: Annotated[str | None, typer.Option(help="Model for a new conversation.")] = None,
    assistant: Annotated[
        str | None, typer.Option(help="Assistant for a new conversation (instead of a model).")
    ] = None,
    conversation: Annotated[str | None, typer.Option(help="Continue this conversation id.")] = None,
    home: Home = HOME,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="LCP_API_KEY", help="API key (default: dev.json's).", show_default=False),
    ] = None,
) -> None:
    """Chat with a model through the lcp API, in the terminal."""
    run_chat(*api_address(api_url, home, api_key), model, conversation, assistant)


def _title(text: str) -> str:
    """The first words of the first message, as a title the API accepts (no control or bidi characters)."""
    return " ".join(_NOT_IN_TITLES.sub(" ", text).split())[:60]


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


class ChatSession:
    def __init__(
        self, http: httpx.Client, console: Console, model: str | None, assistant: str | None = None
    ) -> None:
        self.http, self.console, self.model, self.assistant = http, console, model, assistant
        self.conversation_id: str | None = None
        self.last_reply_id: str | None = None

    def handle(self, text: str) -> bool:
        """One line typed at the prompt: a command run here or a message sent; False to leave. A word
        starting with / that is no command is refused here, never sent to the model."""
        command = text.strip()
        if command in ("/quit", "/exit"):
            return False
        if command.startswith("//"):
            self.send(text.lstrip()[1:])
        elif command == "/new":
            self.conversation_id = self.last_reply_id = None
            self.console.print("new conversation: it starts with your next message")
        elif command == "/regen":
            self.regenerate()
        elif command == "/history":
            self.history()
        elif command == "/id":
            self.show_id()
        elif command == "/help":
            for name, what in COMMANDS.items():
                self.console.print(f"  {name:<9} {what}", highlight=False)
            self.console.print("  //text    sends /text as a message", highlight=False)
        elif command.startswith("/"):
            self.console.print(
                f"[yellow]unknown command {shown(command.split()[0])}[/yellow] (not sent): {HELP}",
                highlight=False,
            )
        elif command:
            self.send(text)
        return True

    def send(self, text: str) -> None:
        if self.conversation_id is None:
            body: dict[str, object] = {"message": {"content": text}, "title": _title(text)}
            if self.assistant:
                body["assistant"] = {"id": self.assistant}
            elif self.model:
                body["model"] = self.model
            response = self.http.post("/v1/conversations", json=body)
            if response.status_code == 201:
                created = response.json()["conversation"]
                self.conversation_id, self.assistant = created["id"], created.get("assistant_id")
                self._show_turn(response.json()["turn"])
                self.show_id()
                return
        else:
            response = self.http.post(
                f"/v1/conversations/{self.conversation_id}/messages", json={"content": text}
            )
            if response.status_code == 200:
                self._show_turn(response.json())
                return
        self.console.print(f"[red]error:[/red] {shown(_error(response))}", highlight=False)

    def regenerate(self) -> None:
        if not (self.conversation_id and self.last_reply_id):
            self.console.print("nothing to regenerate yet")
            return
        response = self.http.post(
            f"/v1/conversations/{self.conversation_id}/messages/{self.last_reply_id}/regenerate"
        )
        if response.status_code == 200:
            self._show_turn(response.json())
        else:
            self.console.print(f"[red]error:[/red] {shown(_error(response))}", highlight=False)

    def history(self) -> None:
        if not self.conversation_id:
            self.console.print("no conversation yet")
            return
        detail = self.http.get(f"/v1/conversations/{self.conversation_id}").json()
        for message in detail["messages"]:
            style = "cyan" if message["role"] == "user" else "green"
            text = shown(message["content"], lines=True)
            self.console.print(f"[{style}]{shown(message['role'])}[/{style}]: {text}", highlight=False)
        self.console.print(f"[dim]{len(detail['branches'])} branch(es)[/dim]")

    def show_id(self) -> None:
        if not self.conversation_id:
            self.console.print("no conversation yet: it starts with your next message")
            return
        self.console.print(
            f"[dim]conversation[/dim] {shown(self.conversation_id)}  "
            f"[dim](continue it later: lcp chat --conversation {shown(self.conversation_id)})[/dim]",
            highlight=False,
            soft_wrap=True,
        )

    def _show_turn(self, turn: dict[str, object]) -> None:
        reply = turn["reply"]
        assert isinstance(reply, dict)
        self.last_reply_id = reply["id"]
        # who wrote it: an assistant's version (and experiment arm) when one serves the conversation
        author = f"{reply.get('model')}"
        if version := reply.get("assistant_version"):
            arm = f", arm {reply['arm']}" if reply.get("arm") else ""
            author = f"{self.assistant or 'assistant'} {version}{arm} · {author}"
        footer = f"{author} · {reply.get('completion_tokens')} tokens · {reply.get('latency_ms') or 0:.0f} ms"
        self.console.print(
            Panel(shown(reply["content"], lines=True), title="assistant", subtitle=shown(footer))
        )


def run_chat(
    api_url: str, api_key: str, model: str | None, conversation_id: str | None, assistant: str | None = None
) -> None:
    console = Console()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=api_url, timeout=300, headers=headers) as http:
        session = ChatSession(http, console, model, assistant)
        session.conversation_id = conversation_id
        console.print(f"lcp chat → {shown(api_url)}   {HELP}", highlight=False)
        if conversation_id:
            session.show_id()
        while True:
            try:
                text = console.input("[bold cyan]you>[/bold cyan] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not session.handle(text):
                return
