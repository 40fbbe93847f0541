"""Hand-derived checks of ``sim.workload`` (issue #27: mutation testing of ``sim/workload.py``;
docs/mutation/sim-workload.md). Random draws are replaced by recording stubs where the question
is which parameters reach numpy, so every expected number below is worked out by hand; where a
real generator is needed, the reference stream is built with numpy alone from the documented
seeding (child k of ``SeedSequence(seed)``)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from sim.workload import (
    MAX_TOKENS,
    ClientLatency,
    ClientSpec,
    LengthDist,
    RequestFactory,
    WorkloadError,
    _check_length,
    _number,
    _tokens,
    arrival_times,
    open_loop_requests,
    parse_length,
    shown,
)


class _Rng:
    """Records each draw's arguments and returns the canned raw values."""

    def __init__(self, raw):
        self.raw = np.asarray(raw, dtype=np.float64)
        self.calls = []

    def _draw(self, name, *args, **kw):
        self.calls.append((name, args, kw))
        return self.raw.copy()

    def integers(self, *a, **k):
        return self._draw("integers", *a, **k)

    def lognormal(self, *a, **k):
        return self._draw("lognormal", *a, **k)

    def normal(self, *a, **k):
        return self._draw("normal", *a, **k)

    def choice(self, *a, **k):
        return self._draw("choice", *a, **k)

    def exponential(self, *a, **k):
        return self._draw("exponential", *a, **k)

    def gamma(self, *a, **k):
        return self._draw("gamma", *a, **k)


# --- LengthDist.sample: the parameters each distribution hands to numpy ----------------------
def test_raw_draws_are_rounded_half_to_even_then_clipped_to_min_and_max():
    rng = _Rng([0.4, 2.5, 3.5, 7.0, 1e12])
    out = LengthDist("normal", mean=5.0, sigma=2.0).sample(rng, 5)
    assert rng.calls == [("normal", (5.0, 2.0), {"size": 5})]
    # rint: 0, 2, 4, 7, 1e12; clipped to [1, 2^30]
    assert out.tolist() == [1, 2, 4, 7, 1 << 30] and out.dtype == np.int64
    out = LengthDist("normal", mean=5.0, sigma=2.0, min=3, max=6).sample(_Rng([2.0, 9.0]), 2)
    assert out.tolist() == [3, 6]


def test_lognormal_gets_the_log_mean_that_keeps_the_mean():
    rng = _Rng([99.6])
    out = LengthDist("lognormal", mean=100.0, sigma=0.5).sample(rng, 1)
    name, (mu, sigma), kw = rng.calls[0]
    assert name == "lognormal" and sigma == 0.5 and kw == {"size": 1}
    # E[X] = exp(mu + sigma^2 / 2) = 100  =>  mu = ln 100 - 0.125
    assert mu == pytest.approx(math.log(100.0) - 0.125, rel=1e-12)
    assert out.tolist() == [100]


def test_uniform_draws_the_closed_range_and_fixed_repeats_its_value():
    rng = _Rng([2.0, 5.0])
    assert LengthDist("uniform", low=2, high=5).sample(rng, 2).tolist() == [2, 5]
    assert rng.calls == [("integers", (2, 6), {"size": 2})]  # high + 1: numpy's is exclusive
    fixed = LengthDist("fixed", value=7).sample(_Rng([]), 3)
    assert fixed.tolist() == [7, 7, 7] and fixed.dtype == np.int64
    assert LengthDist("fixed", value=7, min=9).sample(_Rng([]), 1).tolist() == [9]


def test_empirical_resamples_the_values_with_normalised_weights():
    rng = _Rng([20.0, 10.0])
    out = LengthDist("empirical", values=(10, 20), weights=(1.0, 3.0)).sample(rng, 2)
    name, (values,), kw = rng.calls[0]
    assert name == "choice" and values.tolist() == [10.0, 20.0] and values.dtype == np.float64
    assert kw["size"] == 2 and kw["p"].tolist() == [0.25, 0.75]
    assert out.tolist() == [20, 10]
    rng = _Rng([10.0])
    LengthDist("empirical", values=(10, 20)).sample(rng, 1)
    assert rng.calls[0][2]["p"] is None  # no weights: uniform over the values


