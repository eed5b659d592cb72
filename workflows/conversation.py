"""ConversationWorkflow: one durable conversation, its message tree, turns, branches and archive."""

import asyncio
import copy
import functools
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeout

from policies.assistants import AssistantBinding, ToolSpec
from policies.conversation import Node, Recorded, Said, match_history, message_problem, path_to
from temporal.constants import PHASE
from workflows import _options

with workflow.unsafe.imports_passed_through():
    from activities.contracts.inference import (
        ChatCompletionInput,
        ChatCompletionResult,
        ChatMessage,
        InferenceActivities,
    )
    from activities.contracts.store import (
        ConversationRecord,
        EventRecord,
        MessageRecord,
        ProjectionInput,
        StoreActivities,
    )
    from activities.contracts.tools import ToolActivities, ToolCallInput, ToolCallResult

RECENT_TURNS_KEPT = 16
SUMMARY_PROMPT = (
    "Summarize the earlier part of this conversation in a few sentences. Keep every fact, name, "
    "number and decision the user gave, and what was agreed; leave out pleasantries."
)


# Phases, as the search attribute LcpPhase shows them (PascalCase, as every lcp workflow's). Conversations
# archived by earlier code show "archived", and ones started by it "active" until they are archived.
ACTIVE = "Active"
ARCHIVED_PHASE = "Archived"
PASCAL_CASE_PHASE = "conversation-phase-pascal-case"  # the patch that archives as "Archived"


def workflow_id(tenant: str, conversation_id: str) -> str:
    return f"conversation/{tenant}/{conversation_id}"


@dataclass
class ConversationLimits:
    """Limits from settings, handed in through the input (workflows never read settings)."""

    max_message_chars: int = 32_000
    max_turns_per_run: int = 500
    keep_messages_on_continue: int = 20


@dataclass
class ConversationState:
    """Everything the conversation changes as it runs; continue-as-new hands a compact copy to the next
    run."""

    created_at: datetime
    messages: dict[str, MessageRecord] = field(default_factory=dict)
    active_leaf_id: str | None = None
    version: int = 0
    status: str = "active"
    message_count: int = 0
    next_seq: int = 1
    next_event_seq: int = 1
    summary: str | None = None
    summarized_count: int = 0
    # Results of the latest turns by update id (the client's Idempotency-Key): Temporal dedupes
    # update ids within a run only, so a retry that lands after continue-as-new is answered here.
    recent_turns: dict[str, "TurnResult"] = field(default_factory=dict)
    # Who answers: what the run's input names, until a switch to another version of its assistant
    # (continue-as-new hands them on in the next run's input).
    model: str = ""
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    assistant: AssistantBinding | None = None
    # This run's alone: the next run starts them afresh.
    turns_this_run: int = 0
    pending_events: list[EventRecord] = field(default_factory=list)  # not yet in the read model
    last_deployment: str | None = None  # the deployment that served the latest inference call


@dataclass
class ConversationInput:
    tenant: str
    conversation_id: str
    model: str
    system_prompt: str | None = None
    title: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    limits: ConversationLimits = field(default_factory=ConversationLimits)
    state: ConversationState | None = None
    assistant: AssistantBinding | None = None  # the assistant version serving it (model, prompt, tools)
    principal: str | None = None  # who started it (an assistant's per-user analytics and assignment)


@dataclass
class SendMessage:
    content: str
    role: str = "user"
    expected_version: int | None = None


@dataclass
class EditMessage:
    message_id: str
    content: str
    expected_version: int | None = None


@dataclass
class Regenerate:
    message_id: str
    expected_version: int | None = None


@dataclass
class ChatTurn:
    """A turn as OpenAI-style clients send it: the whole dialogue so far (system prompts left out),
    ending with the new user message. What the conversation already holds is recognised; only the
    rest is added."""

    history: list[ChatMessage]
    model: str | None = None  # this turn's model, when the client switches models mid-conversation
    params: dict[str, Any] = field(default_factory=dict)
    stream_channel: str | None = None
    assistant_id: str | None = None  # the assistant the client asked for; the conversation's must match


