"""The order in which the gateway sends the requests it holds (flow control): first come first served
within a tenant, the tenants in turn (round robin), so a tenant that floods a model cannot starve
another's requests. Bounded: when it is full, the tenant holding the most gives up its newest request
to a tenant holding fewer (or the newcomer is refused when its tenant already holds the most).

Pure: no clock, no I/O; the items are whatever the caller holds (the gateway's waiting requests).
"""

from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FairQueue(Generic[Item]):
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a fair queue holds at least one item")
        self.capacity = capacity
        self._lanes: dict[str, deque[Item]] = {}  # by tenant, oldest first
        self._turn: deque[str] = deque()  # tenants with items, the next to send first
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def held_by(self, tenant: str) -> int:
        return len(self._lanes.get(tenant, ()))

    def add(self, tenant: str, item: Item) -> Item | None:
        """Hold `item` for `tenant`; returns the item refused to make it fit (the newcomer itself, or the
        newest of the tenant holding the most), or None when everything fits."""
        refused: Item | None = None
        if self._size >= self.capacity:
            biggest = max(self._lanes, key=lambda t: len(self._lanes[t]))
            if len(self._lanes[biggest]) <= self.held_by(tenant) + 1:
                return (
                    item  # its tenant already holds (about) the most: the newcomer waits its turn elsewhere
                )
            refused = self._lanes[biggest].pop()
            self._size -= 1
            self._drop_if_empty(biggest)
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = deque()
            self._turn.append(tenant)
        lane.append(item)
        self._size += 1
        return refused

    def tenants(self) -> list[str]:
        """The tenants holding items, the next to send first."""
        return list(self._turn)

    def oldest_of(self, tenant: str) -> Item | None:
        """The tenant's item that has waited longest, left in place."""
        lane = self._lanes.get(tenant)
        return lane[0] if lane else None

    def peek(self) -> Item | None:
        """The item whose turn it is, left in place."""
        return self._lanes[self._turn[0]][0] if self._turn else None

    def pop(self) -> Item:
        """Take the item whose turn it is; its tenant goes to the back of the turn."""
        tenant = self._turn.popleft()
        item = self._lanes[tenant].popleft()
        self._size -= 1
        if self._lanes[tenant]:
            self._turn.append(tenant)
        else:
            del self._lanes[tenant]
        return item

    def in_turn(self) -> list[tuple[str, Item]]:
        """Every held item with its tenant, in the order `pop` would take them."""
        lanes = {tenant: iter(lane) for tenant, lane in self._lanes.items()}
        turn = deque(self._turn)
        order: list[tuple[str, Item]] = []
        while turn:
            tenant = turn.popleft()
            item = next(lanes[tenant], None)
            if item is not None:
                order.append((tenant, item))
                turn.append(tenant)
        return order

    def take(self, tenant: str, item: Item) -> None:
        """Take `item` before its turn (those before it could not go yet); its tenant goes to the back of
        the turn, as after `pop`."""
        if not self.remove(tenant, item):
            raise ValueError("the item is not held")
        if tenant in self._lanes:
            self._turn.remove(tenant)
            self._turn.append(tenant)

    def remove(self, tenant: str, item: Item) -> bool:
        """Take `item` out before its turn (it gave up waiting); False when it is not held."""
        lane = self._lanes.get(tenant)
        if lane is None or item not in lane:
            return False
        lane.remove(item)
        self._size -= 1
        self._drop_if_empty(tenant)
        return True

    def _drop_if_empty(self, tenant: str) -> None:
        if not self._lanes[tenant]:
            del self._lanes[tenant]
            self._turn.remove(tenant)
