"""Hand-worked speculative-decoding cases that the mutation run of ``policies/`` showed missing.

Each test pins a behaviour of ``policies/speculative.py`` that a one-token change in the code
would alter without any other test noticing: which random numbers the acceptance models draw
(against an independent splitmix64 reference), the edges of the formulas, the field each error
names, how the draft-length policies learn and choose, and what the scheduler wrapper hands on.
The survivors each test kills are listed in ``docs/mutation/policies-speculative.md``. Expected
values are derived by hand in the comments (or from the published splitmix64 vectors and the
standard library's ``random``), never read back from a run of the code under test.
"""

from __future__ import annotations

import random

import pytest

from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator
from policies.speculative import (
    STREAM_ACCEPT,
    STREAM_MATCH,
    STREAM_RATE,
    STREAM_REPLAY,
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
from policies.static import StaticScheduler
from sim.core import Batch, Request, StepResult

# ---- an independent reference for the keyed draws ---------------------------------------------
MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment


def splitmix64(state: int) -> int:
    """One output of Vigna's splitmix64 from the state *before* its increment (the C reference:
    ``z = (x += golden); z = (z ^ z >> 30) * c1; z = (z ^ z >> 27) * c2; return z ^ z >> 31``)."""
    z = (state + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def reference_uniform(seed: int, *parts: int) -> float:
    """The module's documented draw: splitmix64 of the seed, then of (hash xor part) for each part
    of the key, the top 53 bits as a float in [0, 1)."""
    h = splitmix64(seed & MASK)
    for part in parts:
        h = splitmix64(h ^ (part & MASK))
    return (h >> 11) * 2.0**-53


def test_reference_splitmix64_matches_the_published_vectors():
    """Rosetta Code, "Pseudo-random numbers/Splitmix64": seed 1234567 gives these five outputs;
    seed 0's first output is 0xE220A8397B1DCDAF (Vigna's splitmix64.c)."""
    published = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                 4593380528125082431, 16408922859458223821]
    assert [splitmix64((1234567 + i * GOLDEN) & MASK) for i in range(5)] == published
    assert splitmix64(0) == 0xE220A8397B1DCDAF


def test_uniform_is_splitmix64_of_the_whole_key_with_index_zero_by_default():
    """Results saved under a seed, and realexec's executor, rely on these exact numbers."""
    keys = [(0, STREAM_ACCEPT, 0, 0), (7, STREAM_MATCH, 12, 3), (2**40 + 5, STREAM_RATE, 999, 0),
            (3, STREAM_REPLAY, 1, 250)]
    for key in keys:
        assert uniform(*key) == reference_uniform(*key, 0)
        for index in (1, 2, 5):
            assert uniform(*key, index) == reference_uniform(*key, index)
    # the index is part of the key: one request's levels are distinct draws
    assert len({uniform(4, STREAM_ACCEPT, 8, 2, level) for level in range(50)}) == 50


def chain_count(seed: int, req: Request, depth: int, level_prob) -> int:
    """Accepted drafts of a chain by its rule: level i passes if its draw (the keyed uniform
    (seed, STREAM_ACCEPT, request, position, i)) is below level_prob(i); stop at the first miss."""
    for level in range(depth):
        u = reference_uniform(seed, STREAM_ACCEPT, req.request_id, req.num_output_tokens, level)
        if u >= level_prob(level):
            return level
    return depth


def requests(n: int, outputs_done: int = 3) -> list[Request]:
    return [Request(i, 0.0, 10, 100, num_output_tokens=(outputs_done + i) % 11) for i in range(n)]


def test_chain_default_width_is_one_candidate_per_level():
    model = IIDAcceptance(0.5, seed=9)
    for r in requests(60):
        assert model.accepted(r, 3) == chain_count(9, r, 3, lambda level: 0.5)


def test_accepted_counts_verify_a_tree_with_the_proposers_width():
    """Width 2 at rate 0.5: a level passes if either candidate does, p = 1 - 0.5^2 = 0.75."""
    model, proposer = IIDAcceptance(0.5, seed=4), Proposer(3, width=2)
    reqs = requests(60)
    batch = Batch(reqs, [7] * 60, [r.num_tokens - 1 for r in reqs], [6] * 60)  # depth 3 x 2
    expected = [chain_count(4, r, 3, lambda level: 0.75) for r in reqs]
    assert accepted_counts(batch, model, proposer) == expected
    chain_only = [chain_count(4, r, 3, lambda level: 0.5) for r in reqs]
    assert expected != chain_only  # the case has the power to tell width 2 from a chain


def test_accepted_counts_refuse_a_batch_whose_rows_differ_in_length():
    reqs = requests(3)
    short = Batch(reqs, [3, 3, 3], [10, 10, 10], [2, 2])  # a draft count missing
    with pytest.raises(ValueError):
        accepted_counts(short, IIDAcceptance(0.5), Proposer(2))


def test_per_request_model_accepts_each_request_at_its_own_rate():
    model = PerRequestAcceptance(0.7, seed=3)
    rates = []
    for r in requests(40):
        rate = model.request_rate(r)
        rates.append(rate)
        assert model.accepted(r, 4) == chain_count(3, r, 4, lambda level, p=rate: p)
    assert len(set(rates)) == 40


def test_a_level_passes_only_when_its_draw_is_strictly_below_the_rate():
    """P(pass) = rate exactly: the draws are multiples of 2^-53 in [0, 1) and a level passes
    iff its draw is < p. A rate equal to the draw (both on the 2^-53 grid) is therefore a miss."""
    r = Request(5, 0.0, 10, 100, num_output_tokens=4)
    u0 = uniform(1, STREAM_ACCEPT, 5, 4, 0)
    assert IIDAcceptance(u0, seed=1).accepted(r, 3) == 0
    above = u0 + 2.0**-53  # the next grid value: level 0 passes
    assert IIDAcceptance(above, seed=1).accepted(r, 3) >= 1


def test_a_match_probability_equal_to_the_draw_finds_no_candidate():
    """Same convention for n-gram lookup: found iff the draw is < match_prob."""
    r = Request(2, 0.0, 10, 100, num_output_tokens=6)
    u = uniform(5, STREAM_MATCH, 2, 6)
    assert u == reference_uniform(5, STREAM_MATCH, 2, 6, 0)
    assert not Proposer(4, match_prob=u, seed=5).finds_candidate(r)
    assert Proposer(4, match_prob=u + 2.0**-53, seed=5).finds_candidate(r)


# ---- formulas and their edges -----------------------------------------------------------------
def test_expected_tokens_when_every_level_passes():
    """p = 1: every draft is accepted, a step emits all k drafts plus its own token."""
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(1.0, 4, width=3) == 5.0
    # a wide enough tree passes every level: (1 - 0.999)^200 = 1e-600 rounds to 0, p = 1
    assert expected_tokens(0.999, 3, width=200) == 4.0


def test_zero_rate_is_allowed_and_accepts_nothing():
    model = IIDAcceptance(0.0, seed=2)
    assert model.prior_rate == 0.0
    assert all(model.accepted(r, 5) == 0 for r in requests(30))


# ---- default seeds and the one-line errors ----------------------------------------------------
def test_models_built_without_a_seed_draw_as_seed_zero(tmp_path):
    """Seed 0 is the config's default seed: a model built in code without one draws the same
    numbers as a default config's."""
    reqs = requests(80)

    def counts(model, depth=4):
        return [model.accepted(r, depth) for r in reqs]

    assert counts(IIDAcceptance(0.6)) == counts(IIDAcceptance(0.6, seed=0))
    assert counts(IIDAcceptance(0.6)) != counts(IIDAcceptance(0.6, seed=1))  # power
    assert counts(DecayAcceptance(0.8, decay=0.9)) == counts(DecayAcceptance(0.8, 0.9, seed=0))
    # decay 1 is the iid chain: same draws, same counts (both default to seed 0)
    assert counts(DecayAcceptance(0.6)) == counts(IIDAcceptance(0.6))
    assert counts(PerRequestAcceptance(0.7)) == counts(PerRequestAcceptance(0.7, seed=0))
    assert (counts(PerRequestAcceptance.for_dataset("chat"))
            == counts(PerRequestAcceptance.for_dataset("chat", seed=0)))
    lengths = [0, 1, 2, 3, 4, 4, 2]
    assert counts(ReplayAcceptance(lengths, 4)) == counts(ReplayAcceptance(lengths, 4, seed=0))
    f = tmp_path / "accepted.txt"
    f.write_text("\n".join(map(str, lengths)) + "\n")
    assert counts(ReplayAcceptance.from_file(f, 4)) == counts(ReplayAcceptance(lengths, 4, 0))


def test_replay_from_file_keeps_the_seed_and_draws_the_documented_uniform(tmp_path):
    lengths = [0, 4, 1, 3, 2]
    f = tmp_path / "accepted.txt"
    f.write_text("# k=4\n" + "\n".join(map(str, lengths)) + "\n")
    model = ReplayAcceptance.from_file(f, 4, seed=7)
    for r in requests(60):
        u = reference_uniform(7, STREAM_REPLAY, r.request_id, r.num_output_tokens, 0)
        assert model.accepted(r, 4) == lengths[int(u * 5)]
        assert model.accepted(r, 2) == min(lengths[int(u * 5)], 2)
        assert model.accepted(r, 3, 2) == model.accepted(r, 3)  # width: a chain replay


def test_replay_needs_lengths_in_range():
    with pytest.raises(SpeculationError,
                       match=r"^speculative\.acceptance\.file: needs accepted lengths in "
                             r"\[0, recorded_depth=4\]$"):
        ReplayAcceptance([], 4)
    with pytest.raises(SpeculationError, match=r"^speculative\.acceptance\.file: needs"):
        ReplayAcceptance([-1, 2], 4)


def test_replay_of_an_empty_file_names_the_range_not_the_format(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("# nothing recorded\n")
    with pytest.raises(SpeculationError, match=r"needs accepted lengths in \[0, recorded_depth"):
        ReplayAcceptance.from_file(f, 4)


def test_replay_prior_of_a_single_full_acceptance():
    """One step, recorded at depth 1, that accepted its draft: 1 accepted, 0 early stops."""
    assert ReplayAcceptance([1], 1).prior_rate == 1.0
    assert ReplayAcceptance([0], 1).prior_rate == 0.0  # 0 accepted, 1 stop


def test_decay_rejects_a_bad_rate_in_the_list_naming_the_field():
    with pytest.raises(SpeculationError,
                       match=r"^speculative\.acceptance\.rates: must be in \[0, 1\) \(got 1\.2\)$"):
        DecayAcceptance(rates=[0.5, 1.2])
    with pytest.raises(SpeculationError,
                       match=r"^speculative\.acceptance\.rate: must be in \[0, 1\) \(got 1\.5\)$"):
        DecayAcceptance(rate=1.5)


def test_decay_must_be_positive():
    with pytest.raises(SpeculationError, match=r"^speculative\.acceptance\.decay: must be in"):
        DecayAcceptance(0.5, decay=0.0)
    assert DecayAcceptance(0.5, decay=1e-9).position_rate(Request(0, 0, 1, 1), 1) == 0.5e-9


def test_decay_prior_is_the_first_positions_rate():
    assert DecayAcceptance(rates=[0.8, 0.6, 0.4]).prior_rate == 0.8
    assert DecayAcceptance(rates=[0.3]).prior_rate == 0.3
    assert DecayAcceptance(0.9, decay=0.5).prior_rate == 0.9


def test_decay_rates_list_holds_its_last_rate_beyond_its_end():
    model = DecayAcceptance(rates=[0.8, 0.6])
    r = Request(0, 0.0, 1, 1)
    assert [model.position_rate(r, level) for level in range(5)] == [0.8, 0.6, 0.6, 0.6, 0.6]


def test_per_request_errors_name_the_field():
    with pytest.raises(SpeculationError,
                       match=r"^speculative\.acceptance\.mean: must be in \[0, 1\)"):
        PerRequestAcceptance(1.0)
    with pytest.raises(SpeculationError,
                       match=r"^speculative\.acceptance\.concentration: must be > 0 \(got 0\)$"):
        PerRequestAcceptance(0.5, concentration=0)
    with pytest.raises(SpeculationError, match=r"allowed: chat, code$"):
        PerRequestAcceptance.for_dataset("poetry")


def test_a_concentration_below_one_is_a_valid_u_shaped_beta():
    """Beta(0.25, 0.25) (mean 0.5, concentration 0.5): most requests near 0 or 1."""
    model = PerRequestAcceptance(0.5, concentration=0.5, seed=1)
    rates = [model.request_rate(Request(i, 0, 1, 1)) for i in range(2000)]
    extreme = sum(r < 0.1 or r > 0.9 for r in rates) / len(rates)
    assert extreme > 0.5  # P(X < 0.1 or X > 0.9) = 0.616 for Beta(1/4, 1/4) (scipy)


def _variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def test_per_request_rates_spread_as_beta_with_concentration_eight():
    """Var Beta(m, c) = m (1 - m) / (c + 1); the default and both presets use c = 8.
    chat: 0.7 x 0.3 / 9 = 0.02333; code: 0.85 x 0.15 / 9 = 0.014167. With 20000 requests the
    sample variance is within 1% (one standard error) of these; c = 9 or 5 would be 10% or 50%
    off."""
    reqs = [Request(i, 0, 1, 1) for i in range(20_000)]
    default = PerRequestAcceptance(0.7, seed=11)
    assert _variance([default.request_rate(r) for r in reqs]) == pytest.approx(0.7 * 0.3 / 9,
                                                                                rel=0.04)
    code = PerRequestAcceptance.for_dataset("code", seed=5)
    assert _variance([code.request_rate(r) for r in reqs[:8000]]) == pytest.approx(
        0.85 * 0.15 / 9, rel=0.06)


def test_per_request_rate_is_the_documented_beta_draw_for_the_seed():
    """Rate of a request: Beta(m c, (1 - m) c) drawn by Python's random.Random seeded with the
    53-bit integer of the keyed uniform (seed, STREAM_RATE, request, 0): fresh models agree."""
    for seed in (0, 5):
        model = PerRequestAcceptance.for_dataset("code", seed=seed)
        again = PerRequestAcceptance(0.85, 8.0, seed=seed)
        for rid in (0, 1, 17, 4096):
            key = int(reference_uniform(seed, STREAM_RATE, rid, 0, 0) * 2.0**53)
            want = random.Random(key).betavariate(0.85 * 8.0, (1 - 0.85) * 8.0)
            assert model.request_rate(Request(rid, 0, 1, 1)) == want
            assert again.request_rate(Request(rid, 0, 1, 1)) == want


def test_per_request_rate_cache_stays_bounded():
    """The per-request rates are memoized in a bounded LRU cache: a long run (millions of
    requests) does not grow it without limit. Drawing is pure, so a bound costs only redraws."""
    model = PerRequestAcceptance(0.7)
    info = model._rate.cache_info()
    assert info.maxsize is not None
    first = model.request_rate(Request(3, 0, 1, 1))
    for rid in range(4, 2000):
        model.request_rate(Request(rid, 0, 1, 1))
    assert model.request_rate(Request(3, 0, 1, 1)) == first
    assert model._rate.cache_info().currsize <= info.maxsize


# ---- draft-length policies --------------------------------------------------------------------
def test_disable_above_keeps_speculating_at_the_queue_limit():
    policy = DisableAbove(FixedDepth(4), max_waiting=5)
    reqs = [Request(i, 0, 1, 1) for i in range(2)]
    assert policy.depths(reqs, 5) == [4, 4]  # "above" 5 waiting: 5 itself still speculates
    assert policy.depths(reqs, 6) == [0, 0]


def test_disable_above_passes_the_queue_length_to_its_inner_policy():
    policy = DisableAbove(DisableAbove(FixedDepth(4), max_waiting=2), max_batch_size=8)
    reqs = [Request(i, 0, 1, 1) for i in range(2)]
    assert policy.depths(reqs, 2) == [4, 4]
    assert policy.depths(reqs, 3) == [0, 0]  # the inner one sees 3 > 2 waiting


def test_goodput_rate_counts_accepted_and_one_miss_per_early_stop():
    """rate = (accepted + w p0) / (accepted + misses + w), w = 4 by default, p0 = 0.5."""
    policy = GoodputDepth(4, lambda b, k, ctx: 0.01, prior_rate=0.5)
    r = Request(3, 0, 10, 100)
    assert policy.rate(r) == 0.5
    policy.observe(r, 4, 2)  # 2 accepted, stopped early: 1 miss
    assert policy.rate(r) == pytest.approx((2 + 2) / (2 + 1 + 4))  # 4/7
    policy.observe(r, 4, 4)  # all 4 accepted: no miss
    assert policy.rate(r) == pytest.approx((6 + 2) / (6 + 1 + 4))  # 8/11
    policy.observe(r, 3, 0)  # a miss at the first level
    assert policy.rate(r) == pytest.approx((6 + 2) / (6 + 2 + 4))  # 8/12


def test_goodput_forgets_a_request_it_never_observed():
    policy = GoodputDepth(4, lambda b, k, ctx: 0.01, prior_rate=0.5)
    policy.forget(Request(1, 0, 10, 1))  # finished without ever speculating
    assert policy.rate(Request(1, 0, 10, 1)) == 0.5


def test_goodput_depth_weighs_level_j_by_p_to_the_j():
    """One request at p = 0.5, a step costs 10 ms + 4 ms per draft level, default width 1:
    tokens 1, 1.5, 1.75, 1.875, 1.9375 over 10, 14, 18, 22, 26 ms = 100, 107.1, 97.2, 85.2,
    74.5 tokens/s: k = 1. (Width 2 would make p = 0.75 and pick k = 2; a flat p per level,
    k = 4.)"""
    policy = GoodputDepth(4, lambda b, k, ctx: 0.010 + 0.004 * k, prior_rate=0.5)
    assert policy.depths([Request(0, 0, 10, 100)], 0) == [1]


def test_goodput_depth_of_a_tree_uses_the_per_level_acceptance():
    """Width 3 at rate 0.5: p = 1 - 0.5^3 = 0.875; tokens 1, 1.875, 2.641, 3.311, 3.897 over
    10..14 ms = 100, 170.5, 220.1, 254.7, 278.3 tokens/s: the deepest draft, k = 4."""
    policy = GoodputDepth(4, lambda b, k, ctx: 0.010 + 0.001 * k, prior_rate=0.5, width=3)
    assert policy.depths([Request(0, 0, 10, 100)], 0) == [4]


def test_goodput_depth_sums_the_expected_tokens_of_every_request():
    """Request 0 at the prior 0.9, request 1 after 1000 misses (rate 3.6/1004 = 0.0036). Summed
    over both: tokens 2, 2.904, 3.714, 4.443, 5.099 over 10..14 ms = 200, 264, 309.5, 341.8,
    364.2 tokens/s: k = 4, for both (one depth per step). Request 1 alone would pick k = 0."""
    policy = GoodputDepth(4, lambda b, k, ctx: 0.010 + 0.001 * k, prior_rate=0.9)
    good, bad = Request(0, 0, 10, 100), Request(1, 0, 10, 100)
    for _ in range(1000):
        policy.observe(bad, 4, 0)
    assert policy.depths([good, bad], 0) == [4, 4]
    assert policy.depths([bad], 0) == [0]


def test_goodput_depth_ties_go_to_the_shorter_draft():
    """A draft that is never accepted (rate 0) adds no token: equal tokens/s at every k when the
    step costs the same, so no speculation. A gain within the 1e-9 relative tolerance is a tie
    too."""
    flat = GoodputDepth(3, lambda b, k, ctx: 0.01, prior_rate=0.0)
    assert flat.depths([Request(0, 0, 10, 100)], 0) == [0]
    edge = 1.0 / (1.0 * (1 + 1e-9))  # k = 1 costs exactly best x (1 + 1e-9) less: still a tie
    at_tolerance = GoodputDepth(1, lambda b, k, ctx: 1.0 if k == 0 else edge, prior_rate=0.0)
    assert at_tolerance.depths([Request(0, 0, 10, 100)], 0) == [0]


def test_goodput_depth_does_not_depend_on_the_unit_of_time():
    """p = 0.8: tokens 1, 1.8, 2.44, 2.952, 3.3616. Steps of 10 s + 0.1 s per level (a slow
    device): 0.1, 0.178, 0.239, 0.287, 0.323 tokens/s, all below 1: still k = 4, as in ms."""
    slow = GoodputDepth(4, lambda b, k, ctx: 10.0 + 0.1 * k, prior_rate=0.8)
    fast = GoodputDepth(4, lambda b, k, ctx: 0.010 + 0.0001 * k, prior_rate=0.8)
    r = Request(0, 0, 10, 100)
    assert slow.depths([r], 0) == fast.depths([r], 0) == [4]


def test_goodput_depth_prices_the_step_at_the_batchs_mean_context():
    """step_cost_s(batch size, k, mean context), the mean in whole tokens: (11 + 14) // 2 = 12."""
    calls = []

    def cost(batch_size, depth, ctx):
        calls.append((batch_size, depth, ctx))
        return 0.01 + 0.001 * depth

    policy = GoodputDepth(2, cost, prior_rate=0.5)
    one = Request(0, 0, 10, 100, num_output_tokens=1)  # 11 tokens
    policy.depths([one], 0)
    assert calls == [(1, 0, 11), (1, 1, 11), (1, 2, 11)]
    calls.clear()
    two = Request(1, 0, 10, 100, num_output_tokens=4)  # 14 tokens
    policy.depths([one, two], 0)
    assert calls == [(2, 0, 12), (2, 1, 12), (2, 2, 12)]
    assert all(type(c[2]) is int for c in calls)


def test_goodput_prior_weight_is_four_observations():
    """Default prior weight 4 (p0 = 0.2): after 3 accepted and 1 miss, (3 + 0.8) / (4 + 4)."""
    policy = GoodputDepth(4, lambda b, k, ctx: 0.01, prior_rate=0.2)
    r = Request(0, 0, 10, 100)
    policy.observe(r, 4, 3)
    assert policy.rate(r) == pytest.approx(3.8 / 8)


# ---- the scheduler wrapper --------------------------------------------------------------------
def _prefill(spec, reqs: list[Request], now: float = 0.0) -> None:
    for r in reqs:
        spec.add_request(r, now)
    batch = spec.schedule(now)
    spec.update(batch, StepResult(0.01), now + 0.01)


def test_wrapper_caps_drafts_by_the_policy_and_by_the_proposer():
    spec = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(100, 4)), Proposer(4),
                                FixedDepth(2))
    _prefill(spec, [Request(i, 0.0, 8, 100) for i in range(2)])
    assert spec.schedule(0.1).draft_tokens == [2, 2]  # the policy asks for 2 of up to 4
    spec = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(100, 4)), Proposer(3),
                                FixedDepth(6))
    _prefill(spec, [Request(i, 0.0, 8, 100) for i in range(2)])
    assert spec.schedule(0.1).draft_tokens == [3, 3]  # the proposer has 3 levels


