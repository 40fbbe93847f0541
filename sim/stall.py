"""``SimulationStalled``: requests left unfinished with nothing more to happen.

Both serve loops raise it: the engine's SimPy loop (``sim.engine``) and the compiled lane
(``sim.lane``) that the engine hands whole runs to. It lives here, below both, so that the lane
needs nothing from the engine that calls it (no import circle, ``tests/test_import_layers.py``).
``sim.engine.SimulationStalled`` is the same class.
"""


class SimulationStalled(RuntimeError):
    """Requests were left unfinished with nothing more to happen: a policy bug, never load."""
