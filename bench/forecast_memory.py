"""`lcp bench forecast-memory`: peak memory of one forecaster fit on 14 days of history, per kind of series.

Each case runs in a fresh Python process (this file run as a script: CASE TRACE DAYS). It builds the series,
fits the forecaster as the forecasting activity does (`settings_for` a default `ForecastInput`: 60 s steps, a
30-minute horizon, a 3-minute lead, daily and weekly seasons), forecasts once, and reports its peak resident
set (`ru_maxrss`). The parent runs each child under an address-space limit (`RLIMIT_AS`), so a case that
would take the machine down fails with a MemoryError instead.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

DAY_S = 86400.0
STEP_S = 60.0  # the scaling workflow's default step_s (ScalingInput.step_s)
DAYS = 14  # ScalingInput.lookback_s
DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared/data/traces/servegen_language/m-large"
CASES = ("constant", "zero", "noisy", "spiky", "real")
DESCRIPTIONS = {
    "constant": "1 request/s at every point (`vector(1)`)",
    "zero": "0 at every point (an idle service)",
    "noisy": "50 requests/s times lognormal noise (sigma 0.5), independent points",
    "spiky": "0 except a spike of 100 requests/s at 0.5 % of the points (ties everywhere)",
    "real": "ServeGen m-large, requests/s per minute (its 14 days)",
}
END_TS = 1_767_225_600.0  # the newest point: 2026-01-01 00:00 UTC (a fixed time: the same features each run)
LIMIT_BYTES = 8 * 2**30  # address space a child may reserve (its RSS stays well below)


def series(case: str, trace: Path, points: int) -> tuple[Any, Any]:
    """Timestamps and requests/s of one case, `points` minutes ending now."""
    import numpy as np

    rng = np.random.default_rng(0)
    timestamps = END_TS - STEP_S * np.arange(points)[::-1]
    if case == "constant":
        values = np.ones(points)
    elif case == "zero":
        values = np.zeros(points)
    elif case == "noisy":
        values = 50.0 * rng.lognormal(0.0, 0.5, points)
    elif case == "spiky":
        values = np.where(rng.random(points) < 0.005, 100.0, 0.0)
    elif case == "real":
        from lab.traces import read_trace

        per_minute = np.asarray(read_trace(trace), dtype=float)[-points:]
        values, timestamps = per_minute / 60.0, timestamps[-per_minute.size :]
    else:
        raise ValueError(f"unknown case {case!r}: one of {', '.join(CASES)}")
    return timestamps, values


def measure(case: str, trace: Path, days: float = DAYS) -> dict[str, Any]:
    """Fit and forecast once in this process; the peak RSS is this process's (run one case per process)."""
    from activities.contracts.forecasting import ForecastInput
    from activities.forecasting import Forecaster, settings_for

    points = round(days * DAY_S / STEP_S)
    timestamps, values = series(case, trace, points)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    settings = settings_for(ForecastInput(key="bench", query="bench", step_s=STEP_S, lookback_s=days * DAY_S))
    started = time.perf_counter()
    forecaster = Forecaster(settings)
    provenance = forecaster.fit(timestamps, values)
    forecast = forecaster.predict(timestamps, values)
    return {
        "case": case,
        "points": int(values.size),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_fit_bytes": baseline,
        "estimate_bytes": settings.fit_bytes(int(values.size)),  # the bound the fit is checked against
        "seconds": round(time.perf_counter() - started, 1),
        "model": provenance.model,
        "samples": provenance.samples,
        "confidence": provenance.confidence,
        "peak_rps": round(forecast.peak_rps, 4),
    }


def _limit(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return apply


def run_case(case: str, trace: Path, days: float = DAYS, limit_bytes: int = LIMIT_BYTES) -> dict[str, Any]:
    """One case in a fresh process under an address-space limit: its figures, or what went wrong."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(  # the file itself, not `-m`: the child loads no CLI, only the forecaster
        [sys.executable, __file__, case, str(trace), str(days)],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit(limit_bytes),
        cwd=root,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"case": case, "error": f"exit {done.returncode}: {tail}", "limit_bytes": limit_bytes}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_bench(
    cases: tuple[str, ...] = CASES,
    trace: Path = DEFAULT_TRACE,
    days: float = DAYS,
    limit_bytes: int = LIMIT_BYTES,
    echo: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    from activities.forecasting import FIT_MEMORY_LIMIT_BYTES, WORKER_MEMORY_CEILING_BYTES
    from bench.chat import machine

    results: list[dict[str, Any]] = []
    for case in cases:
        if case == "real" and not trace.exists():
            results.append({"case": case, "error": f"no trace at {trace} (--trace)"})
            continue
        results.append(result := run_case(case, trace, days, limit_bytes))
        shown = result.get("error") or f"peak RSS {result['peak_rss_bytes'] / 2**20:,.0f} MiB"
        echo(f"{case}: {shown}")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "machine": {**machine(), "memory_gib": round(memory / 2**30, 1)},
        "settings": {"days": days, "step_s": STEP_S, "address_space_limit_bytes": limit_bytes},
        "limits": {
            "fit_memory_limit_bytes": FIT_MEMORY_LIMIT_BYTES,
            "worker_memory_ceiling_bytes": WORKER_MEMORY_CEILING_BYTES,
        },
        "cases": results,
        "descriptions": {case: DESCRIPTIONS[case] for case in cases},
        "goal": {
            "peak_rss_under_1_gb": all(r.get("peak_rss_bytes", 2**31) < 2**30 for r in results),
        },
    }


def _mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def table(result: dict[str, Any]) -> Table:
    """One row per case: its peak RSS, what the fit added, the estimate it was checked against."""
    from rich import box
    from rich.table import Table

    machine = result["machine"]
    out = Table(
        title=f"forecaster fit, {result['settings']['days']:g} days at {STEP_S:g} s steps: peak memory",
        caption=f"{machine['cpus']} CPUs ({machine['cpu']}), {machine['memory_gib']:g} GiB of memory",
        box=box.SIMPLE_HEAD,
    )
    for column in ("series", "peak RSS", "fit added", "estimate", "model", "seconds"):
        out.add_column(column, justify="left" if column in ("series", "model") else "right")
    for row in result["cases"]:
        if "error" in row:
            out.add_row(row["case"], "–", "–", "–", row["error"], "–")
            continue
        kind = "level, no trees" if row["model"].startswith("level") else "trees"
        added = row["peak_rss_bytes"] - row["rss_before_fit_bytes"]
        sizes = (_mib(row["peak_rss_bytes"]), _mib(added), _mib(row["estimate_bytes"]))
        out.add_row(row["case"], *sizes, kind, f"{row['seconds']:g}")
    return out


if __name__ == "__main__":  # one case, in the process `run_case` starts
    here = Path(__file__).resolve().parent  # bench/ on sys.path would shadow packages
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    name, trace_path, span_days = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    sys.stdout.write(json.dumps(measure(name, trace_path, span_days)) + "\n")