def test_wrapper_passes_the_clock_and_the_queue_to_what_it_wraps():
    inner = ContinuousScheduler(PagedAllocator(100, 4), max_num_seqs=2)
    spec = SpeculativeScheduler(inner, Proposer(3), DisableAbove(FixedDepth(3), max_waiting=0))
    reqs = [Request(i, 0.0, 8, 100) for i in range(3)]
    for r in reqs:
        spec.add_request(r, 0.0)
    batch = spec.schedule(0.25)
    assert [r.first_scheduled_time for r in batch.requests] == [0.25, 0.25]
    spec.update(batch, StepResult(0.01), 0.26)
    batch = spec.schedule(0.26)  # two decode, the third waits: 1 waiting > 0
    assert batch.requests == reqs[:2] and batch.draft_tokens == [0, 0]
    inner = ContinuousScheduler(PagedAllocator(100, 4), max_num_seqs=2)
    spec = SpeculativeScheduler(inner, Proposer(3), DisableAbove(FixedDepth(3), max_waiting=1))
    _prefill(spec, [Request(i, 0.0, 8, 100) for i in range(3)])
    assert spec.schedule(0.1).draft_tokens == [3, 3]  # 1 waiting is not above 1


def test_wrapper_refuses_a_policy_that_answers_for_the_wrong_number_of_sequences():
    class Short(FixedDepth):
        def depths(self, requests, num_waiting):
            return [self.k] * (len(requests) - 1)

    spec = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(100, 4)), Proposer(3),
                                Short(3))
    _prefill(spec, [Request(i, 0.0, 8, 100) for i in range(2)])
    with pytest.raises(ValueError):
        spec.schedule(0.1)


