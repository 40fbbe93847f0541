"""Schedulers step by step on small hand-worked cases, driven by a fake executor.

Each test drives a scheduler directly (schedule, a fixed-duration step, update) and checks the
composition of every batch: which requests, how many new tokens, on how much cached context.
"""

from __future__ import annotations

import pytest

from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator
from policies.static import StaticScheduler
from policies.swap import SwapSpace, SwapTimeExecutor
from sim.core import Request, StepResult

STEP_S = 0.01


class Driver:
    """Runs a scheduler with a fake executor whose every step lasts ``STEP_S``."""

    def __init__(self, scheduler):
        self.sched = scheduler
        self.now = 0.0

    def add(self, *requests: Request) -> None:
        for r in requests:
            assert self.sched.add_request(r, self.now)

    def step(self) -> list[tuple[int, int, int]] | None:
        """One iteration; the batch as (request id, new tokens, context tokens) triples."""
        batch = self.sched.schedule(self.now)
        if batch is None:
            return None
        self.now += STEP_S
        self.sched.update(batch, StepResult(STEP_S), self.now)
        return [(r.request_id, n, c) for r, n, c in
                zip(batch.requests, batch.new_tokens, batch.context_tokens, strict=True)]

    def run(self) -> list[list[tuple[int, int, int]]]:
        steps = []
        while self.sched.has_unfinished():
            steps.append(self.step())
        return steps


def req(rid: int, prompt: int, output: int, **kw) -> Request:
    return Request(rid, 0.0, prompt, output, **kw)


def test_continuous_runs_prefills_alone_and_stalls_decodes():
    d = Driver(ContinuousScheduler(PagedAllocator(100, 16), max_num_batched_tokens=100))
    a, b, c = req(0, 30, 3), req(1, 50, 2), req(2, 80, 2)
    d.add(a, b)
    assert d.step() == [(0, 30, 0), (1, 50, 0)]  # both prompts fit the 100-token budget
    assert d.step() == [(0, 1, 30), (1, 1, 50)]
    assert b.finish_time is not None and d.sched.num_running == 1
    d.add(c)
    assert d.step() == [(2, 80, 0)]  # the new prompt runs alone: A's decode waits a step
    assert d.step() == [(0, 1, 31), (2, 1, 80)]
    assert not d.sched.has_unfinished() and d.sched.allocator.num_blocks_used() == 0


def test_continuous_prompt_larger_than_budget_runs_alone():
    d = Driver(ContinuousScheduler(PagedAllocator(100, 16), max_num_batched_tokens=64))
    d.add(req(0, 100, 1), req(1, 10, 1))
    assert d.step() == [(0, 100, 0)]
    assert d.step() == [(1, 10, 0)]


def test_chunked_prompt_is_interleaved_with_decodes():
    d = Driver(ChunkedPrefillScheduler(PagedAllocator(100, 16), max_num_batched_tokens=64))
    a, b = req(0, 10, 4), req(1, 100, 2)
    d.add(a)
    assert d.step() == [(0, 10, 0)]
    d.add(b)
    assert d.step() == [(0, 1, 10), (1, 63, 0)]  # the decode first, the chunk fills the rest
    assert b.num_output_tokens == 0 and b.first_token_time is None  # a chunk emits nothing
    assert d.step() == [(0, 1, 11), (1, 37, 63)]
    assert b.num_output_tokens == 1 and b.first_token_time == pytest.approx(3 * STEP_S)
    assert d.step() == [(0, 1, 12), (1, 1, 100)]
    assert a.num_output_tokens == 4 and b.num_output_tokens == 2
    assert not d.sched.has_unfinished()


def test_chunk_size_caps_a_prompt_per_step():
    d = Driver(ChunkedPrefillScheduler(PagedAllocator(100, 16), max_num_batched_tokens=64,
                                       chunk_size=32))
    d.add(req(0, 10, 4))
    d.step()
    d.add(req(1, 100, 2))
    assert d.run() == [
        [(0, 1, 10), (1, 32, 0)],
        [(0, 1, 11), (1, 32, 32)],
        [(0, 1, 12), (1, 32, 64)],
        [(1, 4, 96)],
        [(1, 1, 100)],
    ]


