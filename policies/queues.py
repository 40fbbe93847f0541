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

from sim.core import Request

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
    """Lowest ``Request.priority`` first, then earliest arrival; ties keep insertion order."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, Request]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Request]:
        return (entry[3] for entry in sorted(self._heap))

    def push(self, request: Request) -> None:
        heapq.heappush(self._heap, (request.priority, request.arrival_time, next(self._seq),
                                    request))

    def push_preempted(self, request: Request) -> None:
        """Keyed by its own priority and arrival, so it regains its place, not the head."""
        self.push(request)

    def peek(self) -> Request:
        return self._heap[0][3]

    def pop(self) -> Request:
        return heapq.heappop(self._heap)[3]

    @staticmethod
    def victim_key(request: Request, position: int) -> tuple:
        """The least urgent running request (highest priority value, latest arrival) goes first."""
        return (request.priority, request.arrival_time, position)


def make_queue(order: str) -> FcfsQueue | PriorityQueue:
    if order == "fcfs":
        return FcfsQueue()
    if order == "priority":
        return PriorityQueue()
    raise ValueError(f"scheduler.order: unknown '{order}'; allowed: {', '.join(ORDERS)}")
