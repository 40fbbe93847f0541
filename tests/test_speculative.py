"""Speculative decoding policies: acceptance models, draft-length policies, the scheduler wrapper.

Pure Python (no engine): the formulas the issue names are checked against the draws.
"""

from __future__ import annotations

import pytest

from policies.continuous import ContinuousScheduler
from policies.kv_contiguous import ContiguousAllocator
from policies.kv_paged import PagedAllocator
from policies.speculative import (
    DATASET_RATES,
    STREAM_ACCEPT,
    DecayAcceptance,
    DisableAbove,
    FixedDepth,
    GoodputDepth,
    IIDAcceptance,
    PerRequestAcceptance,
    Proposer,
    ReplayAcceptance,
    SpeculationError,
    SpeculativeScheduler,
    accepted_counts,
    expected_tokens,
    uniform,
)
from sim.core import Batch, Request, StepResult

DRAWS = 60_000


def _mean_tokens(model, depth: int, width: int = 1, draws: int = DRAWS) -> float:
    """Mean tokens per verify step (1 + accepted) over requests and output positions."""
    req = Request(0, 0.0, 10, 10**9)
    total = 0
    for i in range(draws):
        req.request_id, req.num_output_tokens = i % 997, i // 997
        total += 1 + model.accepted(req, depth, width)
    return total / draws


@pytest.mark.parametrize(("rate", "depth"), [(0.5, 3), (0.7, 4), (0.9, 6), (0.8, 1)])
def test_iid_tokens_per_verify_step_match_formula(rate, depth):
    """Acceptance 1: E[tokens per verify step] = (1 - a^(k+1)) / (1 - a), within 1%."""
    formula = (1 - rate ** (depth + 1)) / (1 - rate)
    assert expected_tokens(rate, depth) == pytest.approx(formula)
    assert _mean_tokens(IIDAcceptance(rate, seed=3), depth) == pytest.approx(formula, rel=0.01)


def test_tree_width_raises_per_level_acceptance():
    """Level i passes if any of w candidates matches: p = 1 - (1 - a)^w."""
    a, k, w = 0.6, 4, 3
    p = 1 - (1 - a) ** w
    formula = (1 - p ** (k + 1)) / (1 - p)
    assert expected_tokens(a, k, w) == pytest.approx(formula)
    assert _mean_tokens(IIDAcceptance(a, seed=1), k, w) == pytest.approx(formula, rel=0.01)


def test_decay_follows_position_rates():
    rates = [0.8, 0.6, 0.4]
    # E[tokens] = 1 + P(>=1) + P(>=2) + P(>=3) with P(>=j) = prod of the first j rates
    expected = 1 + 0.8 + 0.8 * 0.6 + 0.8 * 0.6 * 0.4
    assert _mean_tokens(DecayAcceptance(rates=rates, seed=2), 3) == pytest.approx(expected,
                                                                                    rel=0.01)
    geometric = DecayAcceptance(rate=0.9, decay=0.5, seed=2)
    assert _mean_tokens(geometric, 2) == pytest.approx(1 + 0.9 + 0.9 * 0.45, rel=0.01)
    assert geometric.position_rate(Request(0, 0, 1, 1), 5) == 0.9 * 0.5**5


def test_per_request_rates_follow_the_dataset():
    code = PerRequestAcceptance.for_dataset("code", seed=5)
    chat = PerRequestAcceptance.for_dataset("chat", seed=5)
    reqs = [Request(i, 0.0, 10, 100) for i in range(4000)]
    code_rates = [code.request_rate(r) for r in reqs]
    chat_rates = [chat.request_rate(r) for r in reqs]
    assert sum(code_rates) / len(reqs) == pytest.approx(DATASET_RATES["code"][0], abs=0.01)
    assert sum(chat_rates) / len(reqs) == pytest.approx(DATASET_RATES["chat"][0], abs=0.01)
    assert len(set(round(r, 9) for r in chat_rates)) > 3900  # one rate per request
    # a request keeps its rate however often it is asked
    assert chat.request_rate(reqs[7]) == chat.request_rate(Request(7, 5.0, 1, 1))
    with pytest.raises(SpeculationError, match="speculative.acceptance.dataset"):
        PerRequestAcceptance.for_dataset("poetry")