def test_chunked_decodes_beyond_the_budget_wait_their_turn():
    d = Driver(ChunkedPrefillScheduler(PagedAllocator(100, 16), max_num_batched_tokens=2))
    d.add(req(0, 1, 3), req(1, 1, 3), req(2, 1, 3))
    assert d.step() == [(0, 1, 0), (1, 1, 0)]  # two slots of budget, the third waits
    assert d.step() == [(0, 1, 1), (1, 1, 1)]  # decodes come before the waiting prompt
    assert d.step() == [(0, 1, 2), (1, 1, 2)]
    assert d.step() == [(2, 1, 0)]


@pytest.mark.parametrize("prompt, expected_second", [
    (60, [(0, 1, 10), (1, 60, 0)]),  # fits the 63 tokens left: joins the decode
    (64, [(0, 1, 10)]),  # does not fit, is not cut: waits
    (100, [(0, 1, 10), (1, 100, 0)]),  # larger than any budget: runs with no other prompt
])
def test_unsplit_prompts_wait_for_room(prompt, expected_second):
    d = Driver(ChunkedPrefillScheduler(PagedAllocator(100, 16), max_num_batched_tokens=64,
                                       split_prompts=False))
    d.add(req(0, 10, 4))
    d.step()
    d.add(req(1, prompt, 1))
    assert d.step() == expected_second


def test_unsplit_prompt_waits_until_decodes_leave_room():
    d = Driver(ChunkedPrefillScheduler(PagedAllocator(100, 16), max_num_batched_tokens=64,
                                       split_prompts=False))
    d.add(req(0, 10, 4))
    d.step()
    d.add(req(1, 64, 1))
    assert d.run() == [[(0, 1, 10)], [(0, 1, 11)], [(0, 1, 12)], [(1, 64, 0)]]


def test_continuous_with_chunk_size_fills_long_prompts_before_decodes():
    """SGLang's default: prefill-only steps, a long prompt chunked, decodes after it."""
    d = Driver(ContinuousScheduler(PagedAllocator(100, 16), max_num_batched_tokens=64,
                                   chunk_size=64))
    d.add(req(0, 10, 3))
    d.step()
    d.add(req(1, 100, 2))
    assert d.run() == [[(1, 64, 0)], [(1, 36, 64)], [(0, 1, 10), (1, 1, 100)], [(0, 1, 11)]]


def test_static_batch_carries_finished_members_as_padding():
    alloc = PagedAllocator(100, 4)
    sched = StaticScheduler(alloc)
    d = Driver(sched)
    a, b = req(0, 10, 3), req(1, 20, 1)
    d.add(a, b)
    assert d.step() == [(0, 10, 0), (1, 20, 0)]
    assert b.finish_time is not None
    batch = sched.schedule(d.now)
    assert batch.padding == [False, True]
    assert alloc.num_blocks_used() == 4 + 6  # final lengths reserved; B keeps its KV till the end
    d.step()
    d.step()
    assert a.finish_time is not None and alloc.num_blocks_used() == 0


def test_fcfs_and_priority_orders():
    def order(policy: str) -> list[int]:
        d = Driver(ContinuousScheduler(PagedAllocator(100, 16), max_num_seqs=1, order=policy))
        d.add(Request(0, 0.0, 8, 1, priority=5), Request(1, 0.1, 8, 1, priority=1),
              Request(2, 0.2, 8, 1, priority=1))
        return [s[0][0] for s in d.run()]

    assert order("fcfs") == [0, 1, 2]
    assert order("priority") == [1, 2, 0]


def _served_step_of_a_lax_request(aging_per_s: float, steps: int = 40) -> int | None:
    """One slot; a lax request (priority 3) waits from t=0 while an urgent one (priority 0)
    arrives every step: the step at which the lax one is served, or None if never."""
    d = Driver(ContinuousScheduler(PagedAllocator(100, 16), max_num_seqs=1, order="priority",
                                   priority_aging_per_s=aging_per_s))
    d.add(Request(0, 0.0, 4, 1, priority=3))
    for k in range(steps):
        d.add(Request(k + 1, d.now, 4, 1, priority=0))
        if d.step() == [(0, 4, 0)]:
            return k
    return None


