"""Queueing sanity: one request at a time with fixed lengths is an M/D/1 queue."""

import numpy as np

from policies.continuous import ContinuousScheduler
from policies.kv_paged import PagedAllocator
from sim.workload import LengthDist, RequestFactory, open_loop_requests
from tests.helpers import LinearHardware, run_requests

PROMPT, OUTPUT = 200, 20


def service_time_s(hw: LinearHardware) -> float:
    """One prefill step of the prompt, then OUTPUT - 1 decode steps of one token each."""
    prefill = hw.step_time_s([(PROMPT, 0)])
    decodes = sum(hw.step_time_s([(1, PROMPT + i)]) for i in range(OUTPUT - 1))
    return prefill + decodes


def test_md1_mean_queueing_delay_matches_pollaczek_khinchine():
    hw = LinearHardware(base_s=0.004, per_token_s=2e-5, per_context_s=0.0)
    service = service_time_s(hw)
    rho = 0.5
    rate = rho / service
    factory = RequestFactory(LengthDist("fixed", value=PROMPT), LengthDist("fixed", value=OUTPUT),
                             seed=7)
    requests = open_loop_requests(factory, "poisson", rate, 1.0, 20_000, None)
    scheduler = ContinuousScheduler(PagedAllocator(10_000, 16), max_num_seqs=1)
    df = run_requests(scheduler, requests, hw).requests_frame()
    assert len(df) == 20_000 and not df["rejected"].any()
    # Every request is served alone and takes exactly the deterministic service time.
    np.testing.assert_allclose(df["finish_time"] - df["first_scheduled_time"], service, rtol=1e-9)
    pk_wait = rho * service / (2 * (1 - rho))  # Pollaczek-Khinchine for deterministic service
    measured = df["queue_delay"].mean()
    assert abs(measured - pk_wait) / pk_wait < 0.05, (measured, pk_wait)
