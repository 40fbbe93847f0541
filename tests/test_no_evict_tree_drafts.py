"""no_evict admission with tree speculation: drafts stay inside each request's reservation.

Found while arguing a surviving mutant of ``QueueingScheduler._preempt`` (``_release(None)``, see
``docs/mutation/policies-schedulers.md``): it only matters if a no_evict scheduler preempts, and
with tree drafts (width > 1) it did. A tree's draft slots can reach past a request's final length,
so they took blocks that no_evict had promised to another running request, whose next token then
found the pool full and was preempted. Kept apart from ``test_mutants_schedulers.py``, whose cases
are re-run against the mutants of commit 2111d8c47197, where this fix is absent.
"""

from __future__ import annotations

from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator
from policies.speculative import FixedDepth, Proposer, SpeculativeScheduler
from sim.core import Request, StepResult


def test_tree_drafts_never_make_no_evict_preempt():
    """4 blocks of 4 tokens. A (4 + 4 tokens) and C (3 + 5) reserve 2 blocks each: the whole
    pool. Trees of width 2, depth up to 2; every draft is rejected, so each step emits one token.

    Step 1 fills both prompts (1 block each). Step 2: A holds 5 tokens; 2 levels (4 slots) would
    reach 9 tokens, past its 8 reserved: 1 level (5 + 2 = 7). C holds 4: 2 levels reach 8, its
    reservation exactly: 4 drafts (its 2nd block). Step 3: A (6 tokens) may draft 1 level (1 of 4
    outputs left beyond the next), C (5) 2 levels would reach 9: 1 level. Step 4: A's last token,
    no drafts; C (6 tokens, 1 output left beyond the next) 1 level. Step 5: C's last token.
    Before the fix A drafted 2 levels at step 2 (3 blocks), and C, needing its 2nd block for its
    5th token at step 3, preempted itself."""
    inner = ContinuousScheduler(PagedAllocator(4, 4), admission="no_evict")
    sched = SpeculativeScheduler(inner, Proposer(k_max=2, width=2), FixedDepth(2))
    a, c = Request(0, 0.0, 4, 4), Request(1, 0.0, 3, 5)
    for r in (a, c):
        assert sched.add_request(r, 0.0)
    steps, now = [], 0.0
    while sched.has_unfinished():
        batch = sched.schedule(now)
        now += 0.01
        steps.append([(r.request_id, n, d) for r, n, d in
                      zip(batch.requests, batch.new_tokens, batch.draft_tokens, strict=True)])
        sched.update(batch, StepResult(0.01, [0] * len(batch)), now)
        assert inner.allocator.num_blocks_used() <= 4
    assert steps == [
        [(0, 4, 0), (1, 3, 0)],
        [(0, 3, 2), (1, 5, 4)],
        [(0, 3, 2), (1, 3, 2)],
        [(0, 1, 0), (1, 3, 2)],
        [(1, 1, 0)],
    ]
    assert (a.preemptions, c.preemptions) == (0, 0)
    assert inner.stats()["preemptions_recompute"] == 0


def test_greedy_admission_still_drafts_past_the_final_length():
    """The cap is no_evict's alone: under greedy admission A drafts its 2 levels at step 2."""
    inner = ContinuousScheduler(PagedAllocator(4, 4))
    sched = SpeculativeScheduler(inner, Proposer(k_max=2, width=2), FixedDepth(2))
    a, c = Request(0, 0.0, 4, 4), Request(1, 0.0, 3, 5)
    for r in (a, c):
        sched.add_request(r, 0.0)
    first = sched.schedule(0.0)
    sched.update(first, StepResult(0.01), 0.01)
    second = sched.schedule(0.01)
    assert second.draft_tokens[0] == 4  # 5 + 4 = 9 tokens: a 3rd block, free under greedy