def test_wrapper_drafts_only_where_the_ngram_lookup_finds_a_candidate():
    proposer = Proposer(1, match_prob=0.5, seed=3)
    spec = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(200, 4)), proposer,
                                FixedDepth(1))
    reqs = [Request(i, 0.0, 8, 100) for i in range(12)]
    _prefill(spec, reqs)
    found = [proposer.finds_candidate(r) for r in reqs]
    assert spec.schedule(0.1).draft_tokens == [1 if f else 0 for f in found]
    assert any(found) and not all(found)
    never = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(200, 4)),
                                 Proposer(4, match_prob=0.0), FixedDepth(4))
    _prefill(never, [Request(i, 0.0, 8, 100) for i in range(3)])
    batch = never.schedule(0.1)
    assert batch.draft_tokens == [0, 0, 0] and batch.new_tokens == [1, 1, 1]


class NoBudgetScheduler:
    """A scheduler without a step token budget (the Scheduler protocol does not ask for one):
    continuous batching underneath, the arrival clock of each add_request recorded."""

    def __init__(self, allocator):
        self._inner = ContinuousScheduler(allocator)
        self.allocator = allocator
        self.added_at: list[float] = []

    def add_request(self, request, now):
        self.added_at.append(now)
        return self._inner.add_request(request, now)

    def schedule(self, now):
        return self._inner.schedule(now)

    def update(self, batch, result, now):
        return self._inner.update(batch, result, now)

    def has_unfinished(self):
        return self._inner.has_unfinished()

    @property
    def num_waiting(self):
        return self._inner.num_waiting


