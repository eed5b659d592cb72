"""Reads each deployment's vLLM /metrics about once a second: waiting and running requests, KV-cache
use and prefix-cache counters, which the cache-aware picker scores on (inference/fleet.py)."""

import asyncio
import logging
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inference.fleet import Fleet, Replica
from policies.models import ModelRoute
from policies.picker import Strategy

log = logging.getLogger(__name__)

READ_EVERY_S = 1.0
READ_TIMEOUT_S = 0.5
MAX_METRICS_BYTES = 4 * 1024 * 1024  # a vLLM page is ~100 KB; anything far past that is not one
WANTED = frozenset(
    {
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",  # vLLM before 0.10's name for the same
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
    }
)


def metrics_url(base_url: str) -> str:
    """vLLM serves /metrics at the root of the server whose OpenAI API is at base_url."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/metrics"


def parse(text: str) -> dict[str, float]:
    """The wanted samples, summed over their labels (a replica serves one model, or a few)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in WANTED:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


class ReplicaMetricsReader:
    """Reads the /metrics of every deployment of the models routed by cache-aware scoring."""

    def __init__(
        self, fleet: Fleet, http: httpx.AsyncClient, routes: Callable[[], Iterable[ModelRoute]]
    ) -> None:
        self._fleet = fleet
        self._http = http
        self._routes = routes
        self._failing: set[str] = set()

    def replicas(self) -> list[Replica]:
        replicas = []
        for route in self._routes():
            for version in (route, route.canary):
                if version is not None and version.routing.strategy is Strategy.CACHE_AWARE:
                    group = self._fleet.replicas(version)
                    if len(group) > 1:  # a group of one has nothing to choose between
                        replicas.extend(group)
        return replicas

    async def run(self) -> None:
        while True:
            await self.read_all()
            await asyncio.sleep(READ_EVERY_S)

    async def read_all(self) -> None:
        await asyncio.gather(*(self._read(replica) for replica in self.replicas()))

    async def _read(self, replica: Replica) -> None:
        url = metrics_url(replica.deployment.base_url)
        try:
            async with self._http.stream("GET", url, timeout=READ_TIMEOUT_S) as response:
                response.raise_for_status()
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_METRICS_BYTES:
                        raise ValueError(f"more than {MAX_METRICS_BYTES} bytes")
            values = parse(body.decode(errors="replace"))
        except (httpx.HTTPError, ValueError) as err:
            if url not in self._failing:
                log.warning("cannot read %s (%s): the picker goes on with lcp's own counts", url, err)
                self._failing.add(url)
            return
        self._failing.discard(url)
        self._fleet.read(replica, values)