def test_real_draws_stay_in_range():
    rng = np.random.default_rng(0)
    draws = LengthDist("uniform", low=2, high=3).sample(rng, 400)
    assert set(draws.tolist()) == {2, 3}


def test_expected_length_of_each_distribution():
    assert LengthDist("fixed", value=7).expected() == 7.0
    assert isinstance(LengthDist("fixed", value=7).expected(), float)
    assert LengthDist("uniform", low=2, high=5).expected() == 3.5
    assert LengthDist("lognormal", mean=120.0, sigma=1.0).expected() == 120.0
    assert LengthDist("normal", mean=80.0, sigma=9.0).expected() == 80.0
    assert LengthDist("empirical", values=(10, 20), weights=(1.0, 3.0)).expected() == 17.5
    assert LengthDist("empirical", values=(10, 20)).expected() == 15.0


# --- parse_length and the field checks: values and one-line errors ---------------------------
def test_a_number_is_a_fixed_length():
    assert parse_length(5, "w.prompt") == LengthDist("fixed", value=5)
    assert parse_length(5.0, "w.prompt") == LengthDist("fixed", value=5)
    assert parse_length({"value": 3}, "w.prompt") == LengthDist("fixed", value=3)  # default dist


def test_a_mapping_is_parsed_key_by_key():
    d = parse_length({"dist": "lognormal", "mean": 100, "sigma": 0.5, "min": 2.0, "max": 500},
                     "w.prompt")
    assert d == LengthDist("lognormal", mean=100.0, sigma=0.5, min=2, max=500)
    assert isinstance(d.mean, float) and isinstance(d.min, int)
    e = parse_length({"dist": "empirical", "values": [3, 4.0], "weights": [1, 2]}, "w.out")
    assert e.values == (3, 4) and all(isinstance(v, int) for v in e.values)
    assert e.weights == (1.0, 2.0) and all(isinstance(w, float) for w in e.weights)
    u = parse_length({"dist": "uniform", "low": 2, "high": 2}, "w.out")  # low == high is fine
    assert (u.low, u.high) == (2, 2)


