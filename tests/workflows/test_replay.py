"""Replays saved workflow histories: a change that breaks determinism fails here."""

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.saved_histories import saved
from workflows.assistant import AssistantWorkflow
from workflows.canary import CanaryRolloutWorkflow
from workflows.chaos import ChaosExperimentWorkflow
from workflows.chaos_scenario import ChaosScenarioWorkflow
from workflows.conversation import ConversationWorkflow
from workflows.scaling import PredictiveScalingWorkflow

HISTORIES = saved()


@pytest.mark.parametrize(
    "history_json", [path.read_text() for path in HISTORIES], ids=[path.stem for path in HISTORIES]
)
async def test_saved_history_replays(history_json: str) -> None:
    """conversation_v1: sent, edited, regenerated, archived; conversation_v2_chat: OpenAI-style turns (re-sent
    history, a streamed one, a regenerate, an edited reply), archived; canary_rollout_v1: a rollout with a
    human promote, an analysis, pause, resume and a full promotion; predictive_scaling_v1: forecast-only
    decisions, a switch to active, scaling, a stop; chaos_experiment_v1: a network loss stopped on a probe
    breach, cleaned up, recovered; chaos_scenario_v1: two faults in parallel, a breach that stops the Argo
    Workflow and every engine, cleanup, recovery; assistant_v1: versions, an experiment promoted, a rollback,
    archived; conversation_v3_assistant_tools: an assistant's tool call, then a switch to another version.
    Later versions are the same scenarios recorded by later code (the tests that call
    saved_histories.save_history). Each replays cleanly on today's code."""
    history = WorkflowHistory.from_json("replay-sample", history_json)
    replayer = Replayer(
        workflows=[
            ConversationWorkflow,
            CanaryRolloutWorkflow,
            PredictiveScalingWorkflow,
            ChaosExperimentWorkflow,
            ChaosScenarioWorkflow,
            AssistantWorkflow,
        ],
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(history)  # raises on nondeterminism


def test_there_are_saved_histories() -> None:
    assert {path.stem.split("_")[0] for path in HISTORIES} >= {
        "conversation",
        "canary",
        "predictive",
        "chaos",
        "assistant",
    }