def test_draws_are_keyed_by_request_state_not_draw_order():
    """The property realexec relies on: same request state -> same accepted count."""
    a, b = IIDAcceptance(0.7, seed=11), IIDAcceptance(0.7, seed=11)
    reqs = [Request(i, 0.0, 10, 100, num_output_tokens=i % 13) for i in range(300)]
    forward = [a.accepted(r, 5) for r in reqs]
    backward = [b.accepted(r, 5) for r in reversed(reqs)][::-1]
    assert forward == backward
    other = [IIDAcceptance(0.7, seed=12).accepted(r, 5) for r in reqs]
    r = reqs[5]  # the chain's draws are the documented keyed uniforms
    levels = [uniform(11, STREAM_ACCEPT, r.request_id, r.num_output_tokens, i) for i in range(5)]
    assert a.accepted(r, 5) == next((i for i, u in enumerate(levels) if u >= 0.7), 5)
    assert other != forward
    u = [uniform(0, 1, i, 0) for i in range(20_000)]
    assert 0 <= min(u) and max(u) < 1 and sum(u) / len(u) == pytest.approx(0.5, abs=0.01)


def test_replay_resamples_and_truncates(tmp_path):
    f = tmp_path / "accepted.txt"
    f.write_text("# accepted drafts per verify step, k=4\n0\n4\n4\n2\n")
    model = ReplayAcceptance.from_file(f, recorded_depth=4, seed=0)
    req = Request(1, 0.0, 10, 10**6)
    seen = set()
    for pos in range(400):
        req.num_output_tokens = pos
        seen.add(model.accepted(req, 4))
        assert model.accepted(req, 2) <= 2
    assert seen == {0, 2, 4}
    assert model.prior_rate == pytest.approx(10 / (10 + 2))  # 10 accepted, 2 early stops
    with pytest.raises(SpeculationError, match="num_draft_tokens"):
        model.accepted(req, 5)
    bad = tmp_path / "bad.txt"
    bad.write_text("1\ntwo\n")
    with pytest.raises(SpeculationError, match="one integer a line"):
        ReplayAcceptance.from_file(bad, 4)
    with pytest.raises(SpeculationError, match=r"\[0, recorded_depth=4\]"):
        ReplayAcceptance([5], 4)
    with pytest.raises(SpeculationError, match="no such file"):
        ReplayAcceptance.from_file(tmp_path / "missing.txt", 4)


def test_invalid_rates_are_one_line_errors():
    with pytest.raises(SpeculationError, match=r"speculative.acceptance.rate: must be in \[0, 1\)"):
        IIDAcceptance(1.0)
    with pytest.raises(SpeculationError, match="decay"):
        DecayAcceptance(0.5, decay=1.5)


# ---- the scheduler wrapper --------------------------------------------------------------------
def _decoding(scheduler, n: int, prompt: int = 8, output: int = 100) -> list[Request]:
    """Admit ``n`` requests and run their prefill so the next batch decodes."""
    reqs = [Request(i, 0.0, prompt, output) for i in range(n)]
    for r in reqs:
        scheduler.add_request(r, 0.0)
    batch = scheduler.schedule(0.0)
    scheduler.update(batch, StepResult(0.01), 0.01)
    return reqs


def test_wrapper_adds_drafts_to_decodes_only_and_keeps_kv():
    alloc = PagedAllocator(100, 4)
    inner = ContinuousScheduler(alloc)
    spec = SpeculativeScheduler(inner, Proposer(3), FixedDepth(3))
    reqs = _decoding(spec, 2)
    late = Request(9, 0.0, 8, 100)
    spec.add_request(late, 0.02)
    prefill = spec.schedule(0.02)  # prefill first: no drafts on a prompt
    assert prefill.draft_tokens == [0] and prefill.new_tokens == [8]
    spec.update(prefill, StepResult(0.01), 0.03)
    batch = spec.schedule(0.03)
    assert batch.new_tokens == [4, 4, 4] and batch.draft_tokens == [3, 3, 3]
    assert batch.decode_mask() == [True, True, True]
    # each request's KV covers its real token plus 3 drafts: 9 + 3 = 12 tokens = 3 blocks
    assert all(len(alloc.block_table(r)) == 3 for r in reqs)
    spec.update(batch, StepResult(0.01, [3, 1, 0]), 0.04)
    assert [r.num_output_tokens for r in (*reqs, late)] == [5, 3, 2]
    assert [r.num_computed_tokens for r in (*reqs, late)] == [12, 10, 9]
    assert reqs[0].accepted_draft_tokens == 3 and reqs[0].proposed_draft_tokens == 3


