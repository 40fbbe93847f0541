"""The benchmark client (workload.client): per-request latency breaks a closed loop's lock-step
waves, seeded; ramp-up staggers clients; warm-up requests are left out of the summary; bad
values are one-line errors; open loops keep their results unless the client is turned on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim import simulate
from sim.api import workload_process
from sim.config import ConfigError, load_config
from sim.workload import ClientLatency, ClientSpec

CLIENTS = 8


def closed(client: dict | None = None, seed: int = 0, n: int = CLIENTS * 20, **workload) -> dict:
    """Identical requests (1024 in, 128 out) from 8 closed-loop clients, vLLM's defaults."""
    wl = {"arrival": "closed", "concurrency": CLIENTS, "num_requests": n,
          "prompt_tokens": 1024, "output_tokens": 128, **workload}
    if client is not None:
        wl["client"] = client
    return {"seed": seed, "engine": {"preset": "vllm"}, "workload": wl}


def prompts_per_first_token_step(requests: pd.DataFrame) -> float:
    """Mean number of requests whose first token comes out of the same step, over the second
    half of the run (after the start-up burst): the size of a wave."""
    late = requests[requests["request_id"] >= len(requests) // 2]
    return float(late.groupby("first_token_time").size().mean())


def test_without_client_latency_identical_requests_stay_in_lock_step():
    requests = simulate(closed({"mode": "off"})).requests
    assert prompts_per_first_token_step(requests) == CLIENTS  # every wave is every client


def test_closed_loop_does_not_stay_in_lock_step_by_default():
    result = simulate(closed())
    wave = prompts_per_first_token_step(result.requests)
    assert wave < 0.75 * CLIENTS  # waves broke up (4.0 when written; all 8 without the client)
    # the arrivals are no longer a few instants: the clients drifted apart
    late = result.requests[result.requests["request_id"] >= CLIENTS * 10]
    assert late["arrival_time"].nunique() == len(late)


def test_client_delays_are_seeded():
    a, b = simulate(closed(seed=3)).requests, simulate(closed(seed=3)).requests
    pd.testing.assert_frame_equal(a, b)
    c = simulate(closed(seed=4)).requests
    assert not np.array_equal(a["arrival_time"].to_numpy(), c["arrival_time"].to_numpy())


def test_send_delay_is_network_then_a_one_at_a_time_front_end():
    spec = ClientSpec(latency_s=0.0, frontend_s=1e-3, frontend_s_per_token=1e-6)
    client = ClientLatency(spec, seed=0)
    # three requests sent together reach the scheduler one front-end time apart
    delays = [client.send_delay(0.0, 1000) for _ in range(3)]
    assert delays == pytest.approx([2e-3, 4e-3, 6e-3])
    assert client.send_delay(1.0, 0) == pytest.approx(1e-3)  # an idle front end: no wait
    noisy = ClientLatency(ClientSpec(latency_s=1e-3, latency_sigma=0.5), seed=0)
    draws = np.array([noisy.return_delay() for _ in range(4000)])
    assert np.median(draws) == pytest.approx(1e-3, rel=0.05)  # the median is latency_ms


def test_ramp_up_staggers_the_clients_first_requests():
    cfg = closed({"ramp_up_s": 0.8, "latency_ms": 0, "frontend_ms": 0,
                  "frontend_us_per_token": 0})
    first = simulate(cfg).requests.sort_values("request_id").head(CLIENTS)
    assert first["arrival_time"].tolist() == pytest.approx([0.1 * i for i in range(CLIENTS)])


def test_warmup_requests_and_seconds_are_left_out_of_the_summary():
    full = simulate(closed({"mode": "off"}))
    warm = simulate(closed({"mode": "off", "warmup_requests": 16}))
    assert warm.summary["warmup_requests_excluded"] == 16
    assert warm.summary["completed"] == full.summary["completed"] - 16
    assert len(warm.requests) == len(full.requests)  # still sent and served: load, not data
    kept = full.requests[full.requests["request_id"] >= 16]
    assert warm.summary["mean_ttft_ms"] == pytest.approx(kept["ttft"].mean() * 1e3)
    by_time = simulate(closed({"mode": "off", "warmup_s": 1.0}))
    sent_late = full.requests["arrival_time"] >= 1.0
    assert by_time.summary["completed"] == int(sent_late.sum())
    assert by_time.summary["warmup_requests_excluded"] == int((~sent_late).sum())


def test_open_loops_are_unchanged_by_default_and_refused_by_the_lane_when_on():
    from sim import lane

    base = {"workload": {"arrival": "poisson", "rate": 20, "num_requests": 200}}
    default = simulate(base)
    off = simulate({"workload": {**base["workload"], "client": {"mode": "off"}}})
    pd.testing.assert_frame_equal(default.requests, off.requests)
    on_cfg = load_config({"workload": {**base["workload"], "client": {"mode": "on"}}})
    assert lane.reason_not_served([], workload_process(on_cfg)) == (
        "client latency (workload.client) is on")
    on = simulate(on_cfg)
    # the same requests, sent at the same instants; a first token is typically later by the
    # send path (one-way network + the one-at-a-time front end, >= frontend_ms = 1 ms), though
    # a request that reaches the server later may join a different, shorter step
    assert on.requests["arrival_time"].tolist() == default.requests["arrival_time"].tolist()
    later_by = on.requests["ttft"] - default.requests["ttft"]
    assert later_by.median() >= 1e-3 and later_by.mean() > 0


@pytest.mark.parametrize("override, field, says", [
    ("workload.client.latency_ms=-1", "workload.client.latency_ms", ["0", "(got -1)"]),
    ("workload.client.mode=sometimes", "workload.client.mode",
     ["'auto'", "'on'", "'off'", "(got 'sometimes')"]),
    ("workload.client.warmup_requests=-2", "workload.client.warmup_requests", ["0", "(got -2)"]),
])
def test_bad_client_values_are_one_line_errors(override, field, says):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert message.startswith(f"{field}: ") and "\n" not in message
    assert all(part in message for part in says)  # the allowed values and the bad one


def test_ramp_up_in_an_open_loop_is_an_error():
    with pytest.raises(ConfigError, match=r"^workload.client.ramp_up_s: staggers closed-loop "
                                          r"clients; allowed with arrival: closed$"):
        simulate({"workload": {"arrival": "poisson", "client": {"ramp_up_s": 2}}})


def test_an_open_loop_capped_by_concurrency_never_has_more_in_flight():
    """vllm bench serve --request-rate 200 --max-concurrency 4: requests due while four are in
    flight wait at the client; their clocks start when they get a slot."""
    cfg = {"workload": {"arrival": "poisson", "rate": 200, "num_requests": 120,
                        "concurrency": 4, "prompt_tokens": 256, "output_tokens": 32}}
    requests = simulate(cfg).requests
    for t in requests["arrival_time"]:
        in_flight = ((requests["arrival_time"] <= t) & (requests["finish_time"] > t)).sum()
        assert in_flight <= 4
    plain = simulate({"workload": {**cfg["workload"], "concurrency": None}}).requests
    # the cap binds: later requests start later than their Poisson instants
    assert requests["arrival_time"].iloc[-1] > plain["arrival_time"].iloc[-1]


def test_a_cap_that_never_binds_gives_the_open_loops_results():
    from sim import lane

    base = {"arrival": "poisson", "rate": 5, "num_requests": 60}
    plain = simulate({"workload": base}).requests
    capped_cfg = load_config({"workload": {**base, "concurrency": 10_000,
                                           "client": {"mode": "off"}}})
    pd.testing.assert_frame_equal(simulate(capped_cfg).requests, plain)
    assert lane.reason_not_served([], workload_process(capped_cfg)) == (
        "the open loop is capped by workload.concurrency")


def test_warm_up_exclusion_measures_rates_over_its_own_window():
    """A steady closed loop served the same with or without its first half left out: the
    measured half's rates are counted over the window it was sent in, not from t = 0."""
    full = simulate(closed({"mode": "off"}))
    warm = simulate(closed({"mode": "off", "warmup_requests": CLIENTS * 10}))
    for rate in ("request_throughput", "output_throughput"):
        assert warm.summary[rate] == pytest.approx(full.summary[rate], rel=0.15)
    kept = warm.requests[warm.requests["request_id"] >= CLIENTS * 10]
    window = kept["finish_time"].max() - kept["arrival_time"].min()
    assert warm.summary["request_throughput"] == pytest.approx(len(kept) / window)
