"""The host swap space by hand: bytes, PCIe seconds, capacity and the refusals. Written for the
mutants of ``policies/swap.py`` that the scheduler-level tests let through (docs/testing.md)."""

from __future__ import annotations

import pytest

from policies.swap import SwapSpace, SwapTimeExecutor
from sim.core import Batch, Request, StepResult


def _computed(rid: int, tokens: int) -> Request:
    return Request(rid, 0.0, tokens, 4, num_computed_tokens=tokens)


def test_swaps_move_bytes_and_charge_pcie_seconds():
    space = SwapSpace(capacity_bytes=1000.0, kv_bytes_per_token=10.0, host_bw_bytes_s=100.0)
    a, b = _computed(0, 60), _computed(1, 50)  # 600 and 500 bytes
    assert space.fits(a) and space.fits(b)
    space.swap_out(a)
    assert space.holds(a) and space.used_bytes == 600.0 and not space.fits(b)  # 1100 > 1000
    assert a.kv_transfer_time == pytest.approx(6.0)  # 600 B at 100 B/s
    assert space.take_pending_s() == pytest.approx(6.0) and space.take_pending_s() == 0.0
    space.swap_in(a)
    assert not space.holds(a) and space.used_bytes == 0.0 and space.fits(b)
    assert a.kv_transfer_time == pytest.approx(12.0)
    s = space.stats
    assert (s.swap_outs, s.swap_ins, s.swapped_out_bytes, s.swapped_in_bytes) == (1, 1, 600, 600)
    assert s.swap_time_s == pytest.approx(12.0)
    exactly = SwapSpace(capacity_bytes=500.0, kv_bytes_per_token=10.0, host_bw_bytes_s=1.0)
    assert exactly.fits(b)  # 500 bytes fill 500 exactly


def test_a_step_lasts_its_swaps_too():
    class Fixed:
        def run(self, batch):
            return StepResult(0.5, [1])

    space = SwapSpace(capacity_bytes=1e6, kv_bytes_per_token=2.0, host_bw_bytes_s=4.0)
    executor = SwapTimeExecutor(Fixed(), space)
    assert executor.run(Batch([], [], [])).seconds == 0.5
    space.swap_out(_computed(0, 8))  # 16 bytes at 4 B/s
    result = executor.run(Batch([], [], []))
    assert result.seconds == pytest.approx(4.5) and result.accepted_draft_tokens == [1]


@pytest.mark.parametrize(("capacity", "per_token", "bandwidth"),
                         [(-1.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (1.0, -1.0, 1.0)])
def test_bad_sizes_are_a_one_line_error(capacity, per_token, bandwidth):
    with pytest.raises(ValueError, match="^kv_cache.swap_space_gb: needs capacity >= 0, and KV "
                                         "bytes per token and host bandwidth > 0$"):
        SwapSpace(capacity, per_token, bandwidth)


def test_small_but_valid_sizes_are_accepted():
    for capacity, per_token, bandwidth in [(0.0, 1.0, 1.0), (0.5, 0.5, 0.5)]:
        SwapSpace(capacity, per_token, bandwidth)


def test_two_swaps_add_up():
    space = SwapSpace(capacity_bytes=2000.0, kv_bytes_per_token=10.0, host_bw_bytes_s=100.0)
    a, b = _computed(0, 60), _computed(1, 50)
    space.swap_out(a)
    space.swap_out(b)
    assert space.used_bytes == 1100.0 and space.take_pending_s() == pytest.approx(11.0)
    space.swap_in(a)
    space.swap_in(b)
    s = space.stats
    assert (s.swap_outs, s.swap_ins, s.swapped_out_bytes, s.swapped_in_bytes) == (2, 2, 1100, 1100)


def test_the_wrapper_passes_other_attributes_through():
    class Inner:
        trace = ["step"]

        def run(self, batch):
            return StepResult(1.0)

    wrapped = SwapTimeExecutor(Inner(), SwapSpace(0.0, 1.0, 1.0))
    assert wrapped.trace == ["step"]
    with pytest.raises(AttributeError):
        _ = wrapped.missing
