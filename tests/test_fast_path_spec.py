"""A policy option the compiled lane does not declare sends the run to the general engine
(issue #23): each policy records its options and declares what the lane mirrors."""

import inspect
from types import SimpleNamespace

import pytest

import policies
from hwmodels.roofline import RooflineModel
from policies.chunked import ChunkedPrefillScheduler
from policies.continuous import ContinuousScheduler
from policies.fastpath import records_options
from policies.kv_paged import PagedAllocator
from sim import lane
from sim.executors import RooflineExecutor


def _replica(scheduler) -> list:
    hardware = RooflineModel("H100", "llama-3.1-8b")
    return [SimpleNamespace(scheduler=scheduler, executor=RooflineExecutor(hardware))]


OPEN_LOOP = SimpleNamespace(requests=[])


class WithDummyUndeclared(ChunkedPrefillScheduler):
    """A new option, added the way every option is (recorded), not yet declared."""

    FAST_PATH = dict(ChunkedPrefillScheduler.FAST_PATH)

    @records_options
    def __init__(self, *args, dummy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.dummy = dummy


class WithDummyDeclared(WithDummyUndeclared):
    FAST_PATH = {**ChunkedPrefillScheduler.FAST_PATH, "dummy": (False,)}


def test_a_new_option_is_refused_until_declared():
    sched = WithDummyUndeclared(PagedAllocator(64, 16), 8, 256)
    assert sched.options["dummy"] is False  # recorded at its default
    reason = lane.reason_not_served(_replica(sched), OPEN_LOOP)
    assert reason == "the scheduler option 'dummy' is not declared for the fast path"
    declared = WithDummyDeclared(PagedAllocator(64, 16), 8, 256)
    assert lane.reason_not_served(_replica(declared), OPEN_LOOP) is None
    on = WithDummyDeclared(PagedAllocator(64, 16), 8, 256, dummy=True)
    assert (lane.reason_not_served(_replica(on), OPEN_LOOP)
            == "the scheduler option dummy=True is not mirrored by the fast path")


def test_declared_values_only():
    sched = ChunkedPrefillScheduler(PagedAllocator(64, 16), 8, 256, split_prompts=False)
    assert "split_prompts=False" in lane.reason_not_served(_replica(sched), OPEN_LOOP)
    sched = ContinuousScheduler(PagedAllocator(64, 16), 8, 256, admission="no_evict")
    assert "admission='no_evict'" in lane.reason_not_served(_replica(sched), OPEN_LOOP)
    assert lane.reason_not_served(
        _replica(ContinuousScheduler(PagedAllocator(64, 16), 8, 256)), OPEN_LOOP) is None


def test_a_subclass_does_not_inherit_its_bases_declaration():
    class Tweaked(ContinuousScheduler):
        def schedule(self, now):  # could change what any option means
            return super().schedule(now)

    reason = lane.reason_not_served(_replica(Tweaked(PagedAllocator(64, 16))), OPEN_LOOP)
    assert reason == "the scheduler (Tweaked) declares no fast path"

    class Pool(PagedAllocator):
        pass

    reason = lane.reason_not_served(_replica(ContinuousScheduler(Pool(64, 16))), OPEN_LOOP)
    assert reason == "the KV allocator (Pool) declares no fast path"


def _declaring_classes() -> list[type]:
    import importlib
    import pkgutil

    classes = []
    for info in pkgutil.iter_modules(policies.__path__):
        module = importlib.import_module(f"policies.{info.name}")
        classes += [c for c in vars(module).values()
                    if inspect.isclass(c) and "FAST_PATH" in vars(c)]
    return classes + [RooflineExecutor]


@pytest.mark.parametrize("cls", _declaring_classes(), ids=lambda c: c.__name__)
def test_every_declared_class_records_every_option_of_its_constructors(cls):
    """An option can only reach a declared class through a constructor that records it."""
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        named = [p for p in inspect.signature(init).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][1:]
        if named:
            assert getattr(init, "records_options", False), f"{klass.__name__}.__init__"
    spec = vars(cls)["FAST_PATH"]
    names = {p for klass in cls.__mro__ if "__init__" in vars(klass) and klass is not object
             for p in list(inspect.signature(vars(klass)["__init__"]).parameters)[1:]}
    names -= {"args", "kwargs"}
    assert names == set(spec), f"{cls.__name__}: declared {sorted(spec)}, options {sorted(names)}"