@pytest.mark.parametrize("spec, message", [
    (True, "w.p: expected a token count or a mapping with 'dist' (got True)"),
    (0, "w.p: must be a whole number of tokens, 1 <= tokens <= 2147483647 (got 0)"),
    ("x", "w.p: expected a token count or a mapping with 'dist' (got 'x')"),
    ({"dist": "zipf"}, "w.p.dist: unknown 'zipf'; allowed: fixed, uniform, lognormal, normal, "
                       "empirical"),
    ({"dist": 3}, "w.p.dist: unknown 3; allowed: fixed, uniform, lognormal, normal, empirical"),
    ({"dist": "fixed", "value": 3, "foo": 1, "bar": 2},
     "w.p: unknown key(s) ['bar', 'foo']; allowed: ['high', 'low', 'max', 'mean', 'min', "
     "'sigma', 'value', 'values', 'weights']"),
    ({"dist": "empirical", "values": []}, "w.p.values: a non-empty list (got [])"),
    ({"dist": "empirical", "values": 5}, "w.p.values: a non-empty list (got 5)"),
    ({"dist": "empirical", "values": [3], "weights": ()}, "w.p.weights: a non-empty list (got ())"),
    ({"dist": "empirical", "values": [3, 0]},
     "w.p.values: must be a whole number of tokens, 1 <= tokens <= 2147483647 (got 0)"),
    ({"dist": "empirical", "values": [3], "weights": ["a"]},
     "w.p.weights: expected a finite number (got 'a')"),
    ({"dist": "normal", "mean": "big", "sigma": 1},
     "w.p.mean: expected a finite number (got 'big')"),
    ({"dist": "normal", "mean": 5, "sigma": math.inf},
     "w.p.sigma: expected a finite number (got inf)"),
    ({"dist": "uniform", "low": 2.5, "high": 4},
     "w.p.low: must be a whole number of tokens, 1 <= tokens <= 2147483647 (got 2.5)"),
    ({"dist": "uniform", "low": 5, "high": 2}, "w.p: uniform needs low <= high (got 5, 2)"),
    ({"dist": "lognormal", "mean": 0, "sigma": 1},
     "w.p: lognormal needs mean > 0 and sigma >= 0 (got mean 0.0, sigma 1.0)"),
    ({"dist": "normal", "mean": 5, "sigma": -0.5},
     "w.p: normal needs mean > 0 and sigma >= 0 (got mean 5.0, sigma -0.5)"),
    ({"dist": "empirical", "values": [3, 4], "weights": [1]},
     "w.p.weights: one weight per value: 2 values, 1 weights"),
    ({"dist": "empirical", "values": [3, 4], "weights": [2, -1]},
     "w.p.weights: needs weights >= 0 with a positive sum"),
    ({"dist": "empirical", "values": [3, 4], "weights": [0, 0]},
     "w.p.weights: needs weights >= 0 with a positive sum"),
    ({"dist": "empirical", "values": [3, 4], "weights": [1e308, 1e308]},
     "w.p.weights: needs weights >= 0 with a positive sum"),
    ({"dist": "fixed", "value": 3, "min": 5, "max": 4}, "w.p: needs 1 <= min <= max (got 5, 4)"),
])
def test_bad_lengths_are_one_line_errors_naming_the_field(spec, message):
    with pytest.raises(WorkloadError) as err:
        parse_length(spec, "w.p")
    assert str(err.value) == message


def test_an_empirical_length_without_values_is_refused():
    with pytest.raises(WorkloadError) as err:
        _check_length(LengthDist("empirical"), "w.p")
    assert str(err.value) == "w.p.values: empirical needs a non-empty list of lengths >= 1"


def test_the_edges_that_are_allowed():
    assert parse_length({"dist": "lognormal", "mean": 1e-9, "sigma": 0}, "f").sigma == 0.0
    assert parse_length({"dist": "fixed", "value": 3, "min": 4, "max": 4}, "f").max == 4
    assert parse_length({"dist": "empirical", "values": [3, 4], "weights": [0, 1]},
                        "f").weights == (0.0, 1.0)
    assert parse_length({"dist": "uniform", "low": 1, "high": MAX_TOKENS}, "f").high == MAX_TOKENS


def test_numbers_and_token_counts():
    assert _number(2, "f") == 2.0 and isinstance(_number(2, "f"), float)
    assert _number(-1.5, "f") == -1.5
    assert _number(2**1000 - 1, "f") == float(2**1000 - 1)
    for bad in (math.nan, math.inf, -math.inf, True, 2**1000, -(2**1000), "3", None):
        with pytest.raises(WorkloadError, match=r"^f: expected a finite number \(got "):
            _number(bad, "f")
    assert _tokens(1, "f") == 1 and _tokens(MAX_TOKENS, "f") == MAX_TOKENS
    assert _tokens(3.0, "f") == 3 and isinstance(_tokens(3.0, "f"), int)
    for bad in (0, MAX_TOKENS + 1, 2.5, -3):
        with pytest.raises(WorkloadError, match=r"^f: must be a whole number of tokens, "
                                                r"1 <= tokens <= 2147483647 \(got "):
            _tokens(bad, "f")
    assert MAX_TOKENS == 2147483647
    with pytest.raises(WorkloadError, match=r"^f: expected a finite number \(got 'x'\)$"):
        _tokens("x", "f")