def test_priority_without_aging_starves_and_aging_bounds_the_wait():
    """Without aging the lax request waits for as long as urgent ones keep coming. With aging
    a, it has earned its 3 levels after 3 / a seconds: it is served at the first step k whose
    newest urgent arrival (at k x STEP_S) is less urgent, k = ceil(3 / (a x STEP_S)): 9 for
    a = 0.35 / STEP_S, 24 for a = 0.13 / STEP_S (rates with no tie at the boundary)."""
    assert _served_step_of_a_lax_request(0.0) is None
    assert _served_step_of_a_lax_request(0.35 / STEP_S) == 9
    assert _served_step_of_a_lax_request(0.13 / STEP_S) == 24
    with pytest.raises(ValueError, match="scheduler.priority_aging_per_s"):
        ContinuousScheduler(PagedAllocator(10, 16), order="fcfs", priority_aging_per_s=1.0)
    with pytest.raises(ValueError, match="scheduler.priority_aging_per_s: must be >= 0"):
        ContinuousScheduler(PagedAllocator(10, 16), order="priority", priority_aging_per_s=-1)


def test_aging_also_orders_preemption_victims():
    """The request that would wait longest is preempted first: with aging, an old lax request
    outranks a fresh urgent one, so the fresh one gives up its blocks."""
    alloc = PagedAllocator(5, 4)
    d = Driver(ContinuousScheduler(alloc, order="priority", priority_aging_per_s=10.0))
    old_lax, fresh_urgent = Request(0, -1.0, 8, 6, priority=5), Request(1, 0.0, 8, 6, priority=0)
    d.add(old_lax, fresh_urgent)  # urgency: 5 - 10 = -5 against 0
    d.step()
    d.step()  # both need a third block: one more than the pool has
    assert fresh_urgent.preemptions == 1 and old_lax.preemptions == 0


def test_priority_preempts_the_least_urgent_running_request():
    alloc = PagedAllocator(5, 4)
    d = Driver(ContinuousScheduler(alloc, order="priority"))
    urgent, lax = Request(0, 0.0, 8, 6, priority=0), Request(1, 0.0, 8, 6, priority=9)
    d.add(lax, urgent)
    d.step()  # both prefilled: 4 blocks
    d.step()  # both need a third block: one more than the pool has
    assert lax.preemptions == 1 and urgent.preemptions == 0


def _preemption_case(scheduler):
    """Pool of 6 four-token blocks; two 8-token prompts generating 10 tokens each."""
    d = Driver(scheduler)
    a, b = req(0, 8, 10), req(1, 8, 10)
    d.add(a, b)
    return d, a, b


def test_recompute_preemption_step_by_step():
    d, a, b = _preemption_case(ContinuousScheduler(PagedAllocator(6, 4)))
    steps = d.run()
    assert steps[0] == [(0, 8, 0), (1, 8, 0)]
    assert steps[1:5] == [[(0, 1, 8 + i), (1, 1, 8 + i)] for i in range(4)]
    # Step 6: A needs a 4th block, none is free: B (admitted last) is preempted, recomputed later.
    assert steps[5] == [(0, 1, 12)]
    assert steps[6:9] == [[(0, 1, 13 + i)] for i in range(3)]  # B's 13 tokens do not fit yet
    assert steps[9] == [(0, 1, 16)]
    assert steps[10] == [(1, 13, 0)]  # prompt + 5 generated tokens, recomputed
    assert steps[11:] == [[(1, 1, 13 + i)] for i in range(4)]
    assert (a.preemptions, b.preemptions) == (0, 1)
    assert d.sched.stats()["preemptions_recompute"] == 1


def test_swap_preemption_keeps_the_kv_and_charges_pcie_time():
    swap = SwapSpace(capacity_bytes=1e6, kv_bytes_per_token=100.0, host_bw_bytes_s=1e4)
    d, a, b = _preemption_case(ContinuousScheduler(PagedAllocator(6, 4), preemption="swap",
                                                   swap=swap))
    steps = d.run()
    assert steps[5] == [(0, 1, 12)]
    assert steps[10] == [(1, 1, 12)]  # swapped back in: only the next token is computed
    assert b.num_output_tokens == 10 and b.preemptions == 1
    assert b.kv_transfer_time == pytest.approx(2 * 12 * 100 / 1e4)  # out and back in
    stats = d.sched.stats()
    assert stats["preemptions_swap"] == 1 and stats["swapped_out_bytes"] == 1200
    assert stats["swapped_in_bytes"] == 1200 and swap.used_bytes == 0


