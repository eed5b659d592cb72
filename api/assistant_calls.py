"""Which assistant version serves a new conversation: resolved from the read model for the caller's user."""

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from api.assistant_schemas import AssistantRef
from api.errors import ApiError
from policies.assignment import Arm
from policies.assistants import AssistantBinding, Experiment, InvalidAssistant, serve, spec_from_data
from policies.models import ModelRoute
from store import crud
from workflows.assistant import ARCHIVED


async def assistant_binding(
    session: AsyncSession, tenant: str, ref: AssistantRef, user: str, routes: Mapping[str, ModelRoute]
) -> AssistantBinding:
    """The version that serves `user`: the one asked for, else their experiment arm's, else the live one;
    refused when that version's model is not served to the tenant (`routes`: the gateway's models)."""
    row = await crud.get_assistant(session, tenant=tenant, assistant_id=ref.id)
    if row is None:
        raise ApiError(404, "AssistantNotFound", f"no assistant {ref.id}: GET /v1/assistants lists yours")
    if row.state == ARCHIVED:
        raise ApiError(
            409, "AssistantArchived", f"assistant {ref.id} is archived: it starts no conversations"
        )
    experiment = None
    if row.experiment:
        arms = [Arm(**arm) for arm in row.experiment["arms"]]
        experiment = Experiment(row.experiment["id"], arms)
    try:
        served = serve(ref.id, row.live_version, experiment, user, ref.version)
    except InvalidAssistant as err:
        raise ApiError(409, "NotPublished", str(err)) from None
    version = await crud.get_assistant_version(
        session, tenant=tenant, assistant_id=ref.id, version=served.version
    )
    if version is None:
        raise ApiError(
            404,
            "VersionNotFound",
            f"assistant {ref.id} has no version {served.version} (latest: {row.latest_version})",
        )
    spec = spec_from_data(version.spec)
    if problem := unserved_model(routes, tenant, spec.model):
        raise ApiError(422, "UnknownModel", f"assistant {ref.id} {served.version}: {problem}")
    return AssistantBinding(ref.id, served.version, spec, served.experiment_id, served.arm)


def unserved_model(routes: Mapping[str, ModelRoute], tenant: str, model: str) -> str | None:
    """Why `model` may not answer `tenant` (unknown, or limited to other tenants by the models policy's
    `tenants:`), or None. An assistant names its model itself, so it is checked like a request's."""
    route = routes.get(model)
    if route is not None and route.serves(tenant) and route.kind == "chat":
        return None
    served = sorted(name for name, route in routes.items() if route.serves(tenant) and route.kind == "chat")
    return f"model {model!r} is not served to your tenant; pick one of: {', '.join(served)}"
