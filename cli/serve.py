"""`lcp dev`, `lcp api`, `lcp worker`, `lcp sim`: the commands that run lcp's own processes in the foreground
(`lcp dev` all of them, with cli/dev.py)."""

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from cli.runtime import configure_logging, console, err_console, load_settings

app = typer.Typer()  # its commands are the top-level `lcp dev`, `lcp api`, ...


@app.command()
def dev(
    home: Annotated[
        Path, typer.Option(envvar="LCP_HOME", help="State directory (databases, logs, dev.json).")
    ] = Path(".lcp"),
    host: Annotated[str, typer.Option(help="Address every service binds to.")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="lcp API port.")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal frontend (gRPC) port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port.")] = 8233,
    llm_port: Annotated[int, typer.Option(help="LLM simulator port.")] = 8400,
    kube_port: Annotated[int, typer.Option(help="The lab's simulated Kubernetes API port.")] = 8600,
    workload_port: Annotated[int, typer.Option(help="The lab's workload simulator port.")] = 8601,
    prometheus_port: Annotated[int, typer.Option(help="Prometheus port.")] = 9090,
    ops_metrics_port: Annotated[int, typer.Option(help="The ops worker's /metrics port.")] = 8602,
    split: Annotated[
        bool,
        typer.Option(
            "--split",
            help="The production shape: PostgreSQL, two API processes behind HAProxy on the API port, "
            "a worker process per task queue.",
        ),
    ] = False,
) -> None:
    """Run the whole embedded stack in the foreground: Temporal, API with its worker, LLM simulator,
    the lab (a simulated cluster) and Prometheus; with --split, in the shape the manifests deploy."""
    from cli.dev import Ports, StackError, run_dev  # the lab's and the store's modules: not for --help

    load_settings("dev")  # a wrong setting is one clear line before anything starts
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
            split,
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

    from api.app import create_app  # the whole API: not for --help
    from temporal.client import TemporalUnreachable, connect

    settings = load_settings("api")
    settings.api.with_worker = settings.api.with_worker or with_worker
    configure_logging("WARNING")
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
    from workers.main import run_worker  # every workflow and activity (scikit-learn, ...): not for --help

    configure_logging()
    try:
        uvloop.run(run_worker(load_settings("worker"), queue, metrics_port))
    except (ValueError, TemporalUnreachable) as err:
        err_console.print(f"lcp worker: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if isinstance(err, ValueError) else 1) from None


@app.command()
def sim(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8400,
) -> None:
    """Serve the OpenAI-compatible LLM simulator (a simulation, not a real model)."""
    from lab.llm_simulator import run  # FastAPI and uvicorn: not for --help

    configure_logging("WARNING")
    run(host, port, log_level="warning")
