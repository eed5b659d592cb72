"""Where a per-client trace's demand steps come from: how much of each step one client makes, and how much
of it the same clients made at the same time a day and a week before (what a seasonal forecast, of the
sum or of each client, could have known).

`python -m bench.demand_steps ../shared/data/traces/servegen_language/m-mid`

A step is a window whose total rate is at least `rise` times the window before's and whose increase is at
least `min_share_of_peak` of the trace's busiest window. For each step, a client's part is its own increase
over the window before; its part "seen a day before" is what it increased over the same pair of windows one
season earlier, capped at what it increases now (an increase never seen counts 0, a bigger one counts only
up to today's)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lab.traces import SERVEGEN_WINDOW_S, servegen_windows

DAY_WINDOWS = 86400 // SERVEGEN_WINDOW_S
WEEK_WINDOWS = 7 * DAY_WINDOWS


@dataclass(frozen=True)
class StepReport:
    clients: int
    windows: int
    steps: int
    top_client_share_median: float  # of a step's increase, the biggest client's part
    seen_a_day_before_median: float  # of a step's increase, what the same clients increased a day before
    seen_a_day_before_mean: float
    seen_a_week_before_median: float | None  # None when no step has a week of history before it
    steps_with_a_week_before: int
    hours_of_day: tuple[int, ...]  # the hours of the day steps begin in


def client_rates(directory: Path) -> np.ndarray:
    """Requests/s per client (rows, sorted by file name) and window (columns) from ServeGen rate files."""
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise ValueError(f"{directory}: no ServeGen *.csv files in this directory")
    per_client = [_read_client(file) for file in files]
    windows = 1 + max((max(r) for r in per_client if r), default=-1)
    out = np.zeros((len(files), windows))
    for i, rates in enumerate(per_client):
        for window, rate in rates.items():
            out[i, window] = rate
    return out


def _read_client(file: Path) -> dict[int, float]:
    return {start_s // SERVEGEN_WINDOW_S: rate for _, start_s, rate in servegen_windows(file)}


def _seen(increase: np.ndarray, before: np.ndarray) -> float:
    rising = increase > 0
    return float(np.minimum(increase[rising], np.maximum(before[rising], 0)).sum() / increase[rising].sum())


def analyse(rates: np.ndarray, rise: float = 1.3, min_share_of_peak: float = 0.05) -> StepReport:
    total = rates.sum(axis=0)
    floor = min_share_of_peak * float(total.max(initial=0.0))
    steps = [
        t
        for t in range(DAY_WINDOWS + 1, total.size)
        if total[t] >= rise * total[t - 1] and total[t] - total[t - 1] > floor
    ]
    top, day, week = [], [], []
    for t in steps:
        increase = rates[:, t] - rates[:, t - 1]
        rising = np.maximum(increase, 0)
        top.append(float(rising.max() / rising.sum()))
        day.append(_seen(increase, rates[:, t - DAY_WINDOWS] - rates[:, t - DAY_WINDOWS - 1]))
        if t > WEEK_WINDOWS:
            week.append(_seen(increase, rates[:, t - WEEK_WINDOWS] - rates[:, t - WEEK_WINDOWS - 1]))

    def median(values: list[float]) -> float:
        return round(float(np.median(values)), 3) if values else 0.0

    return StepReport(
        clients=rates.shape[0],
        windows=total.size,
        steps=len(steps),
        top_client_share_median=median(top),
        seen_a_day_before_median=median(day),
        seen_a_day_before_mean=round(float(np.mean(day)), 3) if day else 0.0,
        seen_a_week_before_median=median(week) if week else None,
        steps_with_a_week_before=len(week),
        hours_of_day=tuple(sorted({(t % DAY_WINDOWS) * SERVEGEN_WINDOW_S // 3600 for t in steps})),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+", type=Path, help="ServeGen directories of per-client rate files")
    args = parser.parse_args()
    for directory in args.traces:
        try:
            report = analyse(client_rates(directory))
        except (OSError, ValueError) as err:
            parser.exit(2, f"error: {err}\n")
        print(json.dumps({"trace": directory.name, **asdict(report)}))


if __name__ == "__main__":
    main()
