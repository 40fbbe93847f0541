"""Synthetic sessions (``arrival: sessions``) draw what ``workload.session`` names: statistical
tests with fixed seeds (false-positive rate <= ALPHA = 1e-3 on a fresh seed, as in
tests/test_distributions_stats.py) and the context growth by hand.

User turns add 100 tokens and tool results 7 here, so a turn's kind can be read off its
prompt growth: prompt_{i+1} = prompt_i + output_i + added.
"""

import functools
import itertools
import math

import numpy as np
from scipy import stats

from sim.sessions import SessionGenerator, parse_session_spec

ALPHA = 1e-3
SPEC = {"turns": {"dist": "uniform", "low": 2, "high": 8}, "user_tokens": 100,
        "tool_result_tokens": 7, "output_tokens": {"dist": "uniform", "low": 1, "high": 50},
        "think_time_s": 10.0, "tool_call_prob": 0.3, "max_tool_calls": 2, "tool_time_s": 1.0,
        "max_context_tokens": 10**9, "system_prompt_tokens": 1024}
SESSIONS = 2000


@functools.cache
def _sessions():
    gen = SessionGenerator(parse_session_spec(SPEC), seed=11)
    return tuple(s.root.turns for s in itertools.islice(gen, SESSIONS))


def _classify(turns):
    """(kind, delay) of every turn after the first: 'user' or 'tool', by the tokens it added."""
    out = []
    for prev, turn in itertools.pairwise(turns):
        added = turn.prompt_tokens - prev.prompt_tokens - prev.output_tokens
        assert added in (100, 7), added
        out.append(("user" if added == 100 else "tool", turn.delay_s))
    return out


def test_context_grows_by_what_each_turn_adds_and_starts_at_the_system_prompt():
    for turns in _sessions()[:200]:
        assert turns[0].prompt_tokens == 1024 + 100 and turns[0].delay_s == 0.0
        _classify(turns)  # asserts every step adds 100 (user) or 7 (tool result)


def test_user_turns_per_session_are_uniform_and_tool_calls_geometric_capped():
    """Per user turn, tool calls: P(0) = 0.7, P(1) = 0.3 x 0.7 = 0.21, P(2) = 0.3^2 = 0.09
    (at most 2 in a row)."""
    user_turns, calls = [], []
    for turns in _sessions():
        kinds = ["user"] + [k for k, _ in _classify(turns)]
        user_turns.append(kinds.count("user"))
        runs = "".join("u" if k == "user" else "t" for k in kinds).split("u")[1:]
        calls += [len(r) for r in runs]
    observed = np.bincount(user_turns, minlength=9)[2:9]
    assert stats.chisquare(observed).pvalue > ALPHA  # uniform on 2..8
    counts = np.bincount(calls, minlength=3)
    assert len(counts) == 3  # never 3 tool calls in a row
    expected = np.array([0.7, 0.21, 0.09]) * len(calls)
    assert stats.chisquare(counts, expected).pvalue > ALPHA


def test_think_and_tool_times_are_exponential_with_their_means():
    classified = [c for turns in _sessions() for c in _classify(turns)]
    think = np.array([d for k, d in classified if k == "user"])
    tool = np.array([d for k, d in classified if k == "tool"])
    assert len(think) > 5000 and len(tool) > 2000
    for delays, mean in ((think, 10.0), (tool, 1.0)):
        assert abs(delays.mean() - mean) <= 4 * mean / math.sqrt(len(delays))
        assert stats.kstest(delays, lambda d, m=mean: 1 - np.exp(-d / m)).pvalue > ALPHA