def test_wrapper_of_a_scheduler_without_a_token_budget_drafts_in_full():
    inner = NoBudgetScheduler(PagedAllocator(100, 4))
    spec = SpeculativeScheduler(inner, Proposer(4), FixedDepth(4))
    reqs = [Request(i, 0.0, 8, 100) for i in range(3)]
    for r in reqs:
        assert spec.add_request(r, 1.5)
    assert inner.added_at == [1.5, 1.5, 1.5]
    batch = spec.schedule(1.5)
    spec.update(batch, StepResult(0.01), 1.51)
    batch = spec.schedule(1.51)
    assert batch.draft_tokens == [4, 4, 4] and batch.new_tokens == [5, 5, 5]


def test_decodes_already_over_the_token_budget_get_no_drafts():
    """Budget 1 token: req 0's prompt (1 token) fills step 1, req 1's step 2; step 3 decodes both
    (decodes are never cut by the budget): 2 > 1 tokens, nothing left for drafts."""
    inner = ContinuousScheduler(PagedAllocator(100, 4), max_num_batched_tokens=1)
    spec = SpeculativeScheduler(inner, Proposer(2), FixedDepth(2))
    reqs = [Request(i, 0.0, 1, 50) for i in range(2)]
    for r in reqs:
        spec.add_request(r, 0.0)
    for step in range(2):
        batch = spec.schedule(0.01 * step)
        assert batch.requests == [reqs[step]]
        spec.update(batch, StepResult(0.01), 0.01 * (step + 1))
    batch = spec.schedule(0.02)
    assert batch.requests == reqs and batch.new_tokens == [1, 1]
    assert batch.draft_tokens == [0, 0]


