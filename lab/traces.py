"""Traffic sources for the lab workload: constant rates and replays of real request traces."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

# ServeGen rate files have one row per 10-minute window (see shared/data/traces/servegen_language/README.md).
SERVEGEN_WINDOW_S = 600
# The longest trace a reader builds, in minutes: a year. Minute indexes come from the file, and every
# minute up to the last is a list element, so one far-off row must not decide how much memory that takes.
MAX_TRACE_MINUTES = 366 * 24 * 60

AtEnd = Literal["loop", "hold"]


class TrafficSource(Protocol):
    """Requests per second offered to a service, `t` seconds (wall clock) after it started."""

    def rate_at(self, t: float) -> float: ...

    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Constant:
    """The same rate at all times."""

    rps: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rps) and self.rps >= 0):
            raise ValueError(f"rps must be a finite number >= 0, got {self.rps}")

    def rate_at(self, t: float) -> float:
        return self.rps

    def describe(self) -> dict[str, object]:
        return {"kind": "constant", "rps": self.rps}


@dataclass(frozen=True)
class Replay:
    """A per-minute request series played back faster than real time.

    `speedup` is trace seconds per wall-clock second: at 6, one trace minute lasts 10 s. Speed-up
    compresses time only: during trace minute m the rate is per_minute[m] / 60 * scale requests per
    second, the trace's own rate, so a faster replay shows the same load levels sooner (it does not
    squeeze a minute's requests into fewer seconds). After the last minute the replay loops, or holds
    the last minute's rate.
    """

    per_minute: tuple[float, ...]
    speedup: float = 1.0
    at_end: AtEnd = "loop"
    scale: float = 1.0
    name: str = ""  # where the series came from, for status pages

    def __post_init__(self) -> None:
        if not self.per_minute:
            raise ValueError("a replay needs at least one minute of trace")
        if not all(math.isfinite(v) and v >= 0 for v in self.per_minute):
            raise ValueError("trace minutes must be finite numbers >= 0")
        if not (math.isfinite(self.speedup) and self.speedup > 0):
            raise ValueError(f"speedup must be > 0, got {self.speedup}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"scale must be >= 0, got {self.scale}")
        if self.at_end not in ("loop", "hold"):
            raise ValueError(f"at_end must be 'loop' or 'hold', got {self.at_end!r}")

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        speedup: float = 1.0,
        at_end: AtEnd = "loop",
        scale: float | None = None,
        peak_rps: float | None = None,
    ) -> Replay:
        """A replay of the trace at `path` (see read_trace), scaled by `scale` or so that its busiest
        minute plays at `peak_rps` (give one of them at most)."""
        per_minute = read_trace(path)
        return cls(
            tuple(per_minute),
            speedup=speedup,
            at_end=at_end,
            scale=scale_for(per_minute, scale=scale, peak_rps=peak_rps),
            name=str(path),
        )

    @property
    def minute_s(self) -> float:
        """Wall-clock seconds one trace minute lasts."""
        return 60 / self.speedup

    def minute_at(self, t: float) -> int:
        """The trace minute playing `t` wall-clock seconds after the start."""
        minute = int(max(t, 0.0) * self.speedup // 60)
        if minute < len(self.per_minute):
            return minute
        return minute % len(self.per_minute) if self.at_end == "loop" else len(self.per_minute) - 1

    def rate_at(self, t: float) -> float:
        return self.per_minute[self.minute_at(t)] / 60 * self.scale

    def describe(self) -> dict[str, object]:
        return {
            "kind": "trace",
            "path": self.name,
            "minutes": len(self.per_minute),
            "speedup": self.speedup,
            "minute_s": self.minute_s,
            "at_end": self.at_end,
            "scale": self.scale,
            "peak_rps": max(self.per_minute) / 60 * self.scale,
        }


def scale_for(per_minute: Sequence[float], *, scale: float | None, peak_rps: float | None) -> float:
    """The rate multiplier: `scale`, or the one that plays the busiest minute at `peak_rps`, or 1."""
    if scale is not None and peak_rps is not None:
        raise ValueError("give scale or peak_rps, not both")
    if peak_rps is None:
        return 1.0 if scale is None else scale
    peak = max(per_minute, default=0.0) / 60
    if peak <= 0:
        raise ValueError("the trace has no requests, so it cannot be scaled to a peak rate")
    return peak_rps / peak


# ---- reading traces: each reader returns requests per minute, minute 0 first, empty minutes as 0 -----------


def read_trace(path: str | Path) -> list[float]:
    """Requests per minute from any supported trace, told apart by its shape: a directory of ServeGen
    client files, an Azure LLM CSV (header TIMESTAMP,...), a `minute,requests` CSV, or one ServeGen file."""
    path = Path(path)
    if path.is_dir():
        return read_servegen(path)
    with path.open(newline="") as f:
        first = next(csv.reader(f), [])
    if first[:1] == ["TIMESTAMP"]:
        return read_azure_llm(path)
    if "minute" in first and "requests" in first:
        return read_minute_csv(path)
    if len(first) == 6:
        return read_servegen(path)
    raise ValueError(
        f"{path}: not a known trace format (expected an Azure LLM CSV, a minute,requests CSV "
        "or ServeGen rate files)"
    )


def per_minute(minutes: Iterable[int]) -> list[float]:
    """Counts of events by minute index, from the earliest minute to the latest, gaps filled with 0."""
    counts: dict[int, int] = {}
    for minute in minutes:
        counts[minute] = counts.get(minute, 0) + 1
    if not counts:
        return []
    first, last = min(counts), max(counts)
    _check_span(last - first + 1, "the first and last request")
    return [float(counts.get(m, 0)) for m in range(first, last + 1)]


def read_azure_llm(path: str | Path) -> list[float]:
    """Requests per minute of an Azure LLM inference trace (one row per request: TIMESTAMP,ContextTokens,
    GeneratedTokens). Timestamps are floored to the clock minute; minute 0 is the first request's minute,
    so the first and last minutes are usually partial."""
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        if next(reader, [])[:1] != ["TIMESTAMP"]:
            raise ValueError(f"{path}: expected the header TIMESTAMP,ContextTokens,GeneratedTokens")
        return per_minute(_epoch_minute(row[0], path, n) for n, row in enumerate(reader, start=2) if row)


def _epoch_minute(timestamp: str, path: Path, line: int) -> int:
    try:
        # "2023-11-16 18:15:46.6805900": only the minute matters, and the trace gives no zone.
        at = datetime.fromisoformat(timestamp[:16]).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{path}:{line}: bad TIMESTAMP {timestamp[:40]!r}") from None
    return int(at.timestamp()) // 60


def read_servegen(path: str | Path) -> list[float]:
    """Expected requests per minute from ServeGen per-client rate files (no header; one row per window:
    window_start_s,rate_rps,cv,pattern,shape,scale). `path` is one client file or a directory of them,
    summed. Each window adds rate_rps * 60 to each of its minutes, so values may be fractional."""
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no ServeGen *.csv files in this directory")
    totals: dict[int, float] = {}
    for file in files:
        for _, start_s, rate in servegen_windows(file):
            first = start_s // 60
            for minute in range(first, first + SERVEGEN_WINDOW_S // 60):
                totals[minute] = totals.get(minute, 0.0) + rate * 60
    if not totals:
        return []
    return [totals.get(m, 0.0) for m in range(max(totals) + 1)]


def servegen_windows(file: Path) -> Iterator[tuple[int, int, float]]:
    """(line, window_start_s, rate_rps) of each row of one ServeGen client file, checked: the start in
    whole minutes ≥ 0, the rate ≥ 0."""
    with file.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            try:
                start_s, rate = float(row[0]), float(row[1])
            except (IndexError, ValueError):
                raise ValueError(f"{file}:{line}: expected window_start_s,rate_rps,...") from None
            if start_s < 0 or start_s % 60 or not (math.isfinite(rate) and rate >= 0):
                raise ValueError(f"{file}:{line}: window_start_s must be whole minutes, rate_rps >= 0")
            if start_s + SERVEGEN_WINDOW_S > MAX_TRACE_MINUTES * 60:
                raise ValueError(f"{file}:{line}: window_start_s must be within a year of the trace's start")
            yield line, int(start_s), rate


def read_minute_csv(path: str | Path) -> list[float]:
    """Requests per minute from a CSV with header columns `minute` and `requests` (others are ignored,
    rows may come in any order, missing minutes count 0)."""
    path = Path(path)
    values: dict[int, float] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"minute", "requests"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a header with the columns minute,requests")
        for line, row in enumerate(reader, start=2):
            try:
                minute, requests = int(row["minute"]), float(row["requests"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: minute must be an integer, requests a number") from None
            if minute < 0 or not (math.isfinite(requests) and requests >= 0):
                raise ValueError(f"{path}:{line}: minute and requests must be >= 0")
            values[minute] = values.get(minute, 0.0) + requests
    if not values:
        return []
    minutes = max(values) + 1
    _check_span(minutes, f"{path}: minute 0 and the last minute")
    return [values.get(m, 0.0) for m in range(minutes)]


def _check_span(minutes: int, between: str) -> None:
    if minutes > MAX_TRACE_MINUTES:
        raise ValueError(
            f"{between} are {minutes:,} minutes apart; a trace may span at most a year "
            f"({MAX_TRACE_MINUTES:,} minutes)"
        )
