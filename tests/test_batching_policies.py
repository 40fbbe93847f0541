"""Static versus continuous batching: the direction every serving guide claims."""

from examples.static_vs_continuous import compare


def test_continuous_batching_far_outperforms_static_on_varied_outputs():
    results = compare(num_requests=300)
    static, continuous = results["static"], results["continuous"]
    assert static["completed"] == continuous["completed"] == 300
    assert continuous["output_throughput"] > 1.5 * static["output_throughput"]
    assert continuous["mean_e2el_ms"] < static["mean_e2el_ms"]
