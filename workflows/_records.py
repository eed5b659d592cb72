"""What workflows keep of the people who steer them: who asked for a change and why, and the history."""

from dataclasses import dataclass
from datetime import datetime


@dataclass
class Actor:
    """Who asks for a change, and why (kept in the history)."""

    by: str = ""
    reason: str = ""


@dataclass
class HistoryEvent:
    at: datetime
    kind: str
    message: str
    by: str = ""
