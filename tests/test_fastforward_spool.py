"""Big-run metrics: spooled step records and the batched ITL histogram equal the in-memory ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from policies.chunked import ChunkedPrefillScheduler
from policies.kv_paged import PagedAllocator
from sim.engine import Engine, Replica, open_loop
from sim.executors import RooflineExecutor
from sim.metrics import LogHistogram, MetricsRecorder
from sim.workload import LengthDist, RequestFactory, open_loop_requests
from tests.helpers import LinearHardware


def run(metrics: MetricsRecorder, fast_forward: bool = True) -> MetricsRecorder:
    factory = RequestFactory(LengthDist("uniform", low=10, high=300),
                             LengthDist("uniform", low=1, high=200), seed=5)
    sched = ChunkedPrefillScheduler(PagedAllocator(400, 16), 32, 256)
    engine = Engine([Replica(0, sched, RooflineExecutor(LinearHardware()))], metrics,
                    fast_forward=fast_forward)
    engine.run(open_loop(open_loop_requests(factory, "poisson", 20.0, 1.0, 300, None)))
    return metrics


def test_spooled_steps_equal_the_in_memory_table(tmp_path):
    memory = run(MetricsRecorder())
    spooled = run(MetricsRecorder(spool_dir=tmp_path, spool_rows=1000))
    assert spooled.num_steps == memory.num_steps > 2000  # several row groups
    pd.testing.assert_frame_equal(spooled.steps_frame(), memory.steps_frame(), check_exact=True)
    assert spooled.steps_path() == tmp_path / "steps.parquet"
    pd.testing.assert_frame_equal(spooled.requests_frame(), memory.requests_frame(),
                                  check_exact=True)


def test_a_run_without_steps_still_writes_the_columns(tmp_path):
    frame = MetricsRecorder(spool_dir=tmp_path).steps_frame()
    assert len(frame) == 0 and "kv_blocks_used" in frame.columns


def test_weighted_values_bin_like_repeated_ones():
    rng = np.random.default_rng(0)
    values = rng.lognormal(-4, 1, 5000)
    weights = rng.integers(1, 9, 5000)
    one_by_one, bulk = LogHistogram(), LogHistogram()
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        for _ in range(w):
            one_by_one.add(v)
    bulk.add_many(values, weights)
    np.testing.assert_array_equal(one_by_one.counts(), bulk.counts())
    assert one_by_one.count == bulk.count == weights.sum()
    np.testing.assert_allclose(one_by_one.mean(), bulk.mean(), rtol=1e-12)
    assert one_by_one.quantile(0.99) == bulk.quantile(0.99)