@dataclass
class SwitchAssistant:
    """Move the conversation to another version of its assistant (the user asked for it)."""

    binding: AssistantBinding
    expected_version: int | None = None


@dataclass
class Archive:
    expected_version: int | None = None


@dataclass
class TurnResult:
    conversation_id: str
    version: int
    message: MessageRecord
    reply: MessageRecord
    message_variants: int = 1
    reply_variants: int = 1
    # From the update's arrival to the model's reply (waiting for the turn before it, the model, its retries):
    # the rest of the turn is lcp's own part, what the API's turn admission keeps near its target.
    waited_ms: float | None = None


@dataclass
class ConversationStatus:
    conversation_id: str
    tenant: str
    status: str
    version: int
    active_leaf_id: str | None
    message_count: int
    turns_this_run: int
    summary: str | None


def _reject(type_: str, message: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, details or None, type=type_, non_retryable=True)


def _tool_messages(text: str, calls: list[dict[str, Any]]) -> list[ChatMessage]:
    """The assistant message that made `calls` (with the text it wrote, if any), then each call's result
    as a "tool" message."""
    made = [{"id": call["id"], "name": call["name"], "arguments": call["arguments"]} for call in calls]
    results = [ChatMessage("tool", call["result"], tool_call_id=call["id"]) for call in calls]
    return [ChatMessage("assistant", text, tool_calls=made), *results]


def _tool_error(message: str) -> str:
    return json.dumps({"error": message})


def _tool_failure(tool: ToolSpec, err: ActivityError, duration_ms: float) -> ToolCallResult:
    """What the model is told when a tool call failed (after every attempt its retry policy allows)."""
    cause = err.cause
    if isinstance(cause, TemporalTimeout):
        what, error_type = (
            "it did not report back in time (the worker running it was lost, or it hung)",
            "ToolTimeout",
        )
    elif isinstance(cause, ApplicationError):
        what, error_type = cause.message, cause.type or "ToolFailed"
    else:
        what, error_type = str(cause or err), "ToolFailed"
    if tool.idempotent:
        message = f"tool {tool.name!r} failed on every attempt: {what}"
    else:
        message = (
            f"tool {tool.name!r} failed: {what}. Its outcome is unknown: it may or may not have taken "
            "effect. It was not retried, because it is not idempotent and a second call could do it twice."
        )
    return ToolCallResult(
        ok=False, content=_tool_error(message), error_type=error_type, duration_ms=duration_ms
    )