def test_drafts_never_reach_past_the_output_length():
    alloc = ContiguousAllocator(100, 4)  # reserves exactly prompt + output
    spec = SpeculativeScheduler(ContinuousScheduler(alloc), Proposer(8), FixedDepth(8))
    (req,) = _decoding(spec, 1, output=4)
    batch = spec.schedule(0.1)
    assert batch.draft_tokens == [2]  # 3 tokens left: one real + two drafts
    spec.update(batch, StepResult(0.01, [2]), 0.2)
    assert req.finish_time == 0.2 and req.num_output_tokens == 4


def test_no_speculation_when_kv_is_short_rather_than_preempting():
    alloc = PagedAllocator(7, 4)  # after prefill: 2 requests x 3 blocks, one block spare
    spec = SpeculativeScheduler(ContinuousScheduler(alloc), Proposer(4), FixedDepth(4))
    reqs = _decoding(spec, 2, prompt=8, output=20)
    batch = spec.schedule(0.1)
    assert batch.requests == reqs and batch.draft_tokens == [4, 3]  # 2nd fits its own blocks
    assert alloc.num_blocks_used() == 7
    spec.update(batch, StepResult(0.01, [0, 0]), 0.2)
    batch = spec.schedule(0.2)
    assert batch.draft_tokens == [4, 2] and all(r.preemptions == 0 for r in reqs)


def test_token_budget_bounds_the_drafts():
    inner = ContinuousScheduler(PagedAllocator(100, 4), max_num_batched_tokens=10)
    spec = SpeculativeScheduler(inner, Proposer(4, width=2), FixedDepth(4))
    _decoding(spec, 2, prompt=4)
    batch = spec.schedule(0.1)
    assert batch.num_tokens <= 10 and batch.draft_tokens == [8, 0]


def test_ngram_proposes_only_when_the_lookup_matches():
    proposer = Proposer(4, match_prob=0.3, seed=2)
    reqs = [Request(i, 0, 10, 100, num_output_tokens=i % 7) for i in range(20_000)]
    hits = sum(proposer.finds_candidate(r) for r in reqs) / len(reqs)
    assert hits == pytest.approx(0.3, abs=0.01)


def test_accepted_counts_skip_padding_and_non_speculating_sequences():
    reqs = [Request(i, 0, 10, 100, num_output_tokens=1, num_computed_tokens=10) for i in range(3)]
    batch = Batch(reqs, [5, 1, 5], [10, 10, 10], [4, 0, 4], [False, False, True])
    counts = accepted_counts(batch, IIDAcceptance(0.999999, seed=0), Proposer(4))
    assert counts == [4, 0, 0]


# ---- draft-length policies --------------------------------------------------------------------
def test_disable_above_batch_size_and_queue():
    policy = DisableAbove(FixedDepth(4), max_batch_size=2, max_waiting=5)
    reqs = [Request(i, 0, 1, 1) for i in range(3)]
    assert policy.depths(reqs[:2], 0) == [4, 4]
    assert policy.depths(reqs, 0) == [0, 0, 0]
    assert policy.depths(reqs[:2], 6) == [0, 0]


def test_goodput_depth_speculates_when_cheap_and_stops_when_compute_bound():
    def cost(batch_size: int, depth: int, ctx: int) -> float:
        tokens = batch_size * (1 + depth)
        return max(0.010, tokens * 1e-4) + 0.001 * depth  # memory bound until 100 tokens

    policy = GoodputDepth(6, cost, prior_rate=0.8)
    assert policy.depths([Request(0, 0, 10, 10)], 0) == [6]
    many = [Request(i, 0, 10, 10) for i in range(256)]
    assert policy.depths(many, 0) == [0] * 256
    # a request whose drafts keep failing is expected to accept little
    bad = Request(1, 0, 10, 10)
    for _ in range(30):
        policy.observe(bad, 6, 0)
    assert policy.rate(bad) < 0.15
    assert policy.depths([bad], 0)[0] < 6
    policy.forget(bad)
    assert policy.rate(bad) == pytest.approx(0.8)
