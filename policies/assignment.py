"""A/B experiment assignment: which arm (assistant version) a user sees, sticky by a hash of the user.

An experiment splits an assistant's users between two or more arms, each serving one immutable version.
Every user gets one uniform bucket in [0, 1) from sha256(assistant, experiment, user); the arms occupy
consecutive ranges of the unit interval in the order they are given, each as wide as its share of the
total. A user sees the arm whose range holds their bucket, so the same user keeps the same arm for as long
as the arms (their order and shares) stay the same, on every worker and in every process.

Shares are non-negative whole numbers read as relative weights: percent (summing to 100) is the usual
choice, but any positive total works (basis points summing to 10,000, or 1:1:2) and is normalised, so an
arm's share of traffic is `share / sum(shares)`. An arm with share 0 gets nobody.

What moves when shares change (the arm order must stay fixed for the life of an experiment): a user moves
exactly when their bucket lies in a different arm's range under the new shares than under the old ones;
`moves(old, new)` gives those fractions before the change is made. In particular:

- With two arms, changing the shares moves only users from the shrinking arm into the growing one, and
  exactly the difference in share: 50/50 → 80/20 moves 30% of all users, from the second arm to the first.
- With more arms, moving share between two *neighbouring* arms (others unchanged) moves only users between
  those two. Otherwise an arm's range starts where the previous arms' ranges end, so a change to an earlier
  arm shifts every later boundary: 34/33/33 → 50/25/25 moves 16% from the second arm to the first *and*
  8% from the third to the second, although the third arm only shrank. Put the arm you expect to grow or
  shrink next to the arm that gives or takes its traffic.
- Reordering the arms, adding or removing an arm with a non-zero share, or changing the experiment id
  reshuffles users; changing an arm's version keeps its users but shows them the new version.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from policies.errors import PermanentError

# The bucket is the first 53 bits of the digest (a float holds 53 bits exactly, so it is never 1.0).
_BUCKET_BITS = 53
_SEPARATOR = "\x1f"  # ASCII unit separator: the canonical encoding is "\x1f".join(parts), as UTF-8


class InvalidArms(PermanentError, ValueError):
    """An experiment's arms can't be used; the message says which arm and what is wrong."""


@dataclass(frozen=True)
class Arm:
    """One side of an experiment: a label ("control", "treatment", ...), the assistant version it serves
    ("v2") and its share of the traffic, a whole number ≥ 0 relative to the other arms' shares."""

    name: str
    version: str
    share: int


def _hash53(assistant_id: str, experiment_id: str, user: str) -> int:
    parts = (assistant_id, experiment_id, user)
    for label, part in zip(("assistant_id", "experiment_id", "user"), parts, strict=True):
        if _SEPARATOR in part:
            raise ValueError(f"{label} {part!r} contains the separator \\x1f, which ids may not contain")
    digest = hashlib.sha256(_SEPARATOR.join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _BUCKET_BITS)


def bucket(assistant_id: str, experiment_id: str, user: str) -> float:
    """The user's uniform position in [0, 1) for this experiment: the first 53 bits of
    sha256("{assistant_id}\\x1f{experiment_id}\\x1f{user}" as UTF-8) ÷ 2^53. The same in every process
    (Python's hash() is never used); a different experiment id gives an independent position. Raises
    ValueError if a part contains "\\x1f" (two different triples could then encode alike)."""
    return _hash53(assistant_id, experiment_id, user) / (1 << _BUCKET_BITS)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_arms(arms: Sequence[Arm]) -> None:
    """Raise InvalidArms, saying what is wrong, unless `arms` can run an experiment: at least one arm,
    non-empty unique names, a version for each, whole-number shares ≥ 0, and not all of them 0."""
    if not arms:
        raise InvalidArms("an experiment needs at least one arm")
    seen: set[str] = set()
    for index, arm in enumerate(arms):
        if not isinstance(arm.name, str) or not arm.name:
            raise InvalidArms(f"arm {index} has no name; give every arm a label such as 'control'")
        if arm.name in seen:
            raise InvalidArms(f"arm name {arm.name!r} appears more than once; arm names must be unique")
        seen.add(arm.name)
        if not isinstance(arm.version, str) or not arm.version:
            raise InvalidArms(f"arm {arm.name!r} has no version; say which assistant version it serves")
        if not _is_int(arm.share):
            raise InvalidArms(f"arm {arm.name!r} has share {arm.share!r}; shares must be whole numbers")
        if arm.share < 0:
            raise InvalidArms(
                f"arm {arm.name!r} has a negative share ({arm.share}); shares must be 0 or more"
            )
    if sum(arm.share for arm in arms) == 0:
        raise InvalidArms("every arm has share 0; at least one arm needs a share above 0")


def expected_shares(arms: Sequence[Arm]) -> dict[str, float]:
    """Each arm's fraction of users, share ÷ total, by arm name (in arm order; sums to 1)."""
    validate_arms(arms)
    total = sum(arm.share for arm in arms)
    return {arm.name: arm.share / total for arm in arms}


def assign(arms: Sequence[Arm], assistant_id: str, experiment_id: str, user: str) -> Arm:
    """The arm this user sees: the one whose range of [0, 1) (arms laid end to end in the given order,
    each share ÷ total wide) holds `bucket(assistant_id, experiment_id, user)`. Computed in exact integer
    arithmetic, so boundaries fall exactly on the shares. Raises InvalidArms as `validate_arms` does."""
    validate_arms(arms)
    total = sum(arm.share for arm in arms)
    # arm i holds the users with  cumulative_before(i) ≤ bucket × total < cumulative_through(i)
    point = _hash53(assistant_id, experiment_id, user) * total
    cumulative = 0
    for arm in arms:
        cumulative += arm.share
        if point < cumulative << _BUCKET_BITS:
            return arm
    raise AssertionError("unreachable: bucket < 1 always lands in an arm")  # pragma: no cover


def _ranges(arms: Sequence[Arm]) -> list[tuple[str, Fraction, Fraction]]:
    validate_arms(arms)
    total = sum(arm.share for arm in arms)
    ranges: list[tuple[str, Fraction, Fraction]] = []
    start = 0
    for arm in arms:
        ranges.append((arm.name, Fraction(start, total), Fraction(start + arm.share, total)))
        start += arm.share
    return ranges


def moves(old: Sequence[Arm], new: Sequence[Arm]) -> dict[tuple[str, str], float]:
    """What changing an experiment's arms from `old` to `new` does to its users: the fraction of all users
    that move from arm `a` to arm `b` (matched by name), keyed `(a, b)`, for every pair with a move. Users
    not listed stay in their arm; an empty dict means nobody moves. Raises InvalidArms for either side."""
    result: dict[tuple[str, str], float] = {}
    new_ranges = _ranges(new)
    for old_name, old_start, old_end in _ranges(old):
        for new_name, new_start, new_end in new_ranges:
            overlap = min(old_end, new_end) - max(old_start, new_start)
            if old_name != new_name and overlap > 0:
                result[(old_name, new_name)] = float(overlap)
    return result