@workflow.defn(name="Conversation")
class ConversationWorkflow:
    @workflow.init
    def __init__(self, input: ConversationInput) -> None:
        self._input = input
        carried = copy.deepcopy(input.state) if input.state else ConversationState(created_at=workflow.now())
        self._state = replace(
            carried,
            model=input.model,
            system_prompt=input.system_prompt,
            params=dict(input.params),
            assistant=input.assistant,
        )
        self._lock = asyncio.Lock()
        if input.state is None:
            self._event("conversation.created", model=input.model, title=input.title)

    @workflow.run
    async def run(self, input: ConversationInput) -> ConversationStatus:
        await workflow.wait_condition(lambda: self._state.status == "archived" or self._should_continue())
        if self._state.status != "archived":
            async with self._lock:
                await self._compact()
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.status == "archived":
            return self.status()
        workflow.continue_as_new(self._next_run())

    # ---- queries ---------------------------------------------------------------------------

    @workflow.query
    def state(self) -> ConversationStatus:
        """The conversation as it stands: the `state` query, as every lcp workflow answers it."""
        return ConversationStatus(
            conversation_id=self._input.conversation_id,
            tenant=self._input.tenant,
            status=self._state.status,
            version=self._state.version,
            active_leaf_id=self._state.active_leaf_id,
            message_count=self._state.message_count,
            turns_this_run=self._state.turns_this_run,
            summary=self._state.summary,
        )

    @workflow.query(name="status")
    def status(self) -> ConversationStatus:
        """The `state` query's former name, still answered for the clients that use it."""
        return self.state()

    # ---- updates ---------------------------------------------------------------------------

    @workflow.update
    async def open(self) -> ConversationStatus:
        """Make sure the conversation is in the read model (used when it starts with no message)."""
        async with self._lock:
            if self._state.pending_events:
                await self._project([])
        return self.status()

    @workflow.update
    async def send_message(self, request: SendMessage) -> TurnResult:
        if done := self._already_done():
            return done
        asked = workflow.now()
        async with self._lock:
            self._check_writable(request.expected_version)
            user = self._new_message("user", request.content, self._state.active_leaf_id)
            return await self._turn(user, reply_parent=user, asked=asked)

    @send_message.validator
    def _validate_send(self, request: SendMessage) -> None:
        if self._already_done():
            return
        self._check_writable(request.expected_version)
        self._check_content(request.content, request.role)

    @workflow.update
    async def chat(self, request: ChatTurn) -> TurnResult:
        if done := self._already_done():
            return done
        asked = workflow.now()
        async with self._lock:
            self._check_writable(None)
            self._check_chat_assistant(request)
            said = [Said(m.role, m.content) for m in request.history]
            recorded = {
                m.id: Recorded(m.id, m.parent_id, m.role, m.content, m.seq)
                for m in self._state.messages.values()
            }
            anchor_id, matched = match_history(said, recorded)
            turn = functools.partial(
                self._turn,
                model=request.model,
                params=request.params,
                stream_channel=request.stream_channel,
                asked=asked,
            )
            if matched == len(said):  # the user message is already here: answer it again
                assert anchor_id is not None
                return await turn(None, reply_parent=self._state.messages[anchor_id])
            imported: list[MessageRecord] = []
            parent_id = anchor_id
            for message in request.history[matched:-1]:  # what the client has and we do not
                imported.append(self._new_message(message.role, message.content, parent_id, pending=imported))
                parent_id = imported[-1].id
            user = self._new_message("user", request.history[-1].content, parent_id, pending=imported)
            return await turn(user, reply_parent=user, imported=imported)

    @chat.validator
    def _validate_chat(self, request: ChatTurn) -> None:
        if self._already_done():
            return
        self._check_writable(None)
        self._check_chat_assistant(request)
        if not request.history or request.history[-1].role != "user":
            raise _reject("InvalidMessage", "the last message must be the user's new message")
        roles = {m.role for m in request.history} - {"user", "assistant"}
        if roles:
            raise _reject(
                "InvalidMessage",
                f"unsupported message role(s) {', '.join(sorted(roles))}: send user and assistant "
                "messages (system prompts are the conversation's own)",
            )
        self._check_content(request.history[-1].content, "user")

    @workflow.update
    async def edit_message(self, request: EditMessage) -> TurnResult:
        if done := self._already_done():
            return done
        asked = workflow.now()
        async with self._lock:
            self._check_writable(request.expected_version)
            original = self._message(request.message_id, "user")
            user = self._new_message("user", request.content, original.parent_id)
            return await self._turn(user, reply_parent=user, asked=asked)

    @edit_message.validator
    def _validate_edit(self, request: EditMessage) -> None:
        if self._already_done():
            return
        self._check_writable(request.expected_version)
        self._message(request.message_id, "user")
        self._check_content(request.content, "user")

    @workflow.update
    async def regenerate(self, request: Regenerate) -> TurnResult:
        if done := self._already_done():
            return done
        asked = workflow.now()
        async with self._lock:
            self._check_writable(request.expected_version)
            old_reply = self._message(request.message_id, "assistant")
            assert old_reply.parent_id is not None
            return await self._turn(None, reply_parent=self._state.messages[old_reply.parent_id], asked=asked)

    @regenerate.validator
    def _validate_regenerate(self, request: Regenerate) -> None:
        if self._already_done():
            return
        self._check_writable(request.expected_version)
        reply = self._message(request.message_id, "assistant")
        if reply.parent_id not in self._state.messages:
            raise _reject(
                "MessageNotEditable",
                f"message {request.message_id} is from before this conversation was summarized; "
                "only recent replies can be regenerated",
            )

    @workflow.update
    async def switch_assistant(self, request: SwitchAssistant) -> ConversationStatus:
        """Serve the rest of the conversation with another version of its assistant: its model, prompt,
        params and tools from the next turn on. Replies already written keep the version that wrote them."""
        async with self._lock:
            self._check_switch(request)
            state, new = self._state, request.binding
            old = state.assistant
            assert old is not None
            state.assistant, state.model = new, new.spec.model
            state.system_prompt, state.params = new.spec.instructions or None, dict(new.spec.params)
            state.version += 1
            self._event(
                "assistant.switched",
                assistant_id=new.assistant_id,
                from_version=old.version,
                to_version=new.version,
                experiment_id=new.experiment_id,
                arm=new.arm,
            )
            await self._project([])
            return self.status()

    @switch_assistant.validator
    def _validate_switch(self, request: SwitchAssistant) -> None:
        self._check_switch(request)

    @workflow.update
    async def archive(self, request: Archive) -> ConversationStatus:
        async with self._lock:
            self._check_writable(request.expected_version)
            self._state.status = "archived"
            self._state.version += 1
            self._event("conversation.archived")
            await self._project([])
            phase = ARCHIVED_PHASE if workflow.patched(PASCAL_CASE_PHASE) else "archived"
            workflow.upsert_search_attributes([PHASE.value_set(phase)])
            return self.status()

    @archive.validator
    def _validate_archive(self, request: Archive) -> None:
        self._check_writable(request.expected_version)

    # ---- checks (run in validators, and again under the lock) ------------------------------

    def _already_done(self) -> TurnResult | None:
        """The result of this very update if an earlier run already applied it (see recent_turns); its
        waited_ms was the first answer's, not this one's."""
        info = workflow.current_update_info()
        done = self._state.recent_turns.get(info.id) if info else None
        return replace(done, waited_ms=None) if done else None

    def _remember(self, result: TurnResult) -> None:
        info = workflow.current_update_info()
        if info is None:
            return
        self._state.recent_turns[info.id] = result
        while len(self._state.recent_turns) > RECENT_TURNS_KEPT:
            del self._state.recent_turns[next(iter(self._state.recent_turns))]

    def _check_writable(self, expected_version: int | None) -> None:
        if self._state.status != "active":
            raise _reject(
                "ConversationClosed",
                f"conversation {self._input.conversation_id} is {self._state.status}: "
                "it takes no more messages; start a new conversation",
            )
        if expected_version is not None and expected_version != self._state.version:
            raise _reject(
                "VersionConflict",
                f"expected_version {expected_version} is stale: the conversation is at version "
                f"{self._state.version}; reload it and retry with that version",
                current_version=self._state.version,
            )

    def _check_switch(self, request: SwitchAssistant) -> None:
        self._check_writable(request.expected_version)
        current = self._state.assistant
        if current is None or current.assistant_id != request.binding.assistant_id:
            serving = f"assistant {current.assistant_id}" if current else "no assistant"
            raise _reject(
                "AssistantMismatch",
                f"conversation {self._input.conversation_id} is served by {serving}: it can only move "
                "to another version of the assistant it started with",
            )

    def _check_chat_assistant(self, request: ChatTurn) -> None:
        """A turn that names an assistant must go to a conversation of that assistant, and a turn that
        names a bare model cannot override an assistant's (its experiment arm would mean nothing)."""
        current = self._state.assistant
        if request.assistant_id is not None:
            if current is None or current.assistant_id != request.assistant_id:
                serving = f"assistant {current.assistant_id}" if current else f"model {self._state.model}"
                raise _reject(
                    "AssistantMismatch",
                    f"conversation {self._input.conversation_id} is served by {serving}, not assistant "
                    f"{request.assistant_id}: start a new conversation for it",
                )
        elif current is not None and request.model is not None and request.model != current.spec.model:
            raise _reject(
                "AssistantMismatch",
                f"conversation {self._input.conversation_id} is served by assistant {current.assistant_id} "
                f"{current.version} (model {current.spec.model}): ask for model "
                f"'assistant:{current.assistant_id}', or start a new conversation for {request.model}",
            )

    def _check_content(self, content: str, role: str) -> None:
        problem = message_problem(content, role, self._input.limits.max_message_chars)
        if problem:
            raise _reject("InvalidMessage", problem)

    def _message(self, message_id: str, role: str) -> MessageRecord:
        message = self._state.messages.get(message_id)
        if message is None:
            raise _reject(
                "MessageNotFound",
                f"message {message_id} is not in this conversation's recent messages "
                "(ids come from GET /v1/conversations/{id})",
            )
        if message.role != role:
            verb = "edited" if role == "user" else "regenerated"
            raise _reject(
                "InvalidMessage",
                f"message {message_id} has role {message.role!r}: only {role!r} messages can be {verb}",
            )
        return message

    # ---- the turn --------------------------------------------------------------------------

    async def _turn(
        self,
        user: MessageRecord | None,
        *,
        reply_parent: MessageRecord,
        imported: list[MessageRecord] | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        stream_channel: str | None = None,
        asked: datetime | None = None,
    ) -> TurnResult:
        """Ask the model for a reply to `reply_parent`'s branch, then record the imported messages,
        the user message and the reply. `asked`: when the update arrived (TurnResult.waited_ms)."""
        new = [*(imported or []), *([user] if user else [])]
        context = self._context(reply_parent.id, extra=new)
        request = ChatCompletionInput(
            model=model or self._state.model,
            messages=context,
            params={**self._state.params, **(params or {})},
            stream_channel=stream_channel,
            tenant=self._input.tenant,
        )
        try:
            completion, tool_calls = await self._reply(request)
            waited_ms = (workflow.now() - asked).total_seconds() * 1000 if asked else None
        except ActivityError as err:
            cause = err.cause
            reason = str(cause) if cause else str(err)
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "Unknown"
            served = self._state.assistant
            by = {"assistant_version": served.version, "arm": served.arm} if served else {}
            self._event("turn.failed", reason=reason, error_type=kind, **by)
            await self._project([])
            raise _reject(
                "InferenceFailed",
                f"the model could not answer: {reason}; send the message again "
                "(with a new Idempotency-Key if you use them)",
            ) from err

        parent_id = user.id if user else reply_parent.id
        reply = self._new_message("assistant", completion.content, parent_id)
        before = replace(
            self._state, messages=dict(self._state.messages), pending_events=list(self._state.pending_events)
        )
        reply.model = completion.model
        reply.prompt_tokens = completion.prompt_tokens
        reply.completion_tokens = completion.completion_tokens
        reply.latency_ms = completion.latency_ms
        reply.tool_calls = tool_calls
        if self._state.assistant:
            reply.assistant_version, reply.arm = self._state.assistant.version, self._state.assistant.arm
        added = [*new, reply]
        for message in added:
            self._state.messages[message.id] = message
            self._event("message.added", message_id=message.id, role=message.role)
        self._state.active_leaf_id = reply.id
        self._state.message_count += len(added)
        self._state.version += 1
        try:
            await self._project(added)
        except ActivityError as err:
            # Nothing of this turn reached the read model: forget it here too, so both agree.
            self._state = before
            raise _reject(
                "ReadModelUnavailable",
                f"the reply could not be stored, so the turn was dropped: {err.cause or err}; "
                "retry the message",
            ) from err
        self._state.turns_this_run += 1
        shown = user or reply_parent
        result = TurnResult(
            conversation_id=self._input.conversation_id,
            version=self._state.version,
            message=shown,
            reply=reply,
            message_variants=self._variants(shown),
            reply_variants=self._variants(reply),
            waited_ms=waited_ms,
        )
        self._remember(result)
        return result

    async def _complete(self, request: ChatCompletionInput) -> ChatCompletionResult:
        """One inference call, sent preferably to the deployment that served the previous one: it most
        likely still holds this conversation's prefix in its KV cache."""
        request = replace(request, previous_deployment=self._state.last_deployment)
        result: ChatCompletionResult = await workflow.execute_activity_method(
            InferenceActivities.chat_completion, request, **_options.INFERENCE
        )
        self._state.last_deployment = result.deployment
        return result

    async def _reply(
        self, request: ChatCompletionInput
    ) -> tuple[ChatCompletionResult, list[dict[str, Any]] | None]:
        """The model's reply and the tool calls it made on the way. With an assistant's tools, each call
        runs and the model is asked again with the results, for at most max_tool_rounds rounds; then it
        is asked once more with tool_choice "none", to answer in text. The reply's text is every round's
        (as streamed: a model may write before its calls); tokens are summed; latency is the whole
        turn's. Without tools, this is one inference call, as it always was."""
        binding = self._state.assistant
        if binding is None or not binding.spec.tools:
            return await self._complete(request), None
        tools = {tool.name: tool for tool in binding.spec.tools}
        request = replace(request, tools=[tool.openai_tool() for tool in binding.spec.tools])
        started = workflow.now()
        completions: list[ChatCompletionResult] = []
        calls: list[dict[str, Any]] = []
        while True:
            if len(completions) >= binding.spec.max_tool_rounds:
                request = replace(request, tool_choice="none")
            completion = await self._complete(request)
            completions.append(completion)
            if not completion.tool_calls or request.tool_choice == "none":
                break
            results = [await self._call_tool(call, tools) for call in completion.tool_calls]
            calls.extend(results)
            request = replace(
                request, messages=[*request.messages, *_tool_messages(completion.content, results)]
            )
        if not calls:
            return completion, None
        whole = replace(
            completion,
            content="".join(c.content for c in completions),  # text written before calls, then the answer
            prompt_tokens=sum(c.prompt_tokens for c in completions),
            completion_tokens=sum(c.completion_tokens for c in completions),
            latency_ms=(workflow.now() - started).total_seconds() * 1000,
        )
        return whole, calls

    async def _call_tool(self, call: dict[str, Any], tools: dict[str, ToolSpec]) -> dict[str, Any]:
        """Run one of the model's tool calls. Whatever comes of it is a result for the model to read,
        never an error for the user: bad arguments, an unknown tool, a refusal, a failure."""
        tool = tools.get(call["name"])
        started = workflow.now()
        if tool is None:
            known = ", ".join(tools)
            message = f"there is no tool named {call['name']!r}; the tools are: {known}"
            result = ToolCallResult(ok=False, content=_tool_error(message), error_type="UnknownTool")
        else:
            key = f"{workflow.info().workflow_id}/{call['id']}"
            try:
                result = await workflow.execute_activity_method(
                    ToolActivities.call,
                    ToolCallInput(
                        tool=tool,
                        call_id=call["id"],
                        arguments=call["arguments"],
                        idempotency_key=key,
                        tenant=self._input.tenant,
                    ),
                    **_options.tool_call(tool),
                )
            except ActivityError as err:
                result = _tool_failure(tool, err, (workflow.now() - started).total_seconds() * 1000)
        self._event(
            "tool.called",
            name=call["name"],
            ok=result.ok,
            duration_ms=result.duration_ms,
            error_type=result.error_type,
        )
        return {
            "id": call["id"],
            "name": call["name"],
            "arguments": call["arguments"],
            "ok": result.ok,
            "result": result.content,
            "duration_ms": result.duration_ms,
        }

    def _variants(self, message: MessageRecord) -> int:
        """How many variants exist where `message` stands (versions count 1, 2, ... there)."""
        return max(m.version for m in self._state.messages.values() if m.parent_id == message.parent_id)

    def _new_message(
        self, role: str, content: str, parent_id: str | None, pending: list[MessageRecord] | None = None
    ) -> MessageRecord:
        """A message with the next seq; `pending` are messages of this turn not in the state yet."""
        known = [*self._state.messages.values(), *(pending or [])]
        siblings = [m for m in known if m.parent_id == parent_id]
        message = MessageRecord(
            id=str(workflow.uuid4()),
            parent_id=parent_id,
            role=role,
            content=content,
            version=max((m.version for m in siblings), default=0) + 1,
            seq=self._state.next_seq,
            created_at=workflow.now(),
        )
        self._state.next_seq += 1
        return message

    def _context(self, leaf_id: str, extra: list[MessageRecord]) -> list[ChatMessage]:
        """What the model sees: system prompt, summary of older turns, then the branch to leaf."""
        context: list[ChatMessage] = []
        if self._state.system_prompt:
            context.append(ChatMessage("system", self._state.system_prompt))
        if self._state.summary:
            context.append(
                ChatMessage("system", f"Summary of the earlier conversation: {self._state.summary}")
            )
        known = {**self._state.messages, **{m.id: m for m in extra}}
        nodes = {m.id: Node(m.id, m.parent_id) for m in known.values()}
        for message_id in path_to(leaf_id, nodes):
            message = known[message_id]
            if message.tool_calls:  # the calls the reply made and what they returned, then its text
                context.extend(_tool_messages("", message.tool_calls))
            context.append(ChatMessage(message.role, message.content))
        return context

    # ---- read model ------------------------------------------------------------------------

    def _event(self, type_: str, **payload: Any) -> None:
        self._state.pending_events.append(
            EventRecord(
                stream=workflow.info().workflow_id,
                seq=self._state.next_event_seq,
                tenant=self._input.tenant,
                type=type_,
                occurred_at=workflow.now(),
                payload=payload,
            )
        )
        self._state.next_event_seq += 1

    async def _project(self, messages: list[MessageRecord]) -> None:
        """Write the conversation header, new messages and pending events to the read model."""
        state = self._state
        binding = state.assistant
        batch = ProjectionInput(
            conversation=ConversationRecord(
                id=self._input.conversation_id,
                tenant=self._input.tenant,
                workflow_id=workflow.info().workflow_id,
                model=state.model,
                status=state.status,
                version=state.version,
                message_count=state.message_count,
                created_at=state.created_at,
                updated_at=workflow.now(),
                title=self._input.title,
                system_prompt=state.system_prompt,
                params=state.params,
                active_leaf_id=state.active_leaf_id,
                summary=state.summary,
                assistant_id=binding.assistant_id if binding else None,
                assistant_version=binding.version if binding else None,
                experiment_id=binding.experiment_id if binding else None,
                arm=binding.arm if binding else None,
                principal=self._input.principal,
            ),
            messages=messages,
            events=state.pending_events,
        )
        await workflow.execute_local_activity_method(
            StoreActivities.project_conversation, batch, **_options.PROJECTION
        )
        self._state.pending_events = []

    # ---- continue-as-new -------------------------------------------------------------------

    def _next_run(self) -> ConversationInput:
        """The next run's input: who answers now, and the state with this run's counters reset."""
        state = self._state
        return replace(
            self._input,
            model=state.model,
            system_prompt=state.system_prompt,
            params=state.params,
            assistant=state.assistant,
            state=replace(state, turns_this_run=0, pending_events=[]),
        )

    def _should_continue(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self._state.turns_this_run >= self._input.limits.max_turns_per_run
        )

    async def _compact(self) -> None:
        """Keep the newest messages of the active branch; fold older ones into the summary."""
        keep = self._input.limits.keep_messages_on_continue
        nodes = {m.id: Node(m.id, m.parent_id) for m in self._state.messages.values()}
        branch = path_to(self._state.active_leaf_id, nodes)
        older, kept = branch[:-keep] if keep else branch, branch[-keep:] if keep else []
        if older:
            transcript = [self._state.messages[message_id] for message_id in older]
            self._state.summary = await self._summarize(transcript)
            self._state.summarized_count += len(older)
        self._state.messages = {message_id: self._state.messages[message_id] for message_id in kept}
        self._event(
            "conversation.continued",
            summarized_messages=self._state.summarized_count,
            kept_messages=len(kept),
        )
        await self._project([])

    async def _summarize(self, transcript: list[MessageRecord]) -> str | None:
        previous = self._state.summary
        lines = [f"{m.role}: {m.content}" for m in transcript]
        if previous:
            lines.insert(0, f"(summary of what came before) {previous}")
        prompt = [
            ChatMessage("system", SUMMARY_PROMPT),
            ChatMessage("user", "\n".join(lines)),
        ]
        try:
            result: ChatCompletionResult = await workflow.execute_activity_method(
                InferenceActivities.chat_completion,
                ChatCompletionInput(
                    model=self._state.model, messages=prompt, params={}, tenant=self._input.tenant
                ),
                **_options.INFERENCE,
            )
            return result.content
        except ActivityError as err:
            # The transcript stays whole in the read model; the model just sees less context.
            workflow.logger.warning("summary failed, keeping the previous one: %s", err)
            self._event("summary.failed", reason=str(err.cause or err))
            return previous
