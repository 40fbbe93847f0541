"""The order in which waiting requests are admitted: first come first served, or by priority.

A queue also decides who is preempted first when the KV pool runs out, because the two are one
decision seen from both ends: the request that would be admitted last is the one to give up its
place first (vLLM v1 does the same for its ``fcfs`` and ``priority`` policies).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator

from core import Request

ORDERS = ("fcfs", "priority")


class FcfsQueue:
    """Arrival order; a preempted request goes back to the head, ahead of newer arrivals."""

    def __init__(self) -> None:
        self._q: deque[Request] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self) -> Iterator[Request]:
        return iter(self._q)

    def push(self, request: Request) -> None:
        self._q.append(request)

    def push_preempted(self, request: Request) -> None:
        self._q.appendleft(request)

    def peek(self) -> Request:
        return self._q[0]

    def pop(self) -> Request:
        return self._q.popleft()

    @staticmethod
    def victim_key(request: Request, position: int) -> tuple:
        """The running request admitted last (highest position) is preempted first."""
        return (position,)


class PriorityQueue:
    """Lowest ``Request.priority`` first, then earliest arrival; ties keep insertion order.

    ``aging_per_s`` > 0 lets waiting raise urgency: a request's priority drops by
    ``aging_per_s`` for each second it has waited, so none starves behind a stream of more
    urgent arrivals. Every waiting request ages at the same rate, so the order at any instant
    ``now`` (by ``priority - aging_per_s * (now - arrival)``) is the order by the fixed key
    ``priority + aging_per_s * arrival``: the heap never needs re-sorting.
    """

    def __init__(self, aging_per_s: float = 0.0) -> None:
        if not 0.0 <= aging_per_s < float("inf"):
            raise ValueError(f"scheduler.priority_aging_per_s: must be >= 0 (got {aging_per_s})")
        self.aging_per_s = aging_per_s
        self._heap: list[tuple[float, float, int, Request]] = []
        self._seq = itertools.count()

    def _urgency(self, request: Request) -> float:
        """Lower is more urgent: the priority less what waiting has earned, up to a constant."""
        return request.priority + self.aging_per_s * request.arrival_time

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (entry[3] for entry in sorted(self._heap))

    def push(self, request: Request) -> None:
        heapq.heappush(self._heap, (self._urgency(request), request.arrival_time,
                                    next(self._seq), request))

    def push_preempted(self, request: Request) -> None:
        """Keyed by its own priority and arrival, so it regains its place, not the head."""
        self.push(request)

    def peek(self) -> Request:
        return self._heap[0][3]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[3]

    def victim_key(self, request: Request, position: int) -> tuple:
        """The least urgent running request (highest priority value, latest arrival) goes first."""
        return (self._urgency(request), request.arrival_time, position)


def make_queue(order: str, priority_aging_per_s: float = 0.0) -> FcfsQueue | PriorityQueue:
    if order == "fcfs":
        if priority_aging_per_s:
            raise ValueError("scheduler.priority_aging_per_s: applies to order 'priority' only "
                             f"(order is 'fcfs', aging {priority_aging_per_s})")
        return FcfsQueue()
    if order == "priority":
        return PriorityQueue(priority_aging_per_s)
    raise ValueError(f"scheduler.order: unknown '{order}'; allowed: {', '.join(ORDERS)}")
