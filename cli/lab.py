"""`lcp lab`: the lab, a simulated cluster — serve it, and see what it runs (cli/lab_status.py)."""

from pathlib import Path
from typing import Annotated

import typer

from cli.connection import HOME, Home
from cli.runtime import configure_logging, console, err_console

app = typer.Typer(
    help="The lab: a simulated cluster (Kubernetes API, workload, Prometheus).", no_args_is_help=True
)


@app.command("serve")
def serve(
    home: Annotated[Path, typer.Option(help="Where the kubeconfig is written.")] = Path(".lcp"),
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    kube_port: Annotated[int, typer.Option(help="Simulated Kubernetes API port.")] = 8600,
    workload_port: Annotated[int, typer.Option(help="Workload simulator (metrics, faults) port.")] = 8601,
    pod_startup_s: Annotated[float, typer.Option(help="How long a simulated pod takes to be ready.")] = 3.0,
    trace: Annotated[Path | None, typer.Option(help="Traffic trace for the demo service.")] = None,
    llm_replica_port: Annotated[
        list[int],
        typer.Option(
            metavar="PORT",
            help="A port of an LLM simulator replica on --host: it gets a pod behind inference/sim-llama-8b.",
        ),
    ] = [],  # noqa: B006
) -> None:
    """Serve the simulated cluster: Kubernetes API, controllers and workload (a simulation)."""
    import uvloop

    from lab.server import LabOptions, serve  # kmock and the Kubernetes client: not for --help

    configure_logging("WARNING")
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


@app.command("status")
def status(home: Home = HOME) -> None:
    """What the lab runs: Deployments and their readiness, the LLM fleet, simulated traffic, Prometheus
    targets."""
    from cli.lab_status import show_status  # the Kubernetes client: not for --help

    raise typer.Exit(show_status(home, console))