def test_swap_time_lengthens_the_step_that_swaps():
    class Fixed:
        def run(self, batch):
            return StepResult(STEP_S)

    swap = SwapSpace(1e6, 100.0, 1e4)
    sched = ContinuousScheduler(PagedAllocator(6, 4), preemption="swap", swap=swap)
    ex = SwapTimeExecutor(Fixed(), swap)
    for r in (req(0, 8, 10), req(1, 8, 10)):
        sched.add_request(r, 0.0)
    durations, now = [], 0.0
    while sched.has_unfinished():
        batch = sched.schedule(now)
        seconds = ex.run(batch).seconds
        now += seconds
        sched.update(batch, StepResult(seconds), now)
        durations.append(seconds)
    assert durations[5] == pytest.approx(STEP_S + 0.12)  # swap-out of 12 tokens
    assert durations[10] == pytest.approx(STEP_S + 0.12)  # swap-in
    assert sum(durations) == pytest.approx(len(durations) * STEP_S + 0.24)


def test_swap_falls_back_to_recompute_when_host_space_is_full():
    swap = SwapSpace(capacity_bytes=100.0, kv_bytes_per_token=100.0, host_bw_bytes_s=1e4)
    d, a, b = _preemption_case(ContinuousScheduler(PagedAllocator(6, 4), preemption="swap",
                                                   swap=swap))
    d.run()
    stats = d.sched.stats()
    assert stats["preemptions_swap"] == 0 and stats["preemptions_recompute"] == 1


def test_no_evict_admission_never_preempts():
    d, a, b = _preemption_case(ContinuousScheduler(PagedAllocator(6, 4), admission="no_evict"))
    steps = d.run()
    assert steps[0] == [(0, 8, 0)]  # B would need 5 more blocks at its end: it waits for A
    assert (a.preemptions, b.preemptions) == (0, 0)
    assert [s for s in steps if s[0][0] == 1][0] == [(1, 8, 0)]


def test_contiguous_allocator_reserves_the_final_length():
    alloc = ContiguousAllocator(10, 4)
    d = Driver(ContinuousScheduler(alloc))
    d.add(req(0, 8, 10), req(1, 8, 10))  # 18 tokens = 5 blocks each
    d.step()
    assert alloc.num_blocks_used() == 10 and alloc.block_table(Request(0, 0, 1, 1)) == [0, 1, 2,
                                                                                         3, 4]


def test_rejections_carry_a_reason():
    sched = ContinuousScheduler(PagedAllocator(4, 4), max_waiting=1)
    too_long = req(0, 20, 1)
    assert not sched.add_request(too_long, 0.0)
    assert too_long.rejected_reason == "needs 6 KV blocks (21 tokens); the pool has 4"
    assert sched.add_request(req(1, 4, 1), 0.0)
    late = req(2, 4, 1)
    assert not sched.add_request(late, 0.0)
    assert late.rejected_reason == "queue full (1 waiting)"
    stats = sched.stats()
    assert stats["rejected_too_long"] == 1 and stats["rejected_queue_full"] == 1


def test_bad_knobs_are_one_line_errors():
    with pytest.raises(ValueError, match="scheduler.preemption: unknown 'x'; allowed: recompute"):
        ContinuousScheduler(PagedAllocator(4, 4), preemption="x")
    with pytest.raises(ValueError, match="scheduler.order: unknown 'lifo'; allowed: fcfs"):
        ContinuousScheduler(PagedAllocator(4, 4), order="lifo")
    with pytest.raises(ValueError, match="needs a host swap space"):
        ContinuousScheduler(PagedAllocator(4, 4), preemption="swap")


def test_requests_longer_than_the_model_context_are_rejected_with_the_reason():
    import sim

    result = sim.simulate({"workload": {"num_requests": 5, "prompt_tokens": 140_000,
                                        "output_tokens": 10}, "hardware": {"gpu": "h200"}})
    assert result.summary["rejected"] == 5
    assert result.requests["rejected_reason"].str.contains("max_model_len 131072").all()
    longer = sim.simulate({"workload": {"num_requests": 2, "prompt_tokens": 140_000,
                                        "output_tokens": 2}, "hardware": {"gpu": "h200"},
                           "scheduler": {"max_model_len": 150_000}})
    assert longer.summary["completed"] == 2
