"""Parsing one row's fields: token counts, times, block hash ids, arrival order.

Every parser raises ``BadField`` (``field: problem``); the format's reader adds the file and line.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sim.traces.rows import BadField
from sim.workload import MAX_TOKENS

NAMESPACE_BITS = 32  # a file's local hash ids must stay below 2**32 to be made globally unique


def _field(row: dict, name: str) -> Any:
    value = row.get(name)
    if value is None or value == "":
        raise BadField(f"{name}: missing field")
    return value


def parse_tokens(row: dict, name: str) -> int:
    """A token count: an integer >= 1 (``"12"``, ``12`` and ``"12.0"`` are accepted)."""
    raw = _field(row, name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadField(f"{name}: not a number {raw!r}") from None
    if isinstance(raw, bool) or not value.is_integer():
        raise BadField(f"{name}: not an integer {raw!r}")
    if value < 0:
        raise BadField(f"{name}: negative length {int(value)}")
    if value == 0:
        raise BadField(f"{name}: zero length (a request needs at least 1 token)")
    if value > MAX_TOKENS:  # corrupt: no model's context is near; never priced or stored
        raise BadField(f"{name}: {raw} tokens is beyond any model's context (at most "
                       f"{MAX_TOKENS}, the int32 limit of serving engines)")
    return int(value)


def parse_seconds(row: dict, name: str, scale: float = 1.0) -> float:
    raw = _field(row, name)
    try:
        value = float(raw) * scale
    except (TypeError, ValueError):
        raise BadField(f"{name}: not a number {raw!r}") from None
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0:
        raise BadField(f"{name}: must be a time >= 0 (got {raw!r})")
    return value


_EPOCH = datetime(1970, 1, 1)


def parse_timestamp_s(row: dict, name: str) -> float:
    """Seconds from a number or an ISO date-time (Azure: ``2023-11-16 18:17:03.9799600``)."""
    raw = _field(row, name)
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise BadField(f"{name}: not a finite time {raw!r}")
        return value
    try:
        stamp = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise BadField(f"{name}: not a date-time or a number {raw!r}") from None
    if stamp.tzinfo is not None:  # 2024 files may carry +00:00; compare everything in UTC
        stamp = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    return (stamp - _EPOCH).total_seconds()


def parse_hash_ids(row: dict, prompt_tokens: int, block_tokens: int, whole_blocks: bool,
              namespace: int = 0) -> tuple[int, ...]:
    ids = row.get("hash_ids")
    if not isinstance(ids, list) or (ids and (set(map(type, ids)) != {int} or min(ids) < 0)):
        raise BadField("hash_ids: missing or not a list of non-negative integers")
    limit = prompt_tokens // block_tokens if whole_blocks else -(-prompt_tokens // block_tokens)
    if len(ids) > limit:
        rule = "floor" if whole_blocks else "ceil"
        raise BadField(f"hash_ids: {len(ids)} blocks for {prompt_tokens} tokens; at most "
                   f"{limit} ({rule}(tokens / {block_tokens}))")
    if not namespace:
        return tuple(ids)
    if ids and max(ids) >= 1 << NAMESPACE_BITS:
        raise BadField(f"hash_ids: id {max(ids)} too large to be made unique (limit 2**32)")
    return tuple(map((namespace << NAMESPACE_BITS).__add__, ids))


class TimeOrder:
    """Checks that arrival times never go back; equal times are fine (Mooncake has many)."""

    def __init__(self, name: str):
        self.name, self.last, self.last_raw = name, -math.inf, None

    def check(self, t: float, row: dict) -> None:
        raw = row[self.name]  # shown as the file writes it (ms for Mooncake, a date for Azure)
        if t < self.last:
            raise BadField(f"{self.name}: {raw} is earlier than the previous row's {self.last_raw} "
                       "(the trace must be sorted by time)")
        self.last, self.last_raw = t, raw
