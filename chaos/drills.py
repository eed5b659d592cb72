"""Self-chaos drills as typed data: which lcp process a drill breaks, when, how, and what it must find."""

from dataclasses import dataclass, field
from typing import Literal

from policies.errors import PermanentError

__all__ = ["DRILLS", "Check", "Drill", "DrillReport", "UnknownDrill", "exactly", "find_drill", "stored_once"]

Victim = Literal["conversation-worker", "ops-worker", "temporal", "api"]
Fault = Literal["sigkill", "restart"]


@dataclass(frozen=True)
class Drill:
    name: str
    summary: str
    victim: Victim
    fault: Fault  # sigkill: killed with no warning, then started again; restart: stopped and started
    moment: str  # when the fault lands, in words
    invariants: tuple[str, ...]  # what the drill checks afterwards


DRILLS: tuple[Drill, ...] = (
    Drill(
        name="worker-kill-mid-turn",
        summary="SIGKILL the conversation worker while a reply is being generated",
        victim="conversation-worker",
        fault="sigkill",
        moment="the inference request for a turn has reached the model",
        invariants=(
            "the waiting client gets the reply",
            "the user message is stored once",
            "the reply is stored once",
            "the conversation holds nothing else",
        ),
    ),
    Drill(
        name="temporal-restart-mid-turn",
        summary="Restart the Temporal dev server while a reply is being generated",
        victim="temporal",
        fault="restart",
        moment="the inference request for a turn has reached the model",
        invariants=(
            "a retry with the same Idempotency-Key gets the reply",
            "a second retry gets the same reply, not a new one",
            "the user message is stored once",
            "the reply is stored once",
            "the conversation holds nothing else",
        ),
    ),
    Drill(
        name="api-kill-mid-request",
        summary="SIGKILL the API while a client waits for a reply; the client retries with the same key",
        victim="api",
        fault="sigkill",
        moment="the inference request for a turn has reached the model",
        invariants=(
            "a retry with the same Idempotency-Key gets the reply",
            "a second retry gets the same reply, not a new one",
            "the user message is stored once",
            "the reply is stored once",
            "the conversation holds nothing else",
        ),
    ),
    Drill(
        name="worker-kill-mid-rollout",
        summary="SIGKILL the ops worker while a canary rollout holds at its first weight",
        victim="ops-worker",
        fault="sigkill",
        moment="the rollout has set its first canary weight and is pausing",
        invariants=(
            "the rollout finishes Succeeded",
            "each traffic weight is set once, in order",
            "the stable Deployment runs the new version",
            "the canary Deployment is gone",
        ),
    ),
)


class UnknownDrill(PermanentError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no drill named {name!r}; drills: {', '.join(d.name for d in DRILLS)}")


def find_drill(name: str) -> Drill:
    for drill in DRILLS:
        if drill.name == name:
            return drill
    raise UnknownDrill(name)


@dataclass(frozen=True)
class Check:
    invariant: str
    ok: bool
    found: str  # what the drill saw, in words


def exactly(invariant: str, found: object, expected: object) -> Check:
    """A check that `found` equals `expected`, saying both when it does not."""
    ok = found == expected
    return Check(invariant, ok, f"{found!r}" if ok else f"{found!r}, expected {expected!r}")


def stored_once(stored: list[tuple[str, str]], said: str, reply: str, total: int) -> list[Check]:
    """A conversation's stored (role, content) pairs hold the user's message and its reply once each,
    and `total` messages in all."""
    return [
        exactly("the user message is stored once", stored.count(("user", said)), 1),
        exactly("the reply is stored once", stored.count(("assistant", reply)), 1),
        exactly("the conversation holds nothing else", len(stored), total),
    ]


@dataclass
class DrillReport:
    drill: str
    started_at: str  # ISO 8601, UTC
    duration_s: float = 0.0
    timeline: list[tuple[float, str]] = field(default_factory=list)  # seconds since the start, what happened
    checks: list[Check] = field(default_factory=list)
    error: str = ""  # the drill itself could not run to the end

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, object]:
        return {
            "drill": self.drill,
            "passed": self.passed,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 2),
            "timeline": [{"at_s": round(at, 2), "event": what} for at, what in self.timeline],
            "checks": [{"invariant": c.invariant, "ok": c.ok, "found": c.found} for c in self.checks],
            "error": self.error,
        }