def test_wrapper_keeps_static_batchings_padding():
    """Static batch of A (output 2) and B (output 10). Step 2: A has 1 token left, so no drafts;
    it finishes. Step 3 carries A as padding (no drafts) and B with 2 drafts."""
    spec = SpeculativeScheduler(StaticScheduler(PagedAllocator(100, 4)), Proposer(2),
                                FixedDepth(2))
    a, b = Request(0, 0.0, 4, 2), Request(1, 0.0, 4, 10)
    _prefill(spec, [a, b])
    batch = spec.schedule(0.1)
    assert batch.draft_tokens == [0, 2] and batch.padding == [False, False]
    spec.update(batch, StepResult(0.01, [0, 0]), 0.11)
    assert a.finish_time == 0.11
    batch = spec.schedule(0.11)
    assert batch.padding == [True, False] and batch.draft_tokens == [0, 2]
    assert batch.new_tokens == [1, 3]


def test_wrapper_teaches_and_clears_the_goodput_policy():
    """Prior 0.5, step 10 ms + 1 ms per level: tokens 1, 1.5, 1.75 -> 100, 136, 146 tokens/s,
    k = 2. Request B (1 output token) finishes at its prefill, never observed."""
    policy = GoodputDepth(2, lambda b, k, ctx: 0.010 + 0.001 * k, prior_rate=0.5)
    spec = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(100, 4)), Proposer(2), policy)
    a, b = Request(0, 0.0, 8, 6), Request(1, 0.0, 8, 1)
    _prefill(spec, [a, b])
    assert b.finish_time is not None and policy.rate(b) == 0.5
    batch = spec.schedule(0.1)
    assert batch.requests == [a] and batch.draft_tokens == [2]
    spec.update(batch, StepResult(0.01, [2]), 0.11)  # 2 of 2 accepted: (2 + 2) / (2 + 4)
    assert policy.rate(a) == pytest.approx(4 / 6) and a.num_output_tokens == 4
    batch = spec.schedule(0.11)
    assert batch.draft_tokens == [1]  # 1 token left after the real one: 6 - 4 - 1
    spec.update(batch, StepResult(0.01), 0.12)  # no accepted list: nothing accepted, a miss
    assert policy.rate(a) == pytest.approx((2 + 2) / (3 + 4))
    batch = spec.schedule(0.12)
    assert batch.draft_tokens == [0]
    assert spec.update(batch, StepResult(0.01), 0.13) == [a]
    assert policy.rate(a) == 0.5  # forgotten when it finished


def test_a_malformed_step_result_is_refused_before_any_request_advances():
    """An accepted list shorter than the batch is an error, raised before the wrapped scheduler
    applies the step: no request's progress moves."""
    policy = GoodputDepth(2, lambda b, k, ctx: 0.010 + 0.001 * k, prior_rate=0.5)
    spec = SpeculativeScheduler(ContinuousScheduler(PagedAllocator(100, 4)), Proposer(2), policy)
    reqs = [Request(i, 0.0, 8, 100) for i in range(2)]
    _prefill(spec, reqs)
    batch = spec.schedule(0.1)
    assert batch.draft_tokens == [2, 2]
    with pytest.raises(ValueError):
        spec.update(batch, StepResult(0.01, [2]), 0.11)
    assert [(r.num_output_tokens, r.num_computed_tokens) for r in reqs] == [(1, 8), (1, 8)]
