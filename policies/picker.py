"""Which deployment of a model serves a request: filter, then score, then pick.

As the Kubernetes Gateway API Inference Extension and llm-d do it: filter out the deployments that
cannot take the request (cooling down, draining, full, context window too small, labels the request
does not allow); score the rest on load (waiting and running requests as last read from each
replica's vLLM /metrics, plus lcp's own calls started since that read), KV-cache use, and prefix
affinity (how many of the prompt's leading blocks the deployment most likely still holds); pick the
best score, ties at random. The simpler strategies stay for comparison and for users who want them.

Pure: the clock, the random source and the round-robin turn are passed in.
"""

import hashlib
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Strategy(StrEnum):
    CACHE_AWARE = "cache_aware"  # filter, score (load, KV cache, prefix affinity), pick
    ROUND_ROBIN = "round_robin"
    WEIGHTED_RANDOM = "weighted_random"
    LEAST_IN_FLIGHT = "least_in_flight"


@dataclass(frozen=True)
class ScoreWeights:
    """How much each scorer counts: llm-d's default profile (prefix 3, KV cache 2, queue 2), and the
    prefill scorer, which weighs what decides the time to first token on long prompts: the prompt
    tokens the replica must prefill before it answers this request (as Mooncake's scheduler does)."""

    prefix: float = 3.0
    kv_cache: float = 2.0
    queue: float = 2.0
    prefill: float = 4.0
    # A durable conversation's previous replica counts as holding its whole prefix unless this many
    # requests already wait there: then the turn goes where it is served sooner.
    overload_waiting: int = 8
    # Under flow control, the prompt tokens a deployment would prefill beyond what the best prefix holder
    # would (work it redoes) count this many times as delay: once for the request after it there, which
    # waits that much longer (a lower bound while the fleet is busy enough for flow control to matter).
    redo: float = 1.0


@dataclass(frozen=True)
class FlowControl:
    """When the gateway holds a request instead of sending it (as llm-d's flow control and saturation
    detector do). A deployment is saturated when it has more prompt tokens waiting to be prefilled than
    `max_pending_prefill_tokens` (about one long prompt: 1 s of prefill on an H200 for an 8B model) or more
    than `max_waiting` requests in its vLLM queue as last read. A request piled onto a saturated replica
    waits there behind every prefill before it; held, it goes once a replica frees up. With cache_aware,
    a request is held while the deployment where it delays first tokens least (its prefix holder, most
    often) is saturated, and not sent to another that has room: there it would prefill its whole prompt
    again, and the replicas, busier, would fall behind (see `pick_or_hold`). The other
    strategies send it to the first deployment that has room. At most `max_held` requests are held per
    model version (past that, a 503 with Retry-After), each for at most `max_wait_s`: then it is sent to
    the best deployment anyway."""

    max_pending_prefill_tokens: int = 32768
    max_waiting: int = 4
    max_held: int = 512
    max_wait_s: float = 30.0


@dataclass(frozen=True)
class Candidate:
    """A deployment as the picker sees it at one moment."""

    id: str
    weight: float = 1.0
    max_in_flight: int | None = None
    context_window: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    draining: bool = False
    cooling_until: float | None = None
    in_flight: int = 0  # lcp's calls to it now
    in_flight_at_read: int = 0  # lcp's calls to it when its metrics were last read
    waiting: float = 0.0  # vllm:num_requests_waiting as last read
    running: float = 0.0  # vllm:num_requests_running as last read
    kv_cache_usage: float = 0.0  # vllm:kv_cache_usage_perc as last read, 0..1
    prefix_blocks_held: int = 0  # leading prompt blocks it most likely holds (from the prefix index)
    # Prompt tokens lcp sent it that it has not started answering yet (estimated, cached part left out).
    pending_prefill_tokens: float = 0.0

    @property
    def load(self) -> float:
        """Requests it has or will have: as read, plus what lcp sent since."""
        return self.waiting + self.running + max(0, self.in_flight - self.in_flight_at_read)


@dataclass(frozen=True)
class Request:
    prompt_tokens: int
    max_tokens: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)  # every one must match the deployment's
    prefix_blocks: int = 0  # how many blocks the prompt has
    previous: str | None = None  # the deployment that served this conversation's previous turn