def test_shown_cuts_long_values_at_sixty_characters():
    assert shown("ab") == "'ab'"
    assert shown("x" * 58) == "'" + "x" * 58 + "'"  # 60 characters: whole
    assert shown("x" * 59) == "'" + "x" * 59 + "..."  # 61: the first 60, then "..."
    assert shown(list(range(100))).endswith("...") and len(shown(list(range(100)))) == 63


# --- RequestFactory: streams, chunks and order -----------------------------------------------
class _Counter:
    """A length 'distribution' that counts: the k-th value drawn is start + k."""

    def __init__(self, start):
        self.next = start
        self.calls = []

    def sample(self, rng, n):
        self.calls.append((rng, n))
        out = np.arange(self.next, self.next + n)
        self.next += n
        return out


def test_the_factory_hands_out_lengths_in_draw_order_across_chunks():
    prompt, output = _Counter(100), _Counter(10)
    f = RequestFactory(prompt, output, seed=7, chunk=3)
    reqs = [f.make(0.5 * i, client_id=i % 2) for i in range(5)]
    assert [r.request_id for r in reqs] == [0, 1, 2, 3, 4]
    assert [r.prompt_tokens for r in reqs] == [100, 101, 102, 103, 104]
    assert [r.output_tokens for r in reqs] == [10, 11, 12, 13, 14]
    assert [r.arrival_time for r in reqs] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [r.client_id for r in reqs] == [0, 1, 0, 1, 0]
    assert [n for _, n in prompt.calls] == [3, 3]  # a chunk of 3, drawn again when empty
    assert f.make(9.0).client_id is None
    # each stream is its own child of SeedSequence(7): arrivals 0, prompts 1, outputs 2
    children = np.random.SeedSequence(7).spawn(3)
    first = [np.random.default_rng(c).random() for c in children]
    assert f.arrival_rng.random() == first[0]
    assert prompt.calls[0][0] is f._prompt_rng and prompt.calls[1][0] is f._prompt_rng
    assert output.calls[0][0] is f._output_rng and f._output_rng is not f._prompt_rng
    fresh = RequestFactory(_Counter(0), _Counter(0), seed=7)
    assert fresh._prompt_rng.random() == first[1] and fresh._output_rng.random() == first[2]
    assert RequestFactory(_Counter(0), _Counter(0), seed=7)._chunk == 4096


# --- arrivals ---------------------------------------------------------------------------------
def test_poisson_gaps_have_mean_one_over_rate_and_accumulate():
    rng = _Rng([0.5, 0.25])
    times = list(itertools.islice(arrival_times("poisson", 4.0, 1.0, rng, chunk=2), 5))
    assert times == [0.5, 0.75, 1.25, 1.5, 2.0]  # a new chunk of gaps after every 2
    assert rng.calls[0] == ("exponential", (0.25,), {"size": 2}) and len(rng.calls) == 3


def test_gamma_gaps_keep_the_rate_and_set_the_cv():
    rng = _Rng([1.0])
    next(arrival_times("gamma", 2.0, 0.5, rng, chunk=1))
    # shape 1 / cv^2 = 4; scale 1 / (rate x shape) = 1/8: mean gap shape x scale = 1/2 = 1/rate
    assert rng.calls == [("gamma", (4.0, 0.125), {"size": 1})]
    rng = _Rng([1.0] * 4096)
    next(arrival_times("gamma", 2.0, 2.0, rng))
    assert rng.calls[0][1] == (0.25, 2.0) and rng.calls[0][2] == {"size": 4096}


def _factory_with_gaps(gap):
    f = RequestFactory(LengthDist("fixed", value=4), LengthDist("fixed", value=2), seed=0)
    f.arrival_rng = _Rng([gap] * 4096)
    return f


