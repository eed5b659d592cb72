"""History for a fresh lab Prometheus: the demo service's request counter over the hours before the lab
started, computed from the same traffic source the workload plays (a replay loops back into its past),
written as OpenMetrics and turned into TSDB blocks by `promtool tsdb create-blocks-from openmetrics`, so
that predictive scaling forecasts in its first minute instead of after hours of scraping."""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from lab.traces import Replay, TrafficSource
from policies.errors import LcpError

HISTORY_S = 26 * 3600.0  # a day and a bit: more than the forecaster needs before its first fit
STEP_S = 15.0  # rate()'s 1-minute windows hold four points
PROMTOOL = "promtool"


class HistoryError(LcpError, RuntimeError):
    """promtool is missing or refused the history."""


def past_rate(source: TrafficSource, seconds_before_start: float) -> float:
    """The source's rate that long before it started: a looping replay's earlier laps, else its rate at 0."""
    if isinstance(source, Replay) and source.at_end == "loop":
        period = len(source.per_minute) * source.minute_s
        return source.rate_at((-seconds_before_start) % period)
    return source.rate_at(0.0)


def openmetrics(
    source: TrafficSource,
    labels: Mapping[str, str],
    end: float,
    history_s: float = HISTORY_S,
    step_s: float = STEP_S,
) -> Iterator[str]:
    """`http_requests_total` (code 200) with `labels` from `end - history_s` to `end` (Unix seconds, the
    moment the source starts), one point every `step_s`: a counter growing by the source's past rate."""
    rendered = ",".join(f'{key}="{value}"' for key, value in sorted({**labels, "code": "200"}.items()))
    yield "# TYPE http_requests counter\n"
    steps = math.floor(history_s / step_s)
    total = 0.0
    for index in range(steps + 1):
        before = (steps - index) * step_s
        if index:
            total += past_rate(source, before + step_s / 2) * step_s
        yield f"http_requests_total{{{rendered}}} {total:.3f} {end - before:.3f}\n"
    yield "# EOF\n"


def backfill(tsdb: Path, lines: Iterator[str], promtool: str = PROMTOOL) -> None:
    """Write `lines` (OpenMetrics) as blocks into the TSDB directory `tsdb`, before Prometheus opens it."""
    binary = shutil.which(promtool)
    if binary is None:
        raise HistoryError(f"{promtool} is not installed (Debian's prometheus package has it)")
    tsdb.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", dir=tsdb.parent) as series:
        series.writelines(lines)
        series.flush()
        done = subprocess.run(
            [binary, "tsdb", "create-blocks-from", "openmetrics", series.name, str(tsdb)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    if done.returncode != 0:
        raise HistoryError(f"promtool refused the history: {(done.stderr or done.stdout).strip()[-500:]}")


def is_fresh(tsdb: Path) -> bool:
    """Whether Prometheus has never written to `tsdb` (a later start keeps what it scraped instead)."""
    return not tsdb.exists() or not any(tsdb.iterdir())
