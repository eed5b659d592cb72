"""The lcp REST API from the command line, typed: a client per resource whose methods answer the API's own
response schemas, with a bearer key; any failure is a CliError said in one line. The schemas bring the
workflows' views (and Temporal's workflow code) with them, so a command imports this once it runs."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import TypeAdapter

from api.assistant_schemas import AssistantList, AssistantStats, AssistantSummary, StoredVersion, VersionList
from api.chaos_schemas import (
    Catalogue,
    ChaosList,
    ChaosSummary,
    ScenarioList,
    ScenarioSummary,
    ScheduleList,
    ScheduleSummary,
)
from api.fleet_schemas import FleetView
from api.rollout_schemas import RolloutList, RolloutSummary
from api.scaling_schemas import DecisionList, ScalingList, ScalingSummary, StoredDecision
from cli.connection import CliError, api_address
from workflows.assistant import AssistantView
from workflows.canary import RolloutView
from workflows.chaos import ChaosView
from workflows.chaos_scenario import ScenarioView
from workflows.scaling import ScalingView

Answer = TypeVar("Answer")
View = TypeVar("View")
Summary = TypeVar("Summary")
ACTIONS = ("promote", "pause", "resume", "abort")

_adapters: dict[object, TypeAdapter[Any]] = {}


def _api_error(response: httpx.Response) -> CliError:
    try:
        error = response.json()["error"]
        return CliError(str(error["message"]), response.status_code, str(error.get("type") or ""))
    except (ValueError, KeyError, TypeError):
        return CliError(f"HTTP {response.status_code}: {response.text[:200]}", response.status_code)


class ApiClient:
    """JSON calls to the lcp API with a bearer key; any failure is a CliError."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 120.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def connect(cls, api_url: str | None, home: Path, api_key: str | None) -> Self:
        """A client of the API at `api_url` with `api_key`, by default those `lcp dev` wrote to dev.json."""
        return cls(*api_address(api_url, home, api_key))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as err:
            raise CliError(f"the API at {self.base_url} did not answer in time ({err})") from err
        except httpx.TransportError as err:
            raise CliError(
                f"cannot reach the API at {self.base_url} ({err}): is it running (`lcp dev`)? see --api"
            ) from err
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json() if response.content else None

    def _answer(self, schema: type[Answer], method: str, path: str, **kwargs: Any) -> Answer:
        """The API's answer as its response schema."""
        if schema not in _adapters:
            _adapters[schema] = TypeAdapter(schema)
        answer: Answer = _adapters[schema].validate_python(self._call(method, path, **kwargs))
        return answer


class RolloutApi(ApiClient):
    """The rollout routes of the lcp API (role sre)."""

    def start(self, body: Mapping[str, Any]) -> RolloutView:
        return self._answer(RolloutView, "POST", "/v1/rollouts", json=dict(body))

    def get(self, namespace: str, service: str) -> RolloutView:
        return self._answer(RolloutView, "GET", f"/v1/rollouts/{namespace}/{service}")

    def act(self, namespace: str, service: str, action: str, body: Mapping[str, Any]) -> RolloutView:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        path = f"/v1/rollouts/{namespace}/{service}/{action}"
        return self._answer(RolloutView, "POST", path, json=dict(body))

    def list(
        self, namespace: str | None = None, service: str | None = None, phase: str | None = None
    ) -> list[RolloutSummary]:
        params = {k: v for k, v in (("namespace", namespace), ("service", service), ("phase", phase)) if v}
        return self._answer(RolloutList, "GET", "/v1/rollouts", params=params).data


class ScalingApi(ApiClient):
    """The predictive-scaling routes of the lcp API (role sre)."""

    def start(self, body: Mapping[str, Any]) -> ScalingView:
        return self._answer(ScalingView, "POST", "/v1/scaling", json=dict(body))

    def get(self, namespace: str, deployment: str) -> ScalingView:
        return self._answer(ScalingView, "GET", f"/v1/scaling/{namespace}/{deployment}")

    def decisions(self, namespace: str, deployment: str, limit: int = 50) -> list[StoredDecision]:
        path = f"/v1/scaling/{namespace}/{deployment}/decisions"
        return self._answer(DecisionList, "GET", path, params={"limit": limit}).data

    def set_mode(self, namespace: str, deployment: str, mode: str, reason: str = "") -> ScalingView:
        body = {"mode": mode, "reason": reason}
        return self._answer(ScalingView, "POST", f"/v1/scaling/{namespace}/{deployment}/mode", json=body)

    def stop(self, namespace: str, deployment: str, reason: str = "") -> ScalingView:
        body = {"reason": reason}
        return self._answer(ScalingView, "POST", f"/v1/scaling/{namespace}/{deployment}/stop", json=body)

    def list(self, namespace: str | None = None, phase: str | None = None) -> list[ScalingSummary]:
        params = {k: v for k, v in (("namespace", namespace), ("phase", phase)) if v}
        return self._answer(ScalingList, "GET", "/v1/scaling", params=params).data


