"""Each engine preset admits a prompt as long as its token budget while other requests decode
(issue #21, finding 4): the scheduler built from the preset, stepped by hand."""

from __future__ import annotations

import pytest

from policies.base import is_prefilling
from policies.presets import PRESETS
from sim.build import build
from sim.config import load_config
from sim.core import Request, StepResult

STEP_S = 0.01


def scheduler_of(*overrides: str):
    return build(load_config(None, list(overrides))).replicas[0].scheduler


def start_decoding(sched, count: int) -> list[Request]:
    """``count`` short requests, stepped until every one of them decodes."""
    running = [Request(i, 0.0, 16, 1000) for i in range(count)]
    for req in running:
        assert sched.add_request(req, 0.0)
    now = 0.0
    while any(r.num_output_tokens == 0 for r in running):
        batch = sched.schedule(now)
        now += STEP_S
        sched.update(batch, StepResult(STEP_S), now)
    return running


def first_step_with(sched, long: Request, now: float):
    assert sched.add_request(long, now)
    batch = sched.schedule(now)
    assert batch is not None
    return batch


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_admits_a_budget_long_prompt_beside_running_decodes(name):
    sched = scheduler_of(f"engine.preset={name}")
    budget = sched.max_num_batched_tokens
    decoding = start_decoding(sched, min(3, sched.max_num_seqs - 1))
    long = Request(99, 1.0, budget, 8)
    batch = first_step_with(sched, long, 1.0)
    assert long in batch.requests  # admitted at once: not waiting for the decodes to end
    new = batch.new_tokens[batch.requests.index(long)]
    assert new > 0
    if not getattr(sched, "split_prompts", True):  # whole prompts only (trtllm): all of it
        assert new == budget
    # the decodes go on: still running, and in the same step wherever steps are mixed
    assert all(r in sched.running and not is_prefilling(r) for r in decoding)
    if type(sched).__name__ == "ChunkedPrefillScheduler":
        assert all(r in batch.requests for r in decoding)


def test_whole_prompts_counted_with_decodes_wait_for_the_decodes_to_end():
    """The old trtllm preset (finding 4): a budget of 8,192 holding decodes and whole prompts
    never fits an 8,192-token prompt beside a decode, so it waits for every decode to end."""
    sched = scheduler_of("engine.preset=trtllm", "scheduler.budget_counts_decodes=true")
    start_decoding(sched, 1)
    long = Request(99, 1.0, sched.max_num_batched_tokens, 8)
    batch = first_step_with(sched, long, 1.0)
    assert long not in batch.requests and long in list(sched.waiting)


def test_decodes_outside_the_budget_leave_it_whole_for_prompts():
    sched = scheduler_of("engine.preset=trtllm", "scheduler.max_num_batched_tokens=100",
                         "scheduler.split_prompts=true")
    start_decoding(sched, 3)
    long = Request(99, 1.0, 250, 8)
    batch = first_step_with(sched, long, 1.0)
    # 3 decode tokens ride on top of the budget: the prompt gets all 100 budget tokens
    assert batch.new_tokens == [1, 1, 1, 100]
