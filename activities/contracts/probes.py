"""What the chaos workflow shares with the steady-state probe activity (activities/probes.py): its input,
result and name, without the HTTP client."""

from dataclasses import dataclass

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
    """The activity's contract: what workflows call. The implementation, activities/probes.py's
    ProbeActivities, subclasses this and overrides it under the same activity name."""

    @activity.defn(name="probes.http")
    async def http(self, request: HttpProbeInput) -> HttpProbeResult:
        """One GET or HEAD; no answer, a timeout or a refused address is a failed probe."""
        raise NotImplementedError
