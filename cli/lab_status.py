"""What `lcp lab status` shows: what the lab (a simulated cluster) runs, read from its own interfaces."""

import json
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from cli.show import shown
from cli.tables import Cell, Column, ListTable
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


def _deployments(info: dict[str, Any]) -> ListTable:
    apps = client.AppsV1Api(config.new_client_from_config(config_file=info["kubeconfig"]))
    columns = [
        Column("namespace", key=True),
        Column("name", key=True),
        Column("version", key=True),
        Column("ready"),
        Column("image", drop=1),
    ]
    rows: list[list[Cell]] = []
    for deployment in apps.list_deployment_for_all_namespaces().items:
        metadata, pod = deployment.metadata or client.V1ObjectMeta(), deployment.spec.template
        labels = (pod.metadata.labels if pod.metadata else None) or {}
        ready = (deployment.status.ready_replicas or 0) if deployment.status else 0
        image = pod.spec.containers[0].image if pod.spec else ""
        rows.append(
            [
                shown(metadata.namespace),
                shown(metadata.name),
                shown(labels.get("lcp.dev/version", "")),
                f"{ready}/{deployment.spec.replicas}",
                shown(image),
            ]
        )
    return ListTable(columns, rows, title="Deployments (simulated)")


def _fleet(info: dict[str, Any]) -> ListTable:
    """The LLM simulator's replicas: their pods' readiness and what each replica's vLLM metrics say."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=info["kubeconfig"]))
    ready = {
        pod.metadata.name: any(
            c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
        )
        for pod in core.list_namespaced_pod(FLEET_NAMESPACE).items
        if pod.metadata is not None and pod.status is not None
    }
    columns = [
        Column("pod", key=True),
        Column("ready"),
        Column("replica", drop=1),
        Column("running"),
        Column("waiting"),
        Column("KV cache", drop=2),
        Column("prefix hits", drop=3),
    ]
    rows: list[list[Cell]] = []
    for index, url in enumerate(info.get("llm_replicas") or []):
        pod = f"{FLEET_SERVICE}-{index}"
        values = _vllm_metrics(url)
        queries = values.get("vllm:prefix_cache_queries_total", 0.0)
        rows.append(
            [
                pod,
                "yes" if ready.get(pod) else "no",
                shown(url),
                f"{values.get('vllm:num_requests_running', 0):.0f}" if values else "down",
                f"{values.get('vllm:num_requests_waiting', 0):.0f}" if values else "",
                f"{values.get('vllm:kv_cache_usage_perc', 0):.0%}" if values else "",
                f"{values.get('vllm:prefix_cache_hits_total', 0) / queries:.0%}" if queries else "-",
            ]
        )
    title = f"LLM fleet (simulated replicas behind {FLEET_NAMESPACE}/{FLEET_SERVICE})"
    return ListTable(columns, rows, title=title)


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


def _traffic(info: dict[str, Any]) -> ListTable:
    status = httpx.get(f"{info['workload']}/admin/status", timeout=5).json()
    columns = [
        Column("service", key=True),
        Column("offered req/s"),
        Column("version", key=True),
        Column("share"),
        Column("ready", drop=2),
        Column("utilization", drop=1),
        Column("faults"),
    ]
    rows: list[list[Cell]] = []
    for service in status["services"]:
        name = f"{service['namespace']}/{service['service']}"
        for version in service["versions"] or [{"version": "-"}]:
            fault = service["faults"].get(version["version"])
            rows.append(
                [
                    shown(name),
                    f"{service['offered_rps']:.1f}",
                    shown(version["version"]),
                    f"{version.get('share', 0):.0%}",
                    str(version.get("ready_replicas", 0)),
                    f"{version.get('utilization', 0):.0%}",
                    shown(json.dumps(fault)) if fault else "",
                ]
            )
    return ListTable(columns, rows, title="Traffic (simulated workload)")


def _targets(info: dict[str, Any]) -> ListTable:
    targets = httpx.get(f"{info['prometheus']}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    columns = [Column("job", key=True), Column("target"), Column("health"), Column("last error")]
    rows: list[list[Cell]] = [
        [
            shown(target["labels"].get("job", "")),
            shown(target["scrapeUrl"]),
            shown(target["health"]),
            shown(target.get("lastError") or ""),
        ]
        for target in targets
    ]
    return ListTable(columns, rows, title="Prometheus scrape targets")
