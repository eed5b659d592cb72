"""Steady-state HTTP probes: does an endpoint answer with the status it should? GET or HEAD only, through
the fenced client, since a probe's URL comes with an experiment's request."""

import httpx
from temporalio import activity

from activities.contracts import probes as contract
from activities.contracts.probes import HttpProbeInput, HttpProbeResult
from activities.egress import AddressNotAllowed
from chaos.experiments import PROBE_METHODS


class ProbeActivities(contract.ProbeActivities):
    """`http` must be a fenced client (activities.egress.fenced_client)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    @activity.defn(name="probes.http")
    async def http(self, request: HttpProbeInput) -> HttpProbeResult:
        """One request; a failure to connect or a timeout is a failed probe, not an activity failure. A
        method that could change something (an experiment checked before probes were read-only) or an
        address the fence refuses is a failed probe too, and nothing is sent."""
        if request.method not in PROBE_METHODS:
            detail = (
                f"{request.method} {request.url}: not sent; a probe may only {' or '.join(PROBE_METHODS)}"
            )
            return HttpProbeResult(False, None, detail)
        try:
            response = await self._http.request(request.method, request.url, timeout=request.timeout_s)
        except AddressNotAllowed as err:
            return HttpProbeResult(False, None, f"{request.method} {request.url}: not sent: {err}")
        except (httpx.HTTPError, httpx.InvalidURL) as err:  # InvalidURL is no HTTPError: it raised, retried
            seen = f"{request.method} {request.url}: {type(err).__name__}: {err}"
            return HttpProbeResult(False, None, seen)
        passed = response.status_code == request.expected_status
        return HttpProbeResult(
            passed,
            response.status_code,
            f"{request.method} {request.url} answered {response.status_code}"
            + ("" if passed else f", expected {request.expected_status}"),
        )
