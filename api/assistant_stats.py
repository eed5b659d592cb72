"""Per-version and per-arm analytics of an assistant, from the read model: conversations, turns, tokens,
latency, errors and feedback, and for an experiment the difference between its arms."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from api.assistant_schemas import (
    ArmDifference,
    ArmUsage,
    AssistantStats,
    ExperimentStats,
    VersionUsage,
)
from policies.ab_stats import Difference, mean_difference, percentile, proportion_difference
from store import crud
from store.models import Conversation, Event, Message, MessageFeedback


@dataclass
class _Tally:
    conversations: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    turns: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    up: int = 0
    down: int = 0

    def usage(self) -> dict[str, object]:
        attempts = self.turns + self.errors
        rated = self.up + self.down
        return {
            "conversations": len(self.conversations),
            "turns": self.turns,
            "errors": self.errors,
            "error_rate": self.errors / attempts if attempts else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_p50_ms": percentile(self.latencies, 50),
            "latency_p95_ms": percentile(self.latencies, 95),
            "thumbs_up": self.up,
            "thumbs_down": self.down,
            "satisfaction": self.up / rated if rated else None,
        }


def _count_replies(
    tallies: dict[str, _Tally],
    key_of: dict[str, str | None],
    replies: Iterable[tuple[Message, Conversation]],
    feedback: dict[str, list[MessageFeedback]],
) -> None:
    for message, conversation in replies:
        key = key_of.get(message.id)
        if key is None:
            continue
        tally = tallies[key]
        tally.conversations.add(conversation.id)
        tally.turns += 1
        tally.prompt_tokens += message.prompt_tokens or 0
        tally.completion_tokens += message.completion_tokens or 0
        if message.latency_ms is not None:
            tally.latencies.append(message.latency_ms)
        for rating in feedback.get(message.id, []):
            tally.up += rating.rating > 0
            tally.down += rating.rating < 0


async def assistant_stats(session: AsyncSession, tenant: str, assistant_id: str) -> AssistantStats:
    replies = await crud.assistant_replies(session, tenant=tenant, assistant_id=assistant_id)
    conversations = await crud.assistant_conversations(session, tenant=tenant, assistant_id=assistant_id)
    by_workflow = {c.workflow_id: c for c in conversations}
    failures = await crud.failed_turns(session, streams=list(by_workflow))
    rated = await crud.feedback_for(session, tenant=tenant, message_ids=[m.id for m, _ in replies])
    feedback: dict[str, list[MessageFeedback]] = defaultdict(list)
    for rating in rated:
        feedback[rating.message_id].append(rating)

    versions: dict[str, _Tally] = defaultdict(_Tally)
    _count_replies(versions, {m.id: m.assistant_version for m, _ in replies}, replies, feedback)
    for event in failures:
        version = event.payload.get("assistant_version") or by_workflow[event.stream].assistant_version
        if version:
            versions[version].errors += 1
            versions[version].conversations.add(by_workflow[event.stream].id)
    return AssistantStats(
        assistant_id=assistant_id,
        versions=[
            VersionUsage(version=v, **versions[v].usage())  # type: ignore[arg-type]
            for v in sorted(versions, key=lambda name: int(name[1:]))
        ],
        experiments=[
            _experiment(
                experiment.id, experiment.state, experiment.arms, replies, failures, by_workflow, feedback
            )
            for experiment in await crud.list_assistant_experiments(
                session, tenant=tenant, assistant_id=assistant_id
            )
        ],
    )


def _experiment(
    experiment_id: str,
    state: str,
    arms: list[dict[str, object]],
    replies: list[tuple[Message, Conversation]],
    failures: list[Event],
    by_workflow: dict[str, Conversation],
    feedback: dict[str, list[MessageFeedback]],
) -> ExperimentStats:
    in_experiment = [(m, c) for m, c in replies if c.experiment_id == experiment_id]
    tallies: dict[str, _Tally] = {str(arm["name"]): _Tally() for arm in arms}
    _count_replies(tallies, {m.id: m.arm for m, _ in in_experiment}, in_experiment, feedback)
    for event in failures:
        conversation = by_workflow[event.stream]
        arm = event.payload.get("arm") or conversation.arm
        if conversation.experiment_id == experiment_id and arm in tallies:
            tallies[arm].errors += 1
    control = str(arms[0]["name"])
    differences = []
    for arm in list(tallies)[1:]:
        c, t = tallies[control], tallies[arm]
        for metric, diff in (
            ("satisfaction", proportion_difference((c.up, c.up + c.down), (t.up, t.up + t.down))),
            (
                "error_rate",
                proportion_difference((c.errors, c.turns + c.errors), (t.errors, t.turns + t.errors)),
            ),
            ("latency_mean_ms", mean_difference(c.latencies, t.latencies)),
        ):
            differences.append(_difference(metric, arm, diff))
    return ExperimentStats(
        id=experiment_id,
        state=state,
        control=control,
        arms=[
            ArmUsage(arm=str(arm["name"]), version=str(arm["version"]), **tallies[str(arm["name"])].usage())  # type: ignore[arg-type]
            for arm in arms
        ],
        differences=differences,
    )


def _difference(metric: str, arm: str, diff: Difference) -> ArmDifference:
    return ArmDifference(
        metric=metric, arm=arm, value=diff.value, low=diff.low, high=diff.high, confidence=diff.confidence
    )
