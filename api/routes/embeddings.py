"""OpenAI's embeddings: POST /v1/embeddings through the gateway to a model of kind `embedding` in the
models policy, limited and metered like a chat completion (its input tokens)."""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.auth import ClientDep
from api.conversation_calls import meter
from api.deps import StateDep
from api.errors import ApiError
from api.metrics import EMBEDDINGS
from api.openai_schemas import EmbeddingList, EmbeddingRequest
from api.routes.chat import ERRORS, gateway_error, served_route
from inference.gateway import InferenceFailure, estimate_prompt_tokens
from inference.messages import ChatMessage

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/embeddings", response_model=EmbeddingList, responses=ERRORS)
async def create_embeddings(body: EmbeddingRequest, state: StateDep, caller: ClientDep) -> Any:
    """Embeddings of `input` (a text or a list of texts), in OpenAI's shape: floats, or base64 with
    `encoding_format: "base64"` (what the openai SDK asks for). A chat model is a 400."""
    route = served_route(state, caller, body.model)
    if route.kind != "embedding":
        raise ApiError(
            400,
            "InvalidRequest",
            f"model {body.model!r} is a {route.kind} model, not an embedding model: GET /v1/models lists "
            "the models, and the models policy says which serve embeddings (kind: embedding)",
            param="model",
        )
    texts = body.texts()
    estimate = estimate_prompt_tokens([ChatMessage("user", text) for text in texts])
    await state.limiter.reserve(caller, estimate, f"{len(texts)} input(s) of about {estimate}")
    try:
        result = await state.gateway.embed(body.model, texts, body.params(), tenant=caller.tenant)
    except InferenceFailure as err:
        EMBEDDINGS.labels(body.model, err.type or "error").inc()
        raise gateway_error(err) from err
    meter(state, caller, body.model, result.prompt_tokens, 0)
    EMBEDDINGS.labels(body.model, "ok").inc()
    usage = {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}
    content = {"object": "list", "data": result.data, "model": result.model, "usage": usage}
    return JSONResponse(content, headers={"X-Lcp-Mode": "one-shot"})
