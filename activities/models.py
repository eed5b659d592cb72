"""Model canaries for canary rollouts: the share of a model's traffic its canary version gets (the
models policy's `canary:`), kept in the read model (table model_canaries) where every gateway reads it.

Every activity is idempotent: it writes the whole row, so a retry writes the same again. A model or
canary version the policy does not know is final (TargetNotFound, InvalidSpec); a database error is
not, and Temporal retries it."""

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import models as contract
from activities.contracts.models import ModelCanaryInput, ModelSplit, ModelWeightInput
from policies.models import STABLE_VERSION, ModelRoute
from store import crud
from store.models import ModelCanary

__all__ = ["ModelActivities", "ModelCanaryInput", "ModelSplit", "ModelWeightInput"]

TARGET_NOT_FOUND = "TargetNotFound"
INVALID_SPEC = "InvalidSpec"


class ModelActivities(contract.ModelActivities):
    """`routes`: the models policy (inference.gateway.load_routes) the gateways serve."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], routes: dict[str, ModelRoute]) -> None:
        self._sessions = sessions
        self._routes = routes

    @activity.defn(name="models.prepare")
    async def prepare(self, request: ModelCanaryInput) -> ModelSplit:
        """Check that the policy has this canary version, and record it at weight 0 unless it is already
        recorded (then its weight stays as it is); a row left for another version is reset to 0."""
        route = self._canary_route(request.model, request.version)
        async with self._sessions() as session:
            row = await crud.get_model_canary(session, model=request.model)
            if row is None or row.canary_version != request.version:
                row = await self._write(session, request.model, request.version, 0, False, request.rollout_id)
            elif request.rollout_id and row.rollout_id != request.rollout_id:
                row = await self._write(
                    session, request.model, request.version, row.weight, row.promoted, request.rollout_id
                )
        return _split(route.version, row)

    @activity.defn(name="models.set_weight")
    async def set_weight(self, request: ModelWeightInput) -> ModelSplit:
        """Send `percent` (0..100) of the model's requests to the canary version (not promoted)."""
        if isinstance(request.percent, bool) or not isinstance(request.percent, int):
            raise _invalid(f"percent must be a whole number from 0 to 100, not {request.percent!r}")
        if not 0 <= request.percent <= 100:
            raise _invalid(f"percent must be from 0 to 100, not {request.percent}")
        route = self._canary_route(request.model, request.version)
        async with self._sessions() as session:
            row = await self._write(
                session, request.model, request.version, request.percent, False, request.rollout_id
            )
        return _split(route.version, row)

    @activity.defn(name="models.rollback")
    async def rollback(self, request: ModelCanaryInput) -> ModelSplit:
        """Send the canary nothing (weight 0, not promoted). It does not check the policy: a rollback
        always happens, even for a model taken out of the policy meanwhile."""
        route = self._routes.get(request.model)
        async with self._sessions() as session:
            row = await self._write(session, request.model, request.version, 0, False, request.rollout_id)
        return _split(route.version if route else STABLE_VERSION, row)

    @activity.defn(name="models.promote")
    async def promote(self, request: ModelCanaryInput) -> ModelSplit:
        """Send the canary every request (weight 100, promoted). The gateways keep doing so for as long
        as the models policy lists this version as the model's canary: an operator then makes it the
        stable version in the policy file (the entry's version, base_url, upstream_model) and drops the
        `canary:`; after that the row is ignored."""
        route = self._canary_route(request.model, request.version)
        async with self._sessions() as session:
            row = await self._write(session, request.model, request.version, 100, True, request.rollout_id)
        return _split(route.version, row)

    def _canary_route(self, model: str, version: str) -> ModelRoute:
        """The model's stable route, once its canary is known to be `version`."""
        route = self._routes.get(model)
        if route is None:
            known = ", ".join(sorted(self._routes)) or "none"
            raise ApplicationError(
                f"model {model!r} is not in the models policy (known: {known})",
                {"model": model},
                type=TARGET_NOT_FOUND,
                non_retryable=True,
            )
        if route.canary is None:
            raise _invalid(
                f"model {model!r} has no canary in the models policy: add `canary: {{version: {version}, "
                "...}` to its entry (and restart the API and workers) before rolling it out"
            )
        if route.canary.version != version:
            raise _invalid(
                f"model {model!r}: the models policy's canary is version {route.canary.version!r}, "
                f"not {version!r}"
            )
        return route

    @staticmethod
    async def _write(
        session: AsyncSession, model: str, version: str, weight: int, promoted: bool, rollout_id: str
    ) -> ModelCanary:
        return await crud.upsert_model_canary(
            session,
            model=model,
            canary_version=version,
            weight=weight,
            promoted=promoted,
            rollout_id=rollout_id,
            at=datetime.now(UTC),
        )


def _split(stable_version: str, row: ModelCanary) -> ModelSplit:
    return ModelSplit(
        model=row.model,
        stable_version=stable_version,
        canary_version=row.canary_version,
        canary_percent=row.weight,
        promoted=row.promoted,
    )


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=INVALID_SPEC, non_retryable=True)
