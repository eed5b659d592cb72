"""Task-queue names and search attributes shared by workflows, workers, the API and the dev server."""

from temporalio.common import SearchAttributeKey

CONVERSATIONS_QUEUE = "conversations"
OPS_QUEUE = "ops"
FORECASTING_QUEUE = "forecasting"  # CPU-heavy model training, apart from chat turns and ops work
TASK_QUEUES = (CONVERSATIONS_QUEUE, OPS_QUEUE, FORECASTING_QUEUE)

TENANT = SearchAttributeKey.for_keyword("LcpTenant")
KIND = SearchAttributeKey.for_keyword("LcpKind")
SERVICE = SearchAttributeKey.for_keyword("LcpService")
PHASE = SearchAttributeKey.for_keyword("LcpPhase")

SCENARIO_KIND = "chaos-scenario"  # LcpKind of a chaos scenario (an experiment's is "chaos")

# name -> type, as `temporal server start-dev --search-attribute NAME=TYPE` wants them
SEARCH_ATTRIBUTES = {key.name: "Keyword" for key in (TENANT, KIND, SERVICE, PHASE)}
