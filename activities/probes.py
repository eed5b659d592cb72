"""Steady-state HTTP probes: does an endpoint answer with the status it should?"""

from dataclasses import dataclass

import httpx
from temporalio import activity


@dataclass
class HttpProbeInput:
    url: str
    expected_status: int = 200
    method: str = "GET"
    timeout_s: float = 5.0


@dataclass
class HttpProbeResult:
    passed: bool
    status: int | None  # None when nothing answered
    detail: str  # what was seen, in words


class ProbeActivities:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @activity.defn(name="probes.http")
    async def http(self, request: HttpProbeInput) -> HttpProbeResult:
        """One request; a failure to connect or a timeout is a failed probe, not an activity failure."""
        try:
            response = await self._http.request(request.method, request.url, timeout=request.timeout_s)
        except httpx.HTTPError as err:
            seen = f"{request.method} {request.url}: {type(err).__name__}: {err}"
            return HttpProbeResult(False, None, seen)
        passed = response.status_code == request.expected_status
        return HttpProbeResult(
            passed,
            response.status_code,
            f"{request.method} {request.url} answered {response.status_code}"
            + ("" if passed else f", expected {request.expected_status}"),
        )
