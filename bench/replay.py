"""Replays traces with prompt-prefix structure (Mooncake's format): each record becomes a request whose
prompt reproduces its block hashes, so prefix sharing in the trace is prefix sharing at the replicas.

A record is `{"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [...]}`; the
prompt is one block of `block_tokens` words per hash id (the same words for the same id, everywhere),
cut to `input_length` words. Any trace in this format replays unchanged; `block_tokens` is the trace's
block size (Mooncake's is 512).
"""

import functools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOONCAKE_BLOCK_TOKENS = 512
_WORDS = (
    "the a of to and in is it that was for on are with as be at by this had not but from or have "
    "an they which one you were all we when there can more if no out so said what up its about into "
    "than them only other new some time could these two may first then do any like my now over such "
    "our man me even most made after also"
).split()
MAX_RECORD_TOKENS = 1_000_000  # a record asking for more is refused: a replay must not exhaust memory


class TraceError(ValueError):
    """A trace file that is not in the format, with the line that is not."""


@dataclass(frozen=True)
class TraceRequest:
    at_s: float  # seconds after the trace's start
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]


def read_prefix_trace(path: Path, limit: int | None = None) -> list[TraceRequest]:
    """The trace's records in order of time (at most `limit`)."""
    records: list[TraceRequest] = []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if limit is not None and len(records) >= limit:
                break
            try:
                raw = json.loads(line)
                record = TraceRequest(
                    at_s=float(raw["timestamp"]) / 1000,
                    input_tokens=int(raw["input_length"]),
                    output_tokens=int(raw["output_length"]),
                    hash_ids=tuple(int(h) for h in raw["hash_ids"]),
                )
            except (ValueError, KeyError, TypeError) as err:
                raise TraceError(f"{path}:{number}: not a trace record ({err!r})") from None
            if not (
                0 < record.input_tokens <= MAX_RECORD_TOKENS
                and 0 <= record.output_tokens <= MAX_RECORD_TOKENS
            ):
                raise TraceError(
                    f"{path}:{number}: input_length and output_length must be 1-{MAX_RECORD_TOKENS}"
                )
            records.append(record)
    return sorted(records, key=lambda r: r.at_s)


@functools.lru_cache(maxsize=8192)
def _block(hash_id: int, block_tokens: int) -> str:
    rng = random.Random(hash_id)
    return " ".join(rng.choice(_WORDS) for _ in range(block_tokens))


def prompt(record: TraceRequest, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> str:
    """The prompt of `record`: its blocks' words in order, `input_tokens` words in all (a block past the
    hash ids, if the record asks for more, is filler no other prompt shares)."""
    words: list[str] = []
    for hash_id in record.hash_ids:
        words.extend(_block(hash_id, block_tokens).split())
        if len(words) >= record.input_tokens:
            break
    while len(words) < record.input_tokens:
        words.extend(_block(-1 - len(words) - hash(record.hash_ids), block_tokens).split())
    return " ".join(words[: record.input_tokens])


def shared_prefix_bound(records: list[TraceRequest]) -> float:
    """The share of prompt blocks whose whole prefix an earlier request already had: the hit rate of an
    infinite prefix cache shared by every replica (the trace's upper bound)."""
    prefixes: dict[tuple[int, int], int] = {}  # (the prefix before it, block id) -> this prefix
    hits = total = 0
    for record in records:
        parent = -1
        for hash_id in record.hash_ids:
            total += 1
            key = (parent, hash_id)
            if key in prefixes:
                hits += 1
            else:
                prefixes[key] = len(prefixes)
            parent = prefixes[key]
    return hits / total if total else 0.0


def schedule(records: list[TraceRequest], speed: float) -> Iterator[tuple[float, TraceRequest]]:
    """(seconds after the replay's start, record), the trace's time divided by `speed`."""
    start = records[0].at_s if records else 0.0
    for record in records:
        yield (record.at_s - start) / speed, record
