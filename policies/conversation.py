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