class Unavailable(StrEnum):
    """Why no deployment can take a request, in the order a caller should act on them."""

    CONTEXT_WINDOW = "context_window"  # the prompt is too long for every deployment: a fallback or a 400
    LABELS = "labels"  # no deployment has the labels the request allows
    COOLING_DOWN = "cooling_down"  # all that fit are cooling down or full: wait for the first back
    DRAINING = "draining"
    SATURATED = "saturated"  # all that could take it are saturated (FlowControl): hold it in the gateway


@dataclass(frozen=True)
class NoDeployment:
    reason: Unavailable
    retry_at: float | None = None  # when the first cooling deployment comes back
    largest_window: int | None = None  # with CONTEXT_WINDOW: the longest prompt + reply any takes


def eligible(candidates: Sequence[Candidate], request: Request, now: float) -> list[Candidate] | NoDeployment:
    """The candidates that can take the request now, or why none can."""
    needed = request.prompt_tokens + request.max_tokens
    fits = [c for c in candidates if c.context_window is None or c.context_window >= needed]
    if not fits:
        windows = [c.context_window for c in candidates if c.context_window is not None]
        return NoDeployment(Unavailable.CONTEXT_WINDOW, largest_window=max(windows, default=None))
    allowed = [c for c in fits if all(c.labels.get(k) == v for k, v in request.labels.items())]
    if not allowed:
        return NoDeployment(Unavailable.LABELS)
    serving = [c for c in allowed if not c.draining]
    if not serving:
        return NoDeployment(Unavailable.DRAINING)
    ready = [
        c
        for c in serving
        if not (c.cooling_until is not None and now < c.cooling_until)
        and (c.max_in_flight is None or c.in_flight < c.max_in_flight)
    ]
    if not ready:
        returns = [c.cooling_until for c in serving if c.cooling_until is not None and now < c.cooling_until]
        return NoDeployment(Unavailable.COOLING_DOWN, retry_at=min(returns) if returns else None)
    return ready


def saturated(c: Candidate, flow: FlowControl) -> bool:
    """Whether the candidate has more queued than flow control lets the gateway add to."""
    return c.pending_prefill_tokens > flow.max_pending_prefill_tokens or c.waiting > flow.max_waiting


def unsaturated(ready: Sequence[Candidate], flow: FlowControl) -> list[Candidate] | NoDeployment:
    """The ready candidates that are not saturated, or SATURATED when none is."""
    free = [c for c in ready if not saturated(c, flow)]
    return free or NoDeployment(Unavailable.SATURATED)


def held(c: Candidate, request: Request, weights: ScoreWeights) -> float:
    """The share of the prompt the candidate most likely has cached, 0..1."""
    if c.id == request.previous and c.waiting < weights.overload_waiting:
        return 1.0
    if request.prefix_blocks:
        return min(1.0, c.prefix_blocks_held / request.prefix_blocks)
    return 0.0


def uncached(c: Candidate, request: Request, weights: ScoreWeights) -> float:
    """Prompt tokens the candidate would prefill for this request: the part it does not hold."""
    return request.prompt_tokens * (1.0 - held(c, request, weights))


def prefill_ahead(c: Candidate, request: Request, weights: ScoreWeights) -> float:
    """Prompt tokens the candidate must prefill before this request's first token: what lcp sent it that
    it has not started answering (or, when its metrics show more requests waiting, that many prompts like
    this one: other clients' too), and this prompt's part it does not hold."""
    ahead = max(c.pending_prefill_tokens, c.waiting * request.prompt_tokens)
    return ahead + uncached(c, request, weights)


def _better_when_lower(values: list[float]) -> list[float]:
    """Min-max normalised so that the lowest value scores 1 and the highest 0 (all 1 when equal)."""
    low, high = min(values), max(values)
    return [1.0 if high == low else (high - v) / (high - low) for v in values]


def scores(candidates: Sequence[Candidate], request: Request, weights: ScoreWeights) -> dict[str, float]:
    """Each candidate's weighted score; higher is better."""
    queue = _better_when_lower([c.load for c in candidates])
    prefill = _better_when_lower([prefill_ahead(c, request, weights) for c in candidates])
    result: dict[str, float] = {}
    for i, c in enumerate(candidates):
        kv = 1.0 - min(1.0, max(0.0, c.kv_cache_usage))
        result[c.id] = (
            weights.prefix * held(c, request, weights)
            + weights.kv_cache * kv
            + weights.queue * queue[i]
            + weights.prefill * prefill[i]
        )
    return result


