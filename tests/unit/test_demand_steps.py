"""The demand-step analysis on hand-made client files: a step made by one client that started at the same
time the day before is seen; one made by a client never seen before is not."""

from pathlib import Path

import pytest

from bench.demand_steps import DAY_WINDOWS, analyse, client_rates

DAYS = 3


def _write(directory: Path, name: str, rates: dict[int, float]) -> None:
    windows = DAYS * DAY_WINDOWS
    rows = [f"{w * 600},{rates.get(w, 0.0)},1.0,Gamma,1.0,1.0" for w in range(windows)]
    (directory / f"chunk-{name}-trace.csv").write_text("\n".join(rows) + "\n")


def test_a_daily_client_is_seen_a_day_before_and_a_new_one_is_not(tmp_path: Path) -> None:
    _write(tmp_path, "0", {w: 10.0 for w in range(DAYS * DAY_WINDOWS)})  # a steady base
    daily = {d * DAY_WINDOWS + h: 20.0 for d in range(DAYS) for h in range(54, 60)}  # 09:00-10:00 every day
    _write(tmp_path, "1", daily)
    _write(tmp_path, "2", {2 * DAY_WINDOWS + 90 + k: 30.0 for k in range(3)})  # once, on day 3 at 15:00

    rates = client_rates(tmp_path)
    assert rates.shape == (3, DAYS * DAY_WINDOWS)
    report = analyse(rates)
    # days 2 and 3 at 09:00 (day 1's has no day before it), day 3 at 15:00
    assert report.steps == 3 and report.hours_of_day == (9, 15)
    assert report.top_client_share_median == 1.0
    assert report.seen_a_day_before_median == 1.0 and report.seen_a_day_before_mean == pytest.approx(
        2 / 3, abs=1e-3
    )
    assert report.seen_a_week_before_median is None and report.steps_with_a_week_before == 0


def test_a_directory_without_rate_files_or_with_bad_rows_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no ServeGen"):
        client_rates(tmp_path)
    for bad in ("0,fast", "600", "1e15,1.0", "600,-1", "600,nan"):
        (tmp_path / "chunk-0-trace.csv").write_text(f"0,1.0\n{bad}\n")
        with pytest.raises(ValueError, match="chunk-0-trace.csv:2: "):
            client_rates(tmp_path)
