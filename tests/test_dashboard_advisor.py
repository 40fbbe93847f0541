"""The advisor offers only remedies that can change the run, and says so when one did not.

The case that prompted this: at a light load "2x max_num_seqs" was offered for cost and its
re-simulated numbers were those of the current config, because the run never held as many
sequences as the cap: the cap never refused one, so raising it changes no decision."""

from __future__ import annotations

import sim
from dashboard import advisor, runner

LIGHT = {"workload": {"num_requests": 40, "rate": 8.0}}  # a handful of sequences at once
CAPPED = {"workload": {"num_requests": 60, "rate": 40.0}, "scheduler": {"max_num_seqs": 4}}


def _names(remedies: list[advisor.Remedy]) -> list[str]:
    return [r.name for r in remedies]


def test_a_cap_the_run_never_reached_is_not_offered_and_truly_changes_nothing():
    base = sim.simulate(LIGHT)
    peak = advisor.peak_sequences(base.steps)
    assert peak < base.config.scheduler.max_num_seqs
    assert "2x max_num_seqs" not in _names(advisor.remedies("cost", base.config, base.steps))
    idle = {r.name: r.idle for r in advisor.idle_remedies("cost", base.config, base.steps)}
    assert idle["2x max_num_seqs"].startswith(f"at most {peak} sequences ran at once")
    # the reason holds: the doubled cap gives the very same run
    doubled = sim.simulate({**LIGHT, "scheduler": {"max_num_seqs": 512}})
    assert doubled.summary == base.summary


def test_a_cap_the_run_reached_is_offered_and_changes_the_run():
    base = sim.simulate(CAPPED)
    assert advisor.peak_sequences(base.steps) == 4
    assert "2x max_num_seqs" in _names(advisor.remedies("cost", base.config, base.steps))
    assert "half max_num_seqs" in _names(
        advisor.remedies("decode throughput", base.config, base.steps))
    doubled = sim.simulate({**CAPPED, "scheduler": {"max_num_seqs": 8}})
    assert doubled.summary["output_throughput"] != base.summary["output_throughput"]


def test_without_the_run_every_remedy_is_offered():
    config = sim.simulate(LIGHT).config
    assert "2x max_num_seqs" in _names(advisor.remedies("cost", config))


def test_a_remedy_that_measures_as_the_current_run_is_marked_and_listed_last():
    """The table says "no effect" instead of showing a 0% gain. The run function here stands
    for a simulator in which the token budget changes nothing (its real effect on the KV pool,
    through activation memory, makes every real re-simulation differ a little)."""
    mapping = {**LIGHT, "slo": {"ttft_ms": 1.0}}
    base = runner.run_mapping(mapping)

    def run(config):  # the budget's remedy re-simulates to the current run
        budget = config.get("scheduler", {}).get("max_num_batched_tokens")
        return base if budget else runner.run_mapping(config)

    limit = advisor.binding(advisor.diagnose(base, 3.0))
    assert limit is not None and limit.name == "TTFT"
    table = advisor.evaluate(mapping, limit, 3.0, run)
    assert table["remedy"].iloc[-1] == "2x token budget"  # marked rows come last
    row = table.iloc[-1]
    assert row["note"] == advisor.NO_EFFECT and row["change"] == 0.0
    assert (table["note"].iloc[1:-1] == "").all()  # the others did change something