def pick(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    request: Request,
    rng: random.Random,
    turn: int = 0,
    weights: ScoreWeights = ScoreWeights(),
) -> Candidate:
    """One of `candidates` (never empty: filter with `eligible` first)."""
    if not candidates:
        raise ValueError("pick needs at least one candidate")
    if strategy is Strategy.ROUND_ROBIN:
        return candidates[turn % len(candidates)]
    if strategy is Strategy.WEIGHTED_RANDOM:
        total = sum(max(0.0, c.weight) for c in candidates)
        if total <= 0:
            return rng.choice(list(candidates))
        return rng.choices(list(candidates), weights=[max(0.0, c.weight) for c in candidates])[0]
    if strategy is Strategy.LEAST_IN_FLIGHT:
        fewest = min(c.in_flight for c in candidates)
        return rng.choice([c for c in candidates if c.in_flight == fewest])
    by_id = scores(candidates, request, weights)
    best = max(by_id.values())
    return rng.choice([c for c in candidates if by_id[c.id] >= best - 1e-9])


def least_delay(
    candidates: Sequence[Candidate],
    request: Request,
    rng: random.Random,
    weights: ScoreWeights = ScoreWeights(),
) -> Candidate:
    """The candidate where the request delays first tokens least: its own wait (`prefill_ahead`: the prompts
    the candidate must prefill first and this prompt's part it does not hold), plus `weights.redo` times
    what the candidate would prefill beyond the best prefix holder (work that holder has cached, which
    delays the requests after it there); ties (an idle fleet that holds nothing of the prompt) go by the
    cache-aware score."""
    redone = {c.id: uncached(c, request, weights) for c in candidates}
    fewest = min(redone.values())
    delay = {
        c.id: prefill_ahead(c, request, weights) + weights.redo * (redone[c.id] - fewest) for c in candidates
    }
    least = min(delay.values())
    return pick(
        Strategy.CACHE_AWARE, [c for c in candidates if delay[c.id] <= least + 1e-9], request, rng, 0, weights
    )


def pick_or_hold(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    request: Request,
    rng: random.Random,
    flow: FlowControl,
    turn: int = 0,
    weights: ScoreWeights = ScoreWeights(),
) -> Candidate | NoDeployment:
    """`pick` under flow control: SATURATED when the gateway should hold the request. cache_aware holds it
    while the candidate where it delays first tokens least (`least_delay`) is saturated: sent to one with
    room, it would by the estimate answer no sooner than held, or it would prefill what its prefix holder
    has cached, work that delays the requests after it by more than it gains; the other strategies pick
    among the unsaturated candidates."""
    if strategy is Strategy.CACHE_AWARE:
        first = least_delay(candidates, request, rng, weights)
        return NoDeployment(Unavailable.SATURATED) if saturated(first, flow) else first
    free = unsaturated(candidates, flow)
    return free if isinstance(free, NoDeployment) else pick(strategy, free, request, rng, turn, weights)


class PrefixIndex:
    """Which prefix blocks each deployment most likely holds: the blocks of the prompts recently routed
    to it, forgotten least recently used first past `capacity` blocks per deployment (a replica's cache
    is finite too). Approximate: it does not see a replica's own evictions."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._held: dict[str, OrderedDict[int, None]] = {}

    def held(self, deployment: str, blocks: Sequence[int]) -> int:
        """How many of `blocks` (chained hashes, in prompt order) the deployment holds from the start."""
        cache = self._held.get(deployment)
        count = 0
        for block in blocks:
            if cache is None or block not in cache:
                break
            count += 1
        return count

    def routed(self, deployment: str, blocks: Sequence[int]) -> None:
        cache = self._held.setdefault(deployment, OrderedDict())
        for block in blocks:
            cache[block] = None
            cache.move_to_end(block)
        while len(cache) > self.capacity:
            cache.popitem(last=False)

    def forget(self, deployment: str) -> None:
        """The deployment left the fleet (or came back empty)."""
        self._held.pop(deployment, None)


def prompt_blocks(text: str, block_chars: int = 256) -> list[int]:
    """The prompt's prefix blocks as chained hashes: block i's hash covers blocks 0..i, so two prompts
    share a block hash only if they share everything up to it. Only whole blocks count (as in a KV
    cache); stable across processes, so every API process and worker agree."""
    hashes: list[int] = []
    previous = b""
    for start in range(0, len(text) - block_chars + 1, block_chars):
        block = text[start : start + block_chars].encode()
        digest = hashlib.blake2b(previous + block, digest_size=8).digest()
        hashes.append(int.from_bytes(digest, "big"))
        previous = digest
    return hashes
