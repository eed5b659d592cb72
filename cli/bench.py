"""`lcp bench`: the benchmarks (bench/, whose dependencies are the `bench` extra: imported once a benchmark
runs)."""

import asyncio
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.runtime import console, err_console

app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@app.command("chat")
def chat(
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    turns: Annotated[int, typer.Option(help="Sequential turns (and total concurrent turns).")] = 200,
    concurrency: Annotated[int, typer.Option(help="Conversations at once.")] = 16,
    warmup: Annotated[int, typer.Option(help="Warm-up turns, not counted.")] = 32,
    turns_per_conversation: Annotated[
        int, typer.Option(help="Each client moves to a new conversation after this many turns.")
    ] = 10,
    combined: Annotated[
        bool, typer.Option("--combined", help="Run the worker inside the API process, as `lcp dev` does.")
    ] = False,
    split: Annotated[
        bool,
        typer.Option(
            "--split",
            help="Also measure `lcp dev --split`'s shape (two API processes behind HAProxy, a worker, "
            "PostgreSQL) beside the single-process one (implies --combined for the latter).",
        ),
    ] = False,
) -> None:
    """Chat-turn latency and throughput: lcp through its HTTP API vs the bare Temporal floor."""
    from bench.chat import run_bench, write_json

    console.print("lcp bench chat: starting a dev server, simulator (zero latency), worker and API…")
    result = run_bench(turns, concurrency, warmup, turns_per_conversation, combined, split)
    sides = (
        {"floor": "floor", "lcp": "lcp single", "lcp_split": "lcp split"}
        if split
        else {
            "floor": "floor",
            "lcp": "lcp",
        }
    )
    table = Table(title=f"chat turn, {result['machine']['cpus']} CPUs ({result['machine']['cpu']})")
    for column in ("", "phase", "p50 ms", "p95 ms", "p99 ms", "turns/s"):
        table.add_column(column)
    for side, label in sides.items():
        for phase, row in result[side].items():
            if "p50_ms" not in row:
                continue
            table.add_row(label, phase, *(str(row[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "turns_per_s")))
    console.print(table)
    for side, label in sides.items():
        console.print(f"{label} CPU ms per concurrent turn:", result[side]["cpu_ms_per_concurrent_turn"])
    console.print("ratios lcp/floor:", result["ratios"])
    if split:
        console.print("ratios split/single:", result["split_vs_single"])
    console.print("goals:", result["goals"])
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")


@app.command("gateway")
def gateway(
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    requests: Annotated[
        int, typer.Option(help="Sequential requests per target (each whole, and again streamed).")
    ] = 300,
    concurrency: Annotated[int, typer.Option(help="Requests in flight for the throughput figure.")] = 32,
    throughput_requests: Annotated[int, typer.Option(help="Requests per target for throughput.")] = 2000,
    warmup: Annotated[int, typer.Option(help="Warm-up requests per target, not counted.")] = 50,
    no_litellm: Annotated[bool, typer.Option("--no-litellm", help="Leave LiteLLM out.")] = False,
    litellm_python: Annotated[
        Path | None,
        typer.Option(help="Python that has litellm[proxy] (default: a virtualenv in ~/.cache/lcp)."),
    ] = None,
) -> None:
    """One-shot gateway overhead: the simulator called directly, through lcp and through LiteLLM."""
    from bench.chat import write_json
    from bench.gateway import BenchError, Plan, run_gateway_bench, tables

    plan = Plan(requests, concurrency, throughput_requests, warmup)
    try:
        result = run_gateway_bench(
            plan,
            with_litellm=not no_litellm,
            litellm_python_path=litellm_python,
            echo=lambda line: console.print(f"lcp bench gateway: {line}", highlight=False),
        )
    except BenchError as err:
        err_console.print(f"lcp bench gateway: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(*tables(result))
    for name in ("direct", "lcp", "litellm"):
        if name in result:
            console.print(f"{name}: CPU ms per request under load", result[name]["cpu_ms_per_request"])
    console.print("added latency (ms):", result["added"])
    console.print("ratios:", result["ratios"])
    console.print("goals:", result["goals"] or "(LiteLLM left out: none to check)")
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")


@app.command("fleet")
def fleet(
    trace: Annotated[Path, typer.Option(help="A trace in Mooncake's format (timestamp, lengths, hash_ids).")],
    replicas: Annotated[int, typer.Option(min=2, max=16, help="Simulated replicas in the fleet.")] = 4,
    speed: Annotated[float, typer.Option(min=0.01, max=1000, help="Replay this many times faster.")] = 1.0,
    skip: Annotated[int, typer.Option(min=0, help="Records left out at the trace's start.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Records replayed (default: the rest).")] = None,
    no_kill: Annotated[
        bool, typer.Option("--no-kill", help="No runs with a replica killed halfway.")
    ] = False,
    no_litellm: Annotated[bool, typer.Option("--no-litellm", help="Leave LiteLLM out.")] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            help="Only this strategy (lcp's: cache_aware, 'cache_aware, flow control', round_robin, "
            "least_in_flight; LiteLLM's: simple-shuffle, least-busy, latency-based-routing); repeatable.",
        ),
    ] = None,
    litellm_python: Annotated[
        Path | None,
        typer.Option(help="Python that has litellm[proxy] (default: a virtualenv in ~/.cache/lcp)."),
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="Plot TTFT over time here (PNG).")] = None,
) -> None:
    """A prefix-hash trace against one simulated fleet through lcp's picker and LiteLLM's strategies."""
    from bench.chat import write_json
    from bench.fleet import FleetPlan, plot, run_fleet_bench, table
    from bench.gateway import BenchError
    from bench.replay import TraceError

    plan = FleetPlan(
        trace, replicas, speed, skip, limit, kill=not no_kill, litellm=not no_litellm, only=tuple(only or ())
    )
    try:
        result = run_fleet_bench(
            plan,
            litellm_python_path=litellm_python,
            echo=lambda line: console.print(f"lcp bench fleet: {line}", highlight=False),
        )
    except (BenchError, TraceError, OSError) as err:
        err_console.print(f"lcp bench fleet: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(table(result))
    console.print("goals:", result["goals"] or "(none to check)")
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")
    if plot_file:
        plot(result, plot_file)
        console.print(f"plotted to {plot_file}")


@app.command("stream")
def stream(
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    turns: Annotated[int, typer.Option(help="Durable streamed turns, each in a new conversation.")] = 20,
    model: Annotated[
        str, typer.Option(help="Simulator model (with realistic token pacing).")
    ] = "sim-llama-8b",
) -> None:
    """Durable streaming: lcp's token relay against the same token batches sent as workflow signals."""
    from bench.chat import write_json
    from bench.stream import run

    console.print("lcp bench stream: starting a dev server, simulator and API (with its worker)…")
    result = asyncio.run(run(turns, model))
    console.print("relay (what lcp does):", result["relay"])
    console.print("signals (the alternative, on top of the turn):", result["signals"])
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")


@app.command("neighbours")
def neighbours(
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    burst: Annotated[int, typer.Option(help="Turns the noisy tenant keeps in flight.")] = 40,
    turns: Annotated[int, typer.Option(help="The quiet tenant's turns, alone and beside it.")] = 40,
    target_s: Annotated[
        list[float] | None,
        typer.Option(
            "--target-s", help="Admission targets to measure (repeat it; default: the setting's default)."
        ),
    ] = None,
) -> None:
    """One tenant's burst of durable turns beside another's turns, with turn admission off and on."""
    from bench.chat import write_json
    from bench.neighbours import run_bench
    from settings import TurnAdmissionSettings

    console.print("lcp bench neighbours: a dev server, simulator (zero latency), worker and API per setting…")
    result = run_bench(burst, turns, target_s or [TurnAdmissionSettings().target_s])
    table = Table(title=f"a quiet tenant beside {burst} turns in flight, {result['machine']['cpus']} CPUs")
    columns = (
        "admission",
        "quiet alone p50 ms",
        "beside p50 ms",
        "beside p95 ms",
        "burst turns/s",
        "refused",
    )
    for column in columns:
        table.add_column(column)
    for name, row in result["admission"].items():
        table.add_row(
            name,
            str(row["quiet_alone"]["p50_ms"]),
            str(row["quiet_beside_burst"]["p50_ms"]),
            str(row["quiet_beside_burst"]["p95_ms"]),
            str(row["burst_turns_per_s"]),
            str(row["burst_refused"]),
        )
    console.print(table)
    console.print("ratios to off:", result["ratios_to_off"])
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")


@app.command("canary")
def canary(
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    runs: Annotated[
        int, typer.Option(help="Simulated analyses per scenario (each judge reads each one).")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Base seed: each run's workload seed derives from it.")] = 0,
    interval_s: Annotated[
        float, typer.Option(help="Seconds between measurements (standard plan: 30).")
    ] = 30.0,
    count: Annotated[int, typer.Option(help="Measurements per metric (standard plan: 5).")] = 5,
    scenarios: Annotated[
        list[str] | None,
        typer.Option(help="Scenarios to run (repeat, or comma-separated; default: all).", show_default=False),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: one per CPU).")] = None,
) -> None:
    """Canary analysis quality, simulated: detection, false aborts and time to decision per judge."""
    from bench.canary import (
        SCENARIO_NAMES,
        SIMULATION_NOTE,
        BenchError,
        Settings,
        goal_lines,
        run_canary_bench,
        table,
    )
    from bench.chat import write_json

    chosen = tuple(n.strip() for item in scenarios or [] for n in item.split(",") if n.strip())
    settings = Settings(
        runs=runs,
        seed=seed,
        interval_s=interval_s,
        count=count,
        scenarios=chosen or SCENARIO_NAMES,
        workers=max(1, workers or os.cpu_count() or 1),
    )
    console.print(f"lcp bench canary: {SIMULATION_NOTE}", highlight=False, soft_wrap=True)
    started = time.perf_counter()
    try:
        result = run_canary_bench(
            settings,
            echo=lambda line: console.print(f"lcp bench canary: {line}", highlight=False, soft_wrap=True),
        )
    except BenchError as err:
        err_console.print(f"lcp bench canary: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(table(result))
    console.print("goals:", highlight=False)
    for line in goal_lines(result) or ["(their scenarios were not run: none to check)"]:
        console.print(f"  {line}", highlight=False)
    console.print(f"took {time.perf_counter() - started:.1f} s", highlight=False)
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")


@app.command("forecast-memory")
def forecast_memory(
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            help="The real series: a trace lab/traces.py reads (default: ServeGen m-large in "
            "../shared/data/traces).",
            show_default=False,
        ),
    ] = None,
    days: Annotated[float, typer.Option(help="History each fit learns from, in days of 60 s steps.")] = 14.0,
    cases: Annotated[
        list[str] | None,
        typer.Option(help="constant, zero, noisy, spiky, real (repeat, or comma-separated; default: all)."),
    ] = None,
) -> None:
    """Peak memory of one forecaster fit per kind of series, each in a fresh process."""
    from bench.chat import write_json
    from bench.forecast_memory import CASES, DEFAULT_TRACE, run_bench, table

    chosen = tuple(n.strip() for item in cases or [] for n in item.split(",") if n.strip())
    if unknown := [name for name in chosen if name not in CASES]:
        err_console.print(f"lcp bench forecast-memory: unknown cases {unknown}: one of {', '.join(CASES)}")
        raise typer.Exit(2)
    result = run_bench(
        chosen or CASES,
        trace or DEFAULT_TRACE,
        days,
        echo=lambda line: console.print(f"lcp bench forecast-memory: {line}", highlight=False),
    )
    console.print(table(result))
    console.print("goal (peak RSS under 1 GB on every series):", result["goal"]["peak_rss_under_1_gb"])
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")
