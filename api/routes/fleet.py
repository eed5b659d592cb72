"""The inference fleet's state: each model version's deployments, health, load and cache — role `sre`."""

from fastapi import APIRouter

from api.auth import SreDep
from api.deps import StateDep
from api.fleet_schemas import DeploymentStatus, FleetView, ModelFleet
from api.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/fleet", tags=["fleet"], responses=ERROR_RESPONSES)
SIMULATOR_OWNER = "lcp-simulator"


@router.get("", response_model=FleetView)
async def fleet(state: StateDep, caller: SreDep) -> FleetView:
    """Every model version's deployments: healthy, cooling down (until when, why) or draining; in-flight
    calls, the queue and KV-cache use last read from the replica, its prefix-cache hit rate, recent
    latency and errors. Cooldowns and in-flight counts are this API process's own."""
    gateway = state.gateway
    models = []
    for route in sorted(gateway.routes.values(), key=lambda r: r.name):
        for version in (route, route.canary):
            if version is None:
                continue
            models.append(
                ModelFleet(
                    model=version.name,
                    version=version.version,
                    strategy=version.routing.strategy.value,
                    discovered=version.discovery is not None,
                    fallbacks=list(version.fallbacks.general),
                    deployments=[DeploymentStatus(**row) for row in gateway.fleet.status(version)],
                )
            )
    simulated = any(route.owned_by == SIMULATOR_OWNER for route in gateway.routes.values())
    return FleetView(simulated=simulated, models=models)
