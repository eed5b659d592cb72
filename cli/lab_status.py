"""What `lcp lab status` shows: what the lab (a simulated cluster) runs, read from its own interfaces."""

import json
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from lab.fleet import FLEET_NAMESPACE, FLEET_SERVICE

HEADER = "[bold yellow]lcp lab — a SIMULATED cluster[/bold yellow] (no real Kubernetes, pods or traffic)"


def show_status(home: Path, console: Console) -> int:
    """Print the lab's Deployments, simulated traffic and Prometheus targets; 1 when it is not running."""
    dev = home / "dev.json"
    info: dict[str, Any] = json.loads(dev.read_text()) if dev.exists() else {}
    if "kubeconfig" not in info:
        console.print(f"lcp lab status: no lab is running for {home} (start it with `lcp dev`)")
        return 1
    console.print(HEADER)
    console.print(
        f"kubernetes API {info['kube']} (kubeconfig {info['kubeconfig']}) · workload {info['workload']} · "
        f"prometheus {info['prometheus']}",
        highlight=False,
    )
    problems = 0
    for section in (_deployments, _fleet, _traffic, _targets):
        try:
            console.print(section(info))
        except (httpx.HTTPError, client.ApiException, OSError, KeyError, ValueError) as err:
            console.print(f"[red]{section.__name__.strip('_')}: unavailable ({err})[/red]", highlight=False)
            problems += 1
    return 1 if problems else 0


def _deployments(info: dict[str, Any]) -> Table:
    apps = client.AppsV1Api(config.new_client_from_config(config_file=info["kubeconfig"]))
    table = Table(title="Deployments (simulated)")
    for column in ("namespace", "name", "version", "ready", "image"):
        table.add_column(column)
    for deployment in apps.list_deployment_for_all_namespaces().items:
        metadata, pod = deployment.metadata or client.V1ObjectMeta(), deployment.spec.template
        labels = (pod.metadata.labels if pod.metadata else None) or {}
        ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
        image = pod.spec.containers[0].image if pod.spec else ""
        table.add_row(
            metadata.namespace,
            metadata.name,
            labels.get("lcp.dev/version", ""),
            f"{ready}/{deployment.spec.replicas}",
            image,
        )
    return table


def _fleet(info: dict[str, Any]) -> Table:
    """The LLM simulator's replicas: their pods' readiness and what each replica's vLLM metrics say."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=info["kubeconfig"]))
    ready = {
        pod.metadata.name: any(
            c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
        )
        for pod in core.list_namespaced_pod(FLEET_NAMESPACE).items
        if pod.metadata is not None and pod.status is not None
    }
    table = Table(title=f"LLM fleet (simulated replicas behind {FLEET_NAMESPACE}/{FLEET_SERVICE})")
    for column in ("pod", "ready", "replica", "running", "waiting", "KV cache", "prefix hits"):
        table.add_column(column)
    for index, url in enumerate(info.get("llm_replicas") or []):
        pod = f"{FLEET_SERVICE}-{index}"
        values = _vllm_metrics(url)
        queries = values.get("vllm:prefix_cache_queries_total", 0.0)
        table.add_row(
            pod,
            "yes" if ready.get(pod) else "no",
            url,
            f"{values.get('vllm:num_requests_running', 0):.0f}" if values else "down",
            f"{values.get('vllm:num_requests_waiting', 0):.0f}" if values else "",
            f"{values.get('vllm:kv_cache_usage_perc', 0):.0%}" if values else "",
            f"{values.get('vllm:prefix_cache_hits_total', 0) / queries:.0%}" if queries else "-",
        )
    return table


def _vllm_metrics(url: str) -> dict[str, float]:
    """A replica's vLLM metrics summed over its models; {} when it does not answer."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("vllm:"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def _traffic(info: dict[str, Any]) -> Table:
    status = httpx.get(f"{info['workload']}/admin/status", timeout=5).json()
    table = Table(title="Traffic (simulated workload)")
    for column in ("service", "offered req/s", "version", "share", "ready", "utilization", "faults"):
        table.add_column(column)
    for service in status["services"]:
        name = f"{service['namespace']}/{service['service']}"
        for version in service["versions"] or [{"version": "-"}]:
            fault = service["faults"].get(version["version"])
            table.add_row(
                name,
                f"{service['offered_rps']:.1f}",
                version["version"],
                f"{version.get('share', 0):.0%}",
                str(version.get("ready_replicas", 0)),
                f"{version.get('utilization', 0):.0%}",
                json.dumps(fault) if fault else "",
            )
    return table


def _targets(info: dict[str, Any]) -> Table:
    targets = httpx.get(f"{info['prometheus']}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    table = Table(title="Prometheus scrape targets")
    for column in ("job", "target", "health", "last error"):
        table.add_column(column)
    for target in targets:
        table.add_row(
            target["labels"].get("job", ""),
            target["scrapeUrl"],
            target["health"],
            target.get("lastError") or "",
        )
    return table
