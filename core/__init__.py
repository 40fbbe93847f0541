"""The shared vocabulary of servesim: requests, batches, step results and the protocols.

Everything else builds on this package, and it imports nothing from the project: it is the
bottom of the house (``docs/architecture.md``, "Layers"; ``tests/test_import_layers.py``). The
scheduler and KV allocator (``policies/``) and the executors (``hwmodels/`` roofline,
``realexec/`` GPU) only ever exchange the objects defined here, which is what lets one policy
object drive both a simulated and a real GPU.

Progress of a request is one counter, ``num_computed_tokens`` (tokens whose KV is in the cache),
as in vLLM v1. There is no prefill/decode flag: a step schedules ``num_tokens -
num_computed_tokens`` new tokens (a whole prompt, a chunk of one, or the single last sampled
token), a prefix-cache hit starts the counter ahead, and speculative decoding advances it by the
accepted drafts only.

- ``request.py``: ``Request`` and ``advance`` (one step's outcome applied to its progress);
- ``batch.py``: ``Batch`` (one iteration's work) and ``StepResult`` (what an executor reports);
- ``protocols.py``: ``Scheduler``, ``KVAllocator``, ``Executor``, ``HardwareModel``.

``sim.core`` re-exports these names for scripts written before the move (issue #23).
"""

from core.batch import Batch, StepResult
from core.protocols import Executor, HardwareModel, KVAllocator, Scheduler
from core.request import Request, advance

__all__ = ["Batch", "Executor", "HardwareModel", "KVAllocator", "Request", "Scheduler",
           "StepResult", "advance"]
