"""The `lcp` command line (Typer + rich): dev stack, API, workers, simulator, chat, benchmarks.

A new command goes in the sub-app of its resource (cli/rollout.py, cli/scaling.py, ...), declared
here; it talks to the API over HTTP (cli/rest.py) and imports heavy modules (the lab, bench/,
activities/) only inside the command, so `lcp --help` stays fast. The benchmarks themselves live in
bench/."""

import asyncio
import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from settings import Settings

app = typer.Typer(
    help="lcp: the control plane behind an AI chat platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The read-model database.", no_args_is_help=True)
lab_app = typer.Typer(
    help="The lab: a simulated cluster (Kubernetes API, workload, Prometheus).", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys (written straight to the read-model database).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
temporal_app = typer.Typer(help="The Temporal cluster lcp runs on.", no_args_is_help=True)
rollout_app = typer.Typer(
    help="Canary rollouts through the lcp API (a key with the sre role).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(lab_app, name="lab")
app.add_typer(temporal_app, name="temporal")
app.add_typer(bench_app, name="bench")
scaling_app = typer.Typer(
    help="Predictive scaling through the lcp API (a key with the sre role), and its backtest.",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")
app.add_typer(scaling_app, name="scaling")
chaos_app = typer.Typer(
    help="Chaos experiments (LitmusChaos) through the lcp API (a key with the sre role).",
    no_args_is_help=True,
)
app.add_typer(chaos_app, name="chaos")
assistants_app = typer.Typer(
    help="Assistants through the lcp API: versions, publish, rollback, A/B experiments, stats "
    "(changes need a key with the admin role).",
    no_args_is_help=True,
)
experiment_app = typer.Typer(help="A/B experiments between an assistant's versions.", no_args_is_help=True)
assistants_app.add_typer(experiment_app, name="experiment")
app.add_typer(assistants_app, name="assistants")
models_app = typer.Typer(
    help="The models' deployments through the lcp API (a key with the sre role).", no_args_is_help=True
)
app.add_typer(models_app, name="models")
console = Console()
err_console = Console(stderr=True)


def _settings(command: str) -> Settings:
    """Settings from the environment and .env, or one clear line and exit 1 when one is wrong."""
    try:
        return Settings()
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in err.errors()
        )
        err_console.print(f"lcp {command}: invalid settings: {problems}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def dev(
    home: Annotated[Path, typer.Option(help="State directory (databases, logs, dev.json).")] = Path(".lcp"),
    host: Annotated[str, typer.Option(help="Address every service binds to.")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="lcp API port.")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal frontend (gRPC) port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port.")] = 8233,
    llm_port: Annotated[int, typer.Option(help="LLM simulator port.")] = 8400,
    kube_port: Annotated[int, typer.Option(help="The lab's simulated Kubernetes API port.")] = 8600,
    workload_port: Annotated[int, typer.Option(help="The lab's workload simulator port.")] = 8601,
    prometheus_port: Annotated[int, typer.Option(help="Prometheus port.")] = 9090,
    ops_metrics_port: Annotated[int, typer.Option(help="The ops worker's /metrics port.")] = 8602,
) -> None:
    """Run the whole embedded stack in the foreground: Temporal, API with its worker, LLM simulator,
    the lab (a simulated cluster) and Prometheus."""
    from cli.dev import Ports, StackError, run_dev

    _settings("dev")  # a wrong setting is one clear line before anything starts
    try:
        code = run_dev(
            home,
            Ports(
                host,
                api_port,
                temporal_port,
                ui_port,
                llm_port,
                kube_port,
                workload_port,
                prometheus_port,
                ops_metrics_port,
            ),
            lambda line: console.print(line, soft_wrap=True, highlight=False),
        )
    except StackError as err:
        err_console.print(f"lcp dev: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings).")] = None,
    with_worker: Annotated[
        bool, typer.Option("--worker", help="Also run the conversation worker in this process.")
    ] = False,
) -> None:
    """Serve the lcp API (FastAPI under uvicorn)."""
    import uvicorn

    from api.app import create_app
    from temporal.client import TemporalUnreachable, connect

    settings = _settings("api")
    settings.api.with_worker = settings.api.with_worker or with_worker
    _logging("WARNING")
    try:  # say so in one line when Temporal is not there, rather than in a startup traceback
        asyncio.run(connect(settings.temporal))
    except TemporalUnreachable as err:
        err_console.print(f"lcp api: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(
    queue: Annotated[
        str, typer.Option(help="Task queue to serve: conversations, ops or forecasting.")
    ] = "conversations",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus /metrics on this port.")
    ] = None,
) -> None:
    """Run a Temporal worker for one task queue until SIGINT/SIGTERM."""
    import uvloop

    from temporal.client import TemporalUnreachable
    from workers.main import run_worker

    _logging()
    try:
        uvloop.run(run_worker(_settings("worker"), queue, metrics_port))
    except (ValueError, TemporalUnreachable) as err:
        err_console.print(f"lcp worker: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(err, ValueError) else 1) from None


@app.command()
def sim(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8400,
) -> None:
    """Serve the OpenAI-compatible LLM simulator (a simulation, not a real model)."""
    from lab.llm_simulator import run

    _logging("WARNING")
    run(host, port, log_level="warning")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the read-model database to the newest schema."""
    from store.migrate import upgrade_database

    settings = _settings("db upgrade")
    asyncio.run(upgrade_database(settings.resolved_database_url()))
    console.print(f"database at newest schema: {settings.resolved_database_url()}")


@lab_app.command("serve")
def lab_serve(
    home: Annotated[Path, typer.Option(help="Where the kubeconfig is written.")] = Path(".lcp"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    kube_port: Annotated[int, typer.Option(help="Simulated Kubernetes API port.")] = 8600,
    workload_port: Annotated[int, typer.Option(help="Workload simulator (metrics, faults) port.")] = 8601,
    pod_startup_s: Annotated[float, typer.Option(help="How long a simulated pod takes to be ready.")] = 3.0,
    trace: Annotated[Path | None, typer.Option(help="Traffic trace for the demo service.")] = None,
    llm_replica_port: Annotated[
        list[int],
        typer.Option(
            help="A port of an LLM simulator replica on --host: it gets a pod behind inference/sim-llama-8b."
        ),
    ] = [],  # noqa: B006
) -> None:
    """Serve the simulated cluster: Kubernetes API, controllers and workload (a simulation)."""
    import uvloop

    from lab.server import LabOptions, serve

    _logging("WARNING")
    options = LabOptions(
        home.resolve(),
        host,
        kube_port,
        workload_port,
        pod_startup_s,
        trace,
        llm_replica_ports=tuple(llm_replica_port),
    )
    try:
        uvloop.run(serve(options))
    except OSError as err:
        err_console.print(f"lcp lab serve: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@lab_app.command("status")
def lab_status(
    home: Annotated[Path, typer.Option(help="State directory holding dev.json.")] = Path(".lcp"),
) -> None:
    """What the lab runs: Deployments and their readiness, simulated traffic, Prometheus targets."""
    from cli.lab import show_status

    code = show_status(home, console)
    raise typer.Exit(code)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key acts in.")],
    name: Annotated[str, typer.Option(help="What the key is for, e.g. librechat.")],
    role: Annotated[list[str], typer.Option(help="client, admin, sre, platform; repeatable.")] = ["client"],  # noqa: B006
    rpm: Annotated[int | None, typer.Option(help="Requests/minute for this key (default: settings).")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens/minute for this key (default: settings).")] = None,
) -> None:
    """Mint an API key. It is printed once; only its hash is stored."""
    from api.keys import InvalidKeySpec
    from cli.keys import mint

    settings = _settings("keys create")
    try:
        row, key = asyncio.run(
            mint(
                settings.resolved_database_url(),
                tenant=tenant,
                name=name,
                roles=role,
                requests_per_minute=rpm,
                tokens_per_minute=tpm,
            )
        )
    except InvalidKeySpec as err:
        from cli.show import shown

        err_console.print(f"lcp keys create: {shown(err)}", highlight=False)
        raise typer.Exit(2) from None
    from cli.show import shown

    err_console.print(
        f"key {shown(row.id)} for tenant {shown(row.tenant)} ({shown(', '.join(row.roles))}); shown once, "
        "store it now:",
        highlight=False,
    )
    print(key)  # alone on stdout, so `KEY=$(lcp keys create ...)` works


@keys_app.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None) -> None:
    """List keys (never the keys themselves)."""
    from rich.table import Table

    from cli.keys import list_keys
    from cli.show import shown

    rows = asyncio.run(list_keys(_settings("keys list").resolved_database_url(), tenant))
    table = Table()
    for column in ("id", "tenant", "name", "roles", "rpm", "tpm", "created", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            shown(row.id),
            shown(row.tenant),
            shown(row.name),
            shown(",".join(row.roles)),
            str(row.requests_per_minute or "default"),
            str(row.tokens_per_minute or "default"),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (from `lcp keys list`).")]) -> None:
    """Revoke a key: refused at once by new API processes, within 10 s by running ones."""
    from cli.keys import revoke
    from cli.show import shown

    row = asyncio.run(revoke(_settings("keys revoke").resolved_database_url(), key_id))
    if row is None:
        err_console.print(f"lcp keys revoke: no key {key_id}: see `lcp keys list`", highlight=False)
        raise typer.Exit(1)
    who = shown(f"{row.id} ({row.tenant}/{row.name})")
    console.print(f"key {who} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S}")


@temporal_app.command("setup")
def temporal_setup() -> None:
    """Register lcp's search attributes on the configured cluster (once per namespace)."""
    from temporal.client import connect
    from temporal.setup import ensure_search_attributes

    settings = _settings("temporal setup")

    async def _run() -> list[str]:
        return await ensure_search_attributes(await connect(settings.temporal))

    added = asyncio.run(_run())
    where = f"{settings.temporal.address}/{settings.temporal.namespace}"
    console.print(f"search attributes added on {where}: {', '.join(added)}" if added else f"{where}: ready")


@app.command()
def chat(
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL (default: dev.json).")] = None,
    model: Annotated[str | None, typer.Option(help="Model for a new conversation.")] = None,
    conversation: Annotated[str | None, typer.Option(help="Continue this conversation id.")] = None,
    home: Annotated[Path, typer.Option(help="State directory holding dev.json.")] = Path(".lcp"),
    api_key: Annotated[
        str | None,
        typer.Option(envvar="LCP_API_KEY", help="API key (default: dev.json's).", show_default=False),
    ] = None,
) -> None:
    """Chat with a model through the lcp API, in the terminal."""
    from cli.chat import dev_info, run_chat

    dev = dev_info(home)
    run_chat(
        api_url or dev.get("api", "http://127.0.0.1:8000"),
        api_key or dev.get("api_key", ""),
        model,
        conversation,
    )


@bench_app.command("chat")
def bench_chat(
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
) -> None:
    """Chat-turn latency and throughput: lcp through its HTTP API vs the bare Temporal floor."""
    from rich.table import Table

    from bench.chat import run_bench, write_json

    console.print("lcp bench chat: starting a dev server, simulator (zero latency), worker and API…")
    result = run_bench(turns, concurrency, warmup, turns_per_conversation, combined)
    table = Table(title=f"chat turn, {result['machine']['cpus']} CPUs ({result['machine']['cpu']})")
    for column in ("", "phase", "p50 ms", "p95 ms", "p99 ms", "turns/s"):
        table.add_column(column)
    for name in ("floor", "lcp"):
        for phase, row in result[name].items():
            if "p50_ms" not in row:
                continue
            table.add_row(name, phase, *(str(row[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "turns_per_s")))
    console.print(table)
    for name in ("floor", "lcp"):
        console.print(f"{name} CPU ms per concurrent turn:", result[name]["cpu_ms_per_concurrent_turn"])
    console.print("ratios lcp/floor:", result["ratios"])
    console.print("goals:", result["goals"])
    if json_file:
        write_json(result, json_file)
        console.print(f"written to {json_file}")


@bench_app.command("gateway")
def bench_gateway(
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


@bench_app.command("fleet")
def bench_fleet(
    trace: Annotated[Path, typer.Option(help="A trace in Mooncake's format (timestamp, lengths, hash_ids).")],
    replicas: Annotated[int, typer.Option(min=2, max=16, help="Simulated replicas in the fleet.")] = 4,
    speed: Annotated[float, typer.Option(min=0.01, max=1000, help="Replay this many times faster.")] = 1.0,
    skip: Annotated[int, typer.Option(min=0, help="Records left out at the trace's start.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Records replayed (default: the rest).")] = None,
    no_kill: Annotated[
        bool, typer.Option("--no-kill", help="No runs with a replica killed halfway.")
    ] = False,
    no_litellm: Annotated[bool, typer.Option("--no-litellm", help="Leave LiteLLM out.")] = False,
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

    plan = FleetPlan(trace, replicas, speed, skip, limit, kill=not no_kill, litellm=not no_litellm)
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


@bench_app.command("stream")
def bench_stream(
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


@bench_app.command("canary")
def bench_canary(
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
    import os
    import time

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


@bench_app.command("forecast-memory")
def bench_forecast_memory(
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


# ---- lcp rollout: a client of /v1/rollouts; the logic is in cli/rollout.py -----------------------------


class RolloutRouter(StrEnum):
    replicas = "replicas"
    istio = "istio"
    gateway_api = "gateway-api"


class RolloutJudge(StrEnum):
    threshold = "threshold"
    statistical = "statistical"


RolloutApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api", help="API base URL (default: dev.json's, else http://127.0.0.1:8000).", show_default=False
    ),
]
RolloutHome = Annotated[Path, typer.Option(help="State directory holding dev.json.")]
RolloutKey = Annotated[
    str | None,
    typer.Option(
        envvar="LCP_API_KEY", help="API key with the sre role (default: dev.json's).", show_default=False
    ),
]
RolloutService = Annotated[str, typer.Argument(help="The service being rolled out.")]
RolloutNamespace = Annotated[str, typer.Option("--namespace", "-n", help="Its Kubernetes namespace.")]
RolloutReason = Annotated[str, typer.Option(help="Why: kept in the rollout's history.")]
RolloutWatch = Annotated[
    bool,
    typer.Option("--watch", "-w", help="Live view until it finishes (exit 0 if it succeeds, 1 if not)."),
]


def _rollout_exit(command: str, run: Callable[[], int]) -> None:
    from cli.rollout import guarded

    raise typer.Exit(guarded(command, err_console, run))


@rollout_app.command("start")
def rollout_start(
    service: RolloutService,
    version: Annotated[str, typer.Option(help="Its version label (lcp.dev/version): metrics carry it.")],
    image: Annotated[
        str | None, typer.Option(help="The new release's image (a Deployment's rollout).", show_default=False)
    ] = None,
    model: Annotated[
        bool,
        typer.Option(
            "--model",
            help="SERVICE is a model of the models policy: shift the gateway's traffic to its canary "
            "VERSION (namespace `models`, no image).",
        ),
    ] = False,
    namespace: RolloutNamespace = "default",
    deployment: Annotated[
        str | None, typer.Option(help="The stable Deployment (default: the service).", show_default=False)
    ] = None,
    router: Annotated[RolloutRouter, typer.Option(help="How traffic is split.")] = RolloutRouter.replicas,
    judge: Annotated[RolloutJudge, typer.Option(help="How analyses are judged.")] = RolloutJudge.threshold,
    time_scale: Annotated[
        float | None,
        typer.Option(
            help="Multiplies the default plan's durations (e.g. 0.1); not --steps'.", show_default=False
        ),
    ] = None,
    steps: Annotated[
        Path | None,
        typer.Option(
            help="The plan: a YAML/JSON list of steps (set_weight, pause, analyze).", show_default=False
        ),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            help="Metric templates (policies/analysis.yaml's shape) added to the API's.", show_default=False
        ),
    ] = None,
    total_replicas: Annotated[
        int | None,
        typer.Option(help="Replicas of stable + canary (default: the stable's).", show_default=False),
    ] = None,
    freeze_on_failure: Annotated[
        bool, typer.Option("--freeze-on-failure", help="On failure keep the canary's pods (no traffic).")
    ] = False,
    watch: RolloutWatch = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Start a canary rollout of a Deployment or (--model) a model: answers once the canary exists."""
    from cli import rollout

    def run() -> int:
        body = rollout.start_body(
            service,
            image=image,
            version=version,
            model=model,
            namespace=namespace,
            deployment=deployment,
            router=router.value,
            judge=judge.value,
            time_scale=time_scale,
            steps_file=steps,
            templates_file=templates,
            total_replicas=total_replicas,
            freeze_on_failure=freeze_on_failure,
        )
        with rollout.connect(api_url, home, api_key) as api:
            return rollout.run_start(api, body, console, watch_it=watch)

    _rollout_exit("start", run)


@rollout_app.command("status")
def rollout_status(
    service: RolloutService,
    namespace: RolloutNamespace = "default",
    watch: RolloutWatch = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """The rollout as it stands: steps, traffic, the last analysis, the history."""
    from cli import rollout

    def run() -> int:
        with rollout.connect(api_url, home, api_key) as api:
            return rollout.run_status(api, namespace, service, console, watch_it=watch, as_json=as_json)

    _rollout_exit("status", run)


@rollout_app.command("promote")
def rollout_promote(
    service: RolloutService,
    namespace: RolloutNamespace = "default",
    full: Annotated[
        bool, typer.Option("--full", help="Skip every remaining step: straight to 100% and promotion.")
    ] = False,
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """End the current step now (a pause, an analysis, a wait for a human), or with --full all of them."""
    _rollout_action("promote", service, namespace, reason, api_url, home, api_key, full=full)


@rollout_app.command("pause")
def rollout_pause(
    service: RolloutService,
    namespace: RolloutNamespace = "default",
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Hold the rollout at its step until resume or promote (an analysis under way keeps measuring)."""
    _rollout_action("pause", service, namespace, reason, api_url, home, api_key)


@rollout_app.command("resume")
def rollout_resume(
    service: RolloutService,
    namespace: RolloutNamespace = "default",
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Lift a pause; at an inconclusive analysis, analyse again."""
    _rollout_action("resume", service, namespace, reason, api_url, home, api_key)


@rollout_app.command("abort")
def rollout_abort(
    service: RolloutService,
    namespace: RolloutNamespace = "default",
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Roll back now: all traffic to the stable, the canary scaled down (or frozen)."""
    _rollout_action("abort", service, namespace, reason, api_url, home, api_key)


def _rollout_action(
    action: str,
    service: str,
    namespace: str,
    reason: str,
    api_url: str | None,
    home: Path,
    api_key: str | None,
    full: bool = False,
) -> None:
    from cli import rollout

    def run() -> int:
        with rollout.connect(api_url, home, api_key) as api:
            return rollout.run_action(api, action, namespace, service, console, reason=reason, full=full)

    _rollout_exit(action, run)


@rollout_app.command("list")
def rollout_list(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", show_default=False)] = None,
    service: Annotated[str | None, typer.Option(show_default=False)] = None,
    phase: Annotated[
        str | None,
        typer.Option(
            help="Progressing, Paused, Succeeded, RolledBack, Frozen or Failed.", show_default=False
        ),
    ] = None,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Rollouts, newest first."""
    from cli import rollout

    def run() -> int:
        with rollout.connect(api_url, home, api_key) as api:
            return rollout.run_list(api, console, namespace=namespace, service=service, phase=phase)

    _rollout_exit("list", run)


# ---- lcp scaling ----------------------------------------------------------------------------------------

ScalingDeployment = Annotated[str, typer.Argument(help="The Deployment to scale.")]


def _scaling_exit(command: str, run: Callable[[], int]) -> None:
    from cli.scaling import guarded

    raise typer.Exit(guarded(command, err_console, run))


def _register_backtest() -> None:
    from cli.scaling_backtest import backtest_command

    scaling_app.command("backtest")(backtest_command)


_register_backtest()


@scaling_app.command("start")
def scaling_start(
    deployment: ScalingDeployment,
    capacity: Annotated[float, typer.Option(help="Requests/s one replica serves at its SLO.")],
    namespace: RolloutNamespace = "default",
    mode: Annotated[
        str, typer.Option(help="forecast-only (record decisions, scale nothing) or active.")
    ] = "forecast-only",
    min_replicas: Annotated[int, typer.Option("--min", help="Never fewer replicas (at least 1).")] = 1,
    max_replicas: Annotated[int, typer.Option("--max", help="Never more replicas.")] = 50,
    interval: Annotated[float, typer.Option(help="Seconds between decisions.")] = 60.0,
    startup: Annotated[float, typer.Option(help="A new pod's start-up time, seconds.")] = 120.0,
    horizon: Annotated[float, typer.Option(help="How far the forecast looks, seconds.")] = 1800.0,
    step: Annotated[float, typer.Option(help="Resolution of the history it learns from, seconds.")] = 60.0,
    lookback: Annotated[
        float | None,
        typer.Option(
            help="How much history it learns from, seconds (default 14 days; at most 100,000 steps).",
            show_default=False,
        ),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            help="PromQL giving requests/s ({{namespace}}, {{deployment}} filled in).", show_default=False
        ),
    ] = None,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Scale a Deployment ahead of demand (forecast-only until you set the mode to active)."""
    from cli import scaling

    body: dict[str, object] = {
        "namespace": namespace,
        "deployment": deployment,
        "mode": mode,
        "capacity_rps": capacity,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "interval_s": interval,
        "startup_s": startup,
        "horizon_s": horizon,
        "step_s": step,
    }
    if lookback is not None:
        body["lookback_s"] = lookback
    if query:
        body["query"] = query

    def run() -> int:
        with scaling.connect(api_url, home, api_key) as api:
            console.print(scaling.render_scaling(api.start(body)))
        return 0

    _scaling_exit("start", run)


@scaling_app.command("status")
def scaling_status(
    deployment: ScalingDeployment,
    namespace: RolloutNamespace = "default",
    stored: Annotated[
        bool, typer.Option("--stored", help="Decisions from the read model (all runs), not the live view.")
    ] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Mode, health, the latest forecast and model, and recent decisions."""
    from cli import scaling

    def run() -> int:
        with scaling.connect(api_url, home, api_key) as api:
            return scaling.run_status(api, namespace, deployment, console, stored=stored)

    _scaling_exit("status", run)


@scaling_app.command("mode")
def scaling_mode(
    deployment: ScalingDeployment,
    mode: Annotated[str, typer.Argument(help="forecast-only or active.")],
    namespace: RolloutNamespace = "default",
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Switch between forecast-only (nothing scaled) and active."""
    from cli import scaling

    def run() -> int:
        with scaling.connect(api_url, home, api_key) as api:
            console.print(scaling.render_header(api.set_mode(namespace, deployment, mode, reason)))
        return 0

    _scaling_exit("mode", run)


@scaling_app.command("stop")
def scaling_stop(
    deployment: ScalingDeployment,
    namespace: RolloutNamespace = "default",
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Stop scaling the Deployment (it keeps its replicas)."""
    from cli import scaling

    def run() -> int:
        with scaling.connect(api_url, home, api_key) as api:
            console.print(scaling.render_header(api.stop(namespace, deployment, reason)))
        return 0

    _scaling_exit("stop", run)


@scaling_app.command("list")
def scaling_list(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", show_default=False)] = None,
    phase: Annotated[
        str | None, typer.Option(help="Active, ForecastOnly, Stopped or Failed.", show_default=False)
    ] = None,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Scaling targets, newest first."""
    from cli import scaling

    def run() -> int:
        with scaling.connect(api_url, home, api_key) as api:
            console.print(scaling.render_list(api.list(namespace, phase)))
        return 0

    _scaling_exit("list", run)


# ---- lcp models -----------------------------------------------------------------------------------------


@models_app.command("status")
def models_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Each model's deployments as the API's gateway sees them: healthy, cooling down (for how long,
    why) or draining; load and KV cache as last read, prefix-cache hits, recent latency and errors."""
    from api.fleet_schemas import FleetView
    from cli import rest
    from cli.fleet_view import fleet_tables

    def run() -> int:
        with rest.ApiClient.connect(api_url, home, api_key) as api:
            view = FleetView.model_validate(api._call("GET", "/v1/fleet"))
        if as_json:
            typer.echo(view.model_dump_json(indent=2))
            return 0
        if view.simulated:
            console.print("[yellow]a simulated fleet (lcp's LLM simulator), not GPUs[/yellow]")
        console.print(*fleet_tables(view))
        console.print(
            "load: this API's calls in flight + the replica's running (r) / waiting (w) requests, as last "
            "read from its /metrics; hits: its prefix-cache hit rate",
            highlight=False,
        )
        return 0

    raise typer.Exit(rest.guarded("models", "status", err_console, run))


# ---- lcp chaos ------------------------------------------------------------------------------------------

ChaosExperiment = Annotated[str, typer.Argument(help="The experiment's name.")]
ChaosRun = Annotated[str, typer.Argument(help="The run's id (`lcp chaos list` shows them).")]


def _chaos_exit(command: str, run: Callable[[], int]) -> None:
    from cli.chaos import guarded

    raise typer.Exit(guarded(command, err_console, run))


@chaos_app.command("catalogue")
def chaos_catalogue(
    api_url: RolloutApiUrl = None, home: RolloutHome = Path(".lcp"), api_key: RolloutKey = None
) -> None:
    """The experiments the API runs by name."""
    from cli import chaos

    def run() -> int:
        with chaos.connect(api_url, home, api_key) as api:
            console.print(chaos.render_catalogue(api.catalogue()))
        return 0

    _chaos_exit("catalogue", run)


@chaos_app.command("run")
def chaos_run(
    experiment: Annotated[
        str | None, typer.Argument(help="A catalogue experiment, or the one to pick from --file.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="A YAML file of experiments (the catalogue's shape).", show_default=False),
    ] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="This run's id (default: the time).")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow it to the end (exit 0 if it passed).")
    ] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Run an experiment: safety policy, steady state, the fault, cleanup, recovery, report."""
    from cli import chaos
    from cli.rest import CliError

    def run() -> int:
        if experiment is None and file is None:
            raise CliError("name an experiment (`lcp chaos catalogue` lists them) or give --file")
        with chaos.connect(api_url, home, api_key) as api:
            view = api.run(chaos.run_body(experiment, file, run_id))
            if watch:
                return chaos.watch(api, view["experiment"], view["run"], console)
            console.print(chaos.render_chaos(view))
        return 0

    _chaos_exit("run", run)


@chaos_app.command("status")
def chaos_status(
    experiment: ChaosExperiment,
    run_id: ChaosRun,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow it to the end.")] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """A run's phase, journal, probes, verdict and score."""
    from cli import chaos

    def run() -> int:
        with chaos.connect(api_url, home, api_key) as api:
            if watch:
                return chaos.watch(api, experiment, run_id, console)
            console.print(chaos.render_chaos(api.get(experiment, run_id)))
        return 0

    _chaos_exit("status", run)


@chaos_app.command("abort")
def chaos_abort(
    experiment: ChaosExperiment,
    run_id: ChaosRun,
    reason: RolloutReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Stop the fault now; cleanup and the recovery check still run."""
    from cli import chaos

    def run() -> int:
        with chaos.connect(api_url, home, api_key) as api:
            console.print(chaos.render_header(api.abort(experiment, run_id, reason)))
        return 0

    _chaos_exit("abort", run)


@chaos_app.command("list")
def chaos_list(
    phase: Annotated[
        str | None,
        typer.Option(help="Passed, Failed, Refused, NotSteady, Aborted, Error, ...", show_default=False),
    ] = None,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Experiment runs, newest first."""
    from cli import chaos

    def run() -> int:
        with chaos.connect(api_url, home, api_key) as api:
            console.print(chaos.render_list(api.runs(phase)))
        return 0

    _chaos_exit("list", run)


@chaos_app.command("schedule")
def chaos_schedule(
    experiment: Annotated[
        str, typer.Argument(help="A catalogue experiment, or the one to pick from --file.")
    ],
    cron: Annotated[str | None, typer.Option(help='A cron expression (UTC), e.g. "0 14 * * WED".')] = None,
    every: Annotated[float | None, typer.Option(help="Or every this many seconds (at least 60).")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="A YAML file of experiments (the catalogue's shape).", show_default=False),
    ] = None,
    paused: Annotated[bool, typer.Option(help="Create it paused (unpause in the Temporal UI).")] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """A recurring game day on a Temporal Schedule; each run passes the same safety policy."""
    from cli import chaos

    def run() -> int:
        body = chaos.run_body(experiment, file, None) | {"cron": cron, "every_s": every, "paused": paused}
        with chaos.connect(api_url, home, api_key) as api:
            console.print(chaos.render_schedules([api.schedule(body)]))
        return 0

    _chaos_exit("schedule", run)


@chaos_app.command("schedules")
def chaos_schedules(
    api_url: RolloutApiUrl = None, home: RolloutHome = Path(".lcp"), api_key: RolloutKey = None
) -> None:
    """Game-day schedules, with their next and recent runs."""
    from cli import chaos

    def run() -> int:
        with chaos.connect(api_url, home, api_key) as api:
            console.print(chaos.render_schedules(api.schedules()))
        return 0

    _chaos_exit("schedules", run)


@chaos_app.command("unschedule")
def chaos_unschedule(
    schedule_id: Annotated[str, typer.Argument(help="The schedule's id (`lcp chaos schedules`).")],
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: RolloutKey = None,
) -> None:
    """Delete a game-day schedule (runs under way finish and clean up)."""
    from cli import chaos

    def run() -> int:
        with chaos.connect(api_url, home, api_key) as api:
            api.unschedule(schedule_id)
        console.print(f"deleted {schedule_id}")
        return 0

    _chaos_exit("unschedule", run)


@chaos_app.command("drills")
def chaos_drills() -> None:
    """The drills `lcp chaos drill` runs against lcp's own processes."""
    from cli.drill_views import render_catalogue

    console.print(render_catalogue())


@chaos_app.command("drill")
def chaos_drill(
    name: Annotated[str, typer.Argument(help="A drill (`lcp chaos drills` lists them), or `all`.")],
    home: Annotated[
        Path | None,
        typer.Option(
            help="Where the disposable stack keeps its state and logs (default: a new temp dir).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON report per drill, one per line.")] = False,
) -> None:
    """Break lcp's own processes on a disposable stack (Temporal, API, workers; simulated model and
    cluster) and check nothing was lost or duplicated. Exit 0 if every check held."""
    import json
    import shutil
    import tempfile

    from chaos.drills import DRILLS, DrillReport, UnknownDrill, find_drill
    from cli.drill_views import render_report

    try:
        drills = list(DRILLS) if name == "all" else [find_drill(name)]
    except UnknownDrill as err:
        err_console.print(f"lcp chaos drill: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    from cli.drills import run_drills  # the harness: heavy to import, so only once the name is known

    state = home or Path(tempfile.mkdtemp(prefix="lcp-drill-"))

    def report(drill_report: DrillReport) -> None:
        if as_json:
            console.print_json(json.dumps(drill_report.to_dict()), indent=None)
        else:
            console.print(render_report(drill_report))

    if not as_json:
        console.print(f"starting a disposable lcp in {state} (Temporal, API, workers, LLM simulator)")
    try:
        passed = asyncio.run(run_drills(state, drills, report))
    except RuntimeError as err:
        err_console.print(f"lcp chaos drill: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if passed and home is None:
        shutil.rmtree(state, ignore_errors=True)
    elif not passed:
        err_console.print(f"logs of every process: {state / 'logs'}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if passed else 1)


# ---- lcp assistants -------------------------------------------------------------------------------------

AssistantId = Annotated[str, typer.Argument(help="The assistant's id.")]
ExperimentId = Annotated[str, typer.Argument(help="The experiment's id.")]
AssistantFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="YAML/JSON spec: name, model, instructions, params, tools, max_tool_rounds.",
        show_default=False,
    ),
]
AssistantName = Annotated[str | None, typer.Option(help="Display name.", show_default=False)]
AssistantModel = Annotated[str | None, typer.Option(help="The model it runs on.", show_default=False)]
AssistantInstructions = Annotated[str | None, typer.Option(help="The system prompt.", show_default=False)]
AssistantParams = Annotated[
    list[str] | None,
    typer.Option("--param", help="A generation param, NAME=VALUE (repeatable).", show_default=False),
]
AssistantNote = Annotated[str, typer.Option(help="What this version is for, or what changed and why.")]
AssistantArms = Annotated[
    list[str], typer.Option("--arm", help="NAME=VERSION:SHARE, e.g. control=v1:50 (two or more).")
]
AssistantReason = Annotated[str, typer.Option(help="Why: kept in the assistant's history.")]
AssistantKey = Annotated[
    str | None,
    typer.Option(
        envvar="LCP_API_KEY",
        help="API key: the admin role to change, client to read (default: dev.json's).",
        show_default=False,
    ),
]
AssistantJson = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]


def _assistants(command: str, call: Callable[..., object], as_json: bool = False) -> Callable[..., None]:
    """Run `call(api)` against the API and print what it returns (rendered, or as JSON)."""

    def run(api_url: str | None, home: Path, api_key: str | None) -> None:
        from cli import assistants
        from cli.rest import guarded

        def go() -> int:
            with assistants.connect(api_url, home, api_key) as api:
                answer = call(api)
            if as_json:
                import json

                console.print_json(json.dumps(answer))
            elif answer is not None:
                console.print(answer)
            return 0

        raise typer.Exit(guarded("assistants", command, err_console, go))

    return run


@assistants_app.command("list")
def assistants_list(
    api_url: RolloutApiUrl = None, home: RolloutHome = Path(".lcp"), api_key: AssistantKey = None
) -> None:
    """Your tenant's assistants: state, live version, a running experiment."""
    from cli.assistants import render_list

    _assistants("list", lambda api: render_list(api.all()))(api_url, home, api_key)


@assistants_app.command("show")
def assistants_show(
    assistant: AssistantId,
    as_json: AssistantJson = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """One assistant: every version, the live one, experiments and recent changes."""
    from cli.assistants import render_assistant

    def call(api: Any) -> object:
        view = api.get(assistant)
        return view if as_json else render_assistant(view)

    _assistants("show", call, as_json)(api_url, home, api_key)


@assistants_app.command("versions")
def assistants_versions(
    assistant: AssistantId,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """Every version: model, tools, what changed, who and when, when published."""
    from cli.assistants import render_versions

    _assistants("versions", lambda api: render_versions(api.versions(assistant)))(api_url, home, api_key)


@assistants_app.command("create")
def assistants_create(
    assistant: AssistantId,
    file: AssistantFile = None,
    name: AssistantName = None,
    model: AssistantModel = None,
    instructions: AssistantInstructions = None,
    param: AssistantParams = None,
    note: AssistantNote = "",
    publish: Annotated[bool, typer.Option("--publish", help="Publish v1 at once.")] = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """A new assistant; its first version is v1 (a draft unless --publish)."""
    from cli.assistants import render_assistant, spec_body

    def call(api: Any) -> object:
        body = spec_body(file, name=name, model=model, instructions=instructions, params=param or ()) | {
            "id": assistant,
            "note": note,
            "publish": publish,
        }
        return render_assistant(api.create(body))

    _assistants("create", call)(api_url, home, api_key)


@assistants_app.command("edit")
def assistants_edit(
    assistant: AssistantId,
    file: AssistantFile = None,
    name: AssistantName = None,
    model: AssistantModel = None,
    instructions: AssistantInstructions = None,
    param: AssistantParams = None,
    note: AssistantNote = "",
    expected_version: Annotated[
        str | None,
        typer.Option(help="The latest version you read: refused if another came since.", show_default=False),
    ] = None,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """A new version: the fields given replace the latest version's (live stays until you publish)."""
    from cli.assistants import render_assistant, spec_body

    def call(api: Any) -> object:
        body = spec_body(file, name=name, model=model, instructions=instructions, params=param or ()) | {
            "note": note
        }
        if expected_version:
            body["expected_version"] = expected_version
        return render_assistant(api.edit(assistant, body))

    _assistants("edit", call)(api_url, home, api_key)


@assistants_app.command("publish")
def assistants_publish(
    assistant: AssistantId,
    version: Annotated[str, typer.Argument(help="The version to make live, e.g. v2.")],
    reason: AssistantReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """Make a version live: new conversations start on it; running ones keep theirs."""
    _assistant_action(
        "publish", assistant, "publish", {"version": version, "reason": reason}, api_url, home, api_key
    )


@assistants_app.command("rollback")
def assistants_rollback(
    assistant: AssistantId,
    to: Annotated[
        str | None,
        typer.Option(help="The version to go back to (default: the one live before).", show_default=False),
    ] = None,
    reason: AssistantReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """Go back to an earlier published version in one step (ending a running experiment)."""
    body = {"to_version": to, "reason": reason}
    _assistant_action("rollback", assistant, "rollback", body, api_url, home, api_key)


@assistants_app.command("archive")
def assistants_archive(
    assistant: AssistantId,
    reason: AssistantReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """Retire the assistant: it starts no conversations; running ones go on; it stays readable."""
    _assistant_action("archive", assistant, "archive", {"reason": reason}, api_url, home, api_key)


@experiment_app.command("start")
def assistants_experiment_start(
    assistant: AssistantId,
    experiment: ExperimentId,
    arm: AssistantArms,
    reason: AssistantReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """Split new conversations between versions; each user keeps the arm they were assigned."""
    from cli.assistants import parse_arms

    def body() -> dict[str, Any]:
        return {"id": experiment, "arms": parse_arms(arm), "reason": reason}

    _assistant_action("experiment start", assistant, "experiments", body, api_url, home, api_key)


@experiment_app.command("adjust")
def assistants_experiment_adjust(
    assistant: AssistantId,
    experiment: ExperimentId,
    arm: AssistantArms,
    reason: AssistantReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """New shares for the same arms, in the same order."""
    from cli.assistants import parse_arms

    def body() -> dict[str, Any]:
        return {"arms": parse_arms(arm), "reason": reason}

    path = f"experiments/{experiment}/adjust"
    _assistant_action("experiment adjust", assistant, path, body, api_url, home, api_key)


@experiment_app.command("stop")
def assistants_experiment_stop(
    assistant: AssistantId,
    experiment: ExperimentId,
    promote: Annotated[
        str | None,
        typer.Option(help="An arm's name or version to make live (default: abort).", show_default=False),
    ] = None,
    reason: AssistantReason = "",
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """End the experiment: promote a winner, or abort (the live version stays)."""
    body = {"promote": promote, "reason": reason}
    path = f"experiments/{experiment}/stop"
    _assistant_action("experiment stop", assistant, path, body, api_url, home, api_key)


@assistants_app.command("stats")
def assistants_stats(
    assistant: AssistantId,
    as_json: AssistantJson = False,
    api_url: RolloutApiUrl = None,
    home: RolloutHome = Path(".lcp"),
    api_key: AssistantKey = None,
) -> None:
    """Usage per version (turns, errors, tokens, latency, feedback); per experiment, each arm minus the
    control with a 95% interval."""
    from cli.assistants import render_stats

    def call(api: Any) -> object:
        stats = api.stats(assistant)
        return stats if as_json else render_stats(stats)

    _assistants("stats", call, as_json)(api_url, home, api_key)


def _assistant_action(
    command: str,
    assistant: str,
    path: str,
    body: dict[str, Any] | Callable[[], dict[str, Any]],
    api_url: str | None,
    home: Path,
    api_key: str | None,
) -> None:
    from cli.assistants import render_assistant

    def call(api: Any) -> object:
        given = body() if callable(body) else body
        return render_assistant(api.post(assistant, path, {k: v for k, v in given.items() if v is not None}))

    _assistants(command, call)(api_url, home, api_key)
