"""Replays saved ConversationWorkflow histories: a change that breaks determinism fails here."""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.conversation import ConversationWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("conversation_*.json"))


@pytest.mark.parametrize(
    "history_json", [path.read_text() for path in HISTORIES], ids=[path.stem for path in HISTORIES]
)
async def test_saved_history_replays(history_json: str) -> None:
    """conversation_v1: sent, edited, regenerated, archived; conversation_v2_chat: OpenAI-style turns
    (re-sent history, a streamed one, a regenerate, an edited reply), archived. Replays cleanly."""
    history = WorkflowHistory.from_json("conversation/default/replay-sample", history_json)
    replayer = Replayer(workflows=[ConversationWorkflow], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)  # raises on nondeterminism


def test_there_is_a_saved_history() -> None:
    assert HISTORIES, "tests/workflows/histories/ holds no saved conversation history"