def test_open_loop_stops_at_the_count_or_after_the_duration():
    f = _factory_with_gaps(1.0)
    reqs = list(open_loop_requests(f, "poisson", 1.0, 1.0, 3, None))
    assert [r.arrival_time for r in reqs] == [1.0, 2.0, 3.0]
    assert f.arrival_rng.calls[0][0] == "exponential"
    g = _factory_with_gaps(1.0)
    assert len(list(open_loop_requests(g, "gamma", 2.0, 0.5, 2, None))) == 2
    assert g.arrival_rng.calls[0][:2] == ("gamma", (4.0, 0.125))  # the rate and cv reach it
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(4, 2)] * 3
    # t == duration is still sent; the first t > duration ends the run
    reqs = list(open_loop_requests(_factory_with_gaps(1.0), "poisson", 1.0, 1.0, None, 3.0))
    assert [r.arrival_time for r in reqs] == [1.0, 2.0, 3.0]
    assert list(open_loop_requests(_factory_with_gaps(1.0), "poisson", 1.0, 1.0, 0, None)) == []
    both = open_loop_requests(_factory_with_gaps(1.0), "poisson", 1.0, 1.0, 10, 2.5)
    assert [r.arrival_time for r in both] == [1.0, 2.0]
    endless = open_loop_requests(_factory_with_gaps(0.5), "poisson", 1.0, 1.0, None, None)
    assert len(list(itertools.islice(endless, 50))) == 50


# --- client latency ---------------------------------------------------------------------------
def test_which_settings_add_latency():
    assert not ClientSpec().adds_latency
    assert not ClientSpec(ramp_up_s=5.0, latency_sigma=1.0).adds_latency
    assert ClientSpec(latency_s=0.01).adds_latency
    assert ClientSpec(frontend_s=0.002).adds_latency
    assert ClientSpec(frontend_s_per_token=1e-6).adds_latency


def test_the_front_end_serves_requests_one_at_a_time_in_send_order():
    c = ClientLatency(ClientSpec(frontend_s=0.1, frontend_s_per_token=0.001), seed=1)
    assert c.send_delay(0.0, 100) == pytest.approx(0.2)  # 0.1 + 100 x 0.001
    # sent at 0.05 while the first is in the front end until 0.2: starts then, done at 0.35
    assert c.send_delay(0.05, 50) == pytest.approx(0.30)
    assert c.send_delay(1.0, 0) == pytest.approx(0.1)  # an idle front end starts at once
    assert c.return_delay() == 0.0  # no network latency configured
    assert ClientLatency(ClientSpec(), seed=1).send_delay(3.0, 1000) == 0.0


def test_network_latency_is_lognormal_around_the_median_from_stream_three():
    spec = ClientSpec(latency_s=0.01, latency_sigma=0.5)
    c = ClientLatency(spec, seed=5)
    ref = np.random.default_rng(np.random.SeedSequence(5).spawn(4)[3])  # child 3 of the seed
    z1, z2 = ref.standard_normal(), ref.standard_normal()
    assert c.send_delay(2.0, 10) == pytest.approx(0.01 * math.exp(0.5 * z1), rel=1e-12)
    assert c.return_delay() == pytest.approx(0.01 * math.exp(0.5 * z2), rel=1e-12)
    flat = ClientLatency(ClientSpec(latency_s=0.01), seed=5)  # sigma 0: exactly the median
    assert flat.return_delay() == 0.01
    # no latency means none, whatever the spread (no 0 x exp(huge) = 0 x inf = NaN): the
    # reference stream's first 10 normals include some above 0.71, where exp(1000 z) overflows
    assert max(np.random.default_rng(np.random.SeedSequence(0).spawn(4)[3])
               .standard_normal(10)) > 0.71
    none = ClientLatency(ClientSpec(latency_sigma=1000.0, frontend_s=0.001), seed=0)
    assert [none.return_delay() for _ in range(10)] == [0.0] * 10


def test_ramp_up_spreads_the_clients_first_sends():
    c = ClientLatency(ClientSpec(ramp_up_s=10.0), seed=0)
    assert c.start_delay(3, 4) == 7.5 and c.start_delay(0, 4) == 0.0
    assert ClientLatency.STREAM == 3
