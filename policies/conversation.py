"""Rules for conversation messages and branches: what is accepted, and which path is active."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SENDABLE_ROLES = frozenset({"user"})
KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool"})


def message_problem(content: object, role: object, max_chars: int) -> str | None:
    """Why a message can't be accepted, as a sentence for the client; None when it is fine."""
    if role not in KNOWN_ROLES:
        return f"unknown role {role!r}: send messages with role 'user'"
    if role not in SENDABLE_ROLES:
        return f"role {role!r} cannot be sent: clients send 'user' messages, replies come from the model"
    if not isinstance(content, str) or not content.strip():
        return "message content is empty or whitespace only: send some text"
    if len(content) > max_chars:
        return (
            f"message content is {len(content)} characters, over the limit of {max_chars}: "
            "shorten it or split it into several messages"
        )
    return None


@dataclass(frozen=True)
class Node:
    """The part of a message that the branch rules need."""

    id: str
    parent_id: str | None


def path_to(leaf_id: str | None, nodes: Mapping[str, Node]) -> list[str]:
    """Message ids from the root to `leaf_id` (inclusive), following parent links."""
    path: list[str] = []
    current = leaf_id
    while current is not None and current in nodes:
        path.append(current)
        current = nodes[current].parent_id
    path.reverse()
    return path


def leaves(nodes: Iterable[Node]) -> list[str]:
    """Ids of messages nobody answers or follows: each is the tip of one branch."""
    node_list = list(nodes)
    parents = {node.parent_id for node in node_list}
    return [node.id for node in node_list if node.id not in parents]


@dataclass(frozen=True)
class Said:
    """A message as a client re-sends it: who said what."""

    role: str
    content: str


@dataclass(frozen=True)
class Recorded:
    """A message the conversation holds, for matching what a client re-sends against it."""

    id: str
    parent_id: str | None
    role: str
    content: str
    seq: int


def match_history(history: list[Said], recorded: Mapping[str, Recorded]) -> tuple[str | None, int]:
    """Find how much of a re-sent history (OpenAI-style: the whole dialogue, every turn) the
    conversation already holds: returns the recorded message where the match ends (None: nothing
    matched) and how many leading messages of `history` it covers.

    The walk follows the message tree from its roots, taking at each step the newest child that
    says the same thing, so edits and regenerations land on the branch the client means. After
    continue-as-new the oldest messages are gone from the state (their parents are unknown): then
    the history may start with messages the state no longer holds, and the walk starts at the
    offset where a remaining root matches.
    """
    children: dict[str | None, list[Recorded]] = {}
    for message in recorded.values():
        parent = message.parent_id if message.parent_id in recorded else None
        children.setdefault(parent, []).append(message)
    for siblings in children.values():
        siblings.sort(key=lambda m: m.seq, reverse=True)
    compacted = any(m.parent_id is not None and m.parent_id not in recorded for m in recorded.values())
    best: tuple[str | None, int] = (None, 0)
    for offset in range(len(history) if compacted else 1):
        at: str | None = None
        matched = offset
        for said in history[offset:]:
            step = next(
                (m for m in children.get(at, ()) if m.role == said.role and m.content == said.content), None
            )
            if step is None:
                break
            at, matched = step.id, matched + 1
        if at is not None and matched > best[1]:
            best = (at, matched)
    return best


# LibreChat asks for a conversation's title with one unstreamed message quoting the conversation
# after this line (older versions: one system message).
TITLE_REQUEST_MARKERS = ("\nConversation:\n", "||>Title:")


def is_side_request(messages: list[tuple[str, str]], stream: bool) -> bool:
    """Whether a request that names a conversation is not a turn of it: one that carries no user
    message (a title request made of a system prompt), or LibreChat's title request."""
    if not any(role == "user" for role, _ in messages):
        return True
    if stream or len(messages) != 1:
        return False
    content = messages[0][1]
    return "title" in content.lower() and any(marker in content for marker in TITLE_REQUEST_MARKERS)