class _ChaosRunsApi(ApiClient, Generic[View, Summary]):
    """The routes of one kind of chaos run under `base` (role sre): its catalogue, runs and game days."""

    base: str
    view: type[View]
    listing: type[ChaosList | ScenarioList]  # whose `data` are Summary

    def catalogue(self) -> list[dict[str, Any]]:
        return self._answer(Catalogue, "GET", f"{self.base}/catalogue").data

    def run(self, body: Mapping[str, Any]) -> View:
        return self._answer(self.view, "POST", self.base, json=dict(body))

    def get(self, name: str, run: str) -> View:
        return self._answer(self.view, "GET", f"{self.base}/{name}/{run}")

    def abort(self, name: str, run: str, reason: str = "") -> View:
        return self._answer(self.view, "POST", f"{self.base}/{name}/{run}/abort", json={"reason": reason})

    def runs(self, phase: str | None = None) -> list[Summary]:
        params = {"phase": phase} if phase else {}
        found: list[Summary] = self._answer(self.listing, "GET", self.base, params=params).data  # type: ignore[assignment]
        return found

    def schedule(self, body: Mapping[str, Any]) -> ScheduleSummary:
        return self._answer(ScheduleSummary, "POST", f"{self.base}/schedules", json=dict(body))

    def schedules(self) -> list[ScheduleSummary]:
        return self._answer(ScheduleList, "GET", f"{self.base}/schedules").data

    def unschedule(self, schedule_id: str) -> None:
        self._call("DELETE", f"{self.base}/schedules/{schedule_id}")


class ChaosApi(_ChaosRunsApi[ChaosView, ChaosSummary]):
    """The chaos experiment routes of the lcp API (role sre)."""

    base = "/v1/chaos"
    view = ChaosView
    listing = ChaosList


class ScenariosApi(_ChaosRunsApi[ScenarioView, ScenarioSummary]):
    """The chaos scenario routes of the lcp API (role sre)."""

    base = "/v1/chaos/scenarios"
    view = ScenarioView
    listing = ScenarioList


class AssistantsApi(ApiClient):
    """The assistant routes of the lcp API (role admin for changes, client for reading)."""

    def all(self) -> list[AssistantSummary]:
        return self._answer(AssistantList, "GET", "/v1/assistants").data

    def get(self, assistant_id: str) -> AssistantView:
        return self._answer(AssistantView, "GET", f"/v1/assistants/{assistant_id}")

    def versions(self, assistant_id: str) -> list[StoredVersion]:
        return self._answer(VersionList, "GET", f"/v1/assistants/{assistant_id}/versions").data

    def stats(self, assistant_id: str) -> AssistantStats:
        return self._answer(AssistantStats, "GET", f"/v1/assistants/{assistant_id}/stats")

    def create(self, body: Mapping[str, Any]) -> AssistantView:
        return self._answer(AssistantView, "POST", "/v1/assistants", json=dict(body))

    def edit(self, assistant_id: str, body: Mapping[str, Any]) -> AssistantView:
        return self._answer(AssistantView, "PATCH", f"/v1/assistants/{assistant_id}", json=dict(body))

    def post(self, assistant_id: str, action: str, body: Mapping[str, Any]) -> AssistantView:
        """publish, rollback, archive, experiments, experiments/{id}/adjust|stop."""
        path = f"/v1/assistants/{assistant_id}/{action}"
        return self._answer(AssistantView, "POST", path, json=dict(body))


class FleetApi(ApiClient):
    """/v1/fleet: the models' deployments as the API's gateway sees them."""

    def status(self) -> FleetView:
        return self._answer(FleetView, "GET", "/v1/fleet")
