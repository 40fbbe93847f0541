"""What a fast path mirrors of each policy: a spec next to the policy's own options.

Why: the compiled lane (``sim/lane.py``) re-implements chunked prefill, continuous batching
and the paged allocator statement by statement. A new option added to a policy, off by
default, passes the lane's differential tests (their scenarios never set it), and set on it
would silently run the old semantics on the lane. So:

- every policy records the options it was built with: ``@records_options`` on ``__init__``
  keeps each named argument, defaults included, in ``self.options`` (a subclass's and its
  bases' alike), so an option cannot be added without being recorded;
- each class that a fast path mirrors declares, in its own body, ``FAST_PATH``: option ->
  the values mirrored (``ANY``: every value);
- ``fast_path_refusal`` refuses an object whose class declares nothing (a subclass inherits
  its base's options but not its base's declaration: it may change what they mean), any
  option its class does not declare, and any value outside the declared ones.

An option nobody declared runs the reference engine until someone mirrors it and says so.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

ANY = None  # a FAST_PATH entry: every value of the option is mirrored
Spec = Mapping[str, "tuple[Any, ...] | None"]

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def records_options(init: Callable) -> Callable:
    """Decorate a policy's ``__init__``: its named arguments (bound, defaults applied) are
    merged into ``self.options`` before the body runs."""
    signature = inspect.signature(init)
    names = [n for n, p in signature.parameters.items() if p.kind in _NAMED][1:]  # no self

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        mine = {name: bound.arguments[name] for name in names}
        self.options = {**getattr(self, "options", {}), **mine}
        init(self, *args, **kwargs)

    wrapper.records_options = True
    return wrapper


def fast_path_refusal(obj: Any, what: str) -> str | None:
    """Why a fast path may not stand in for ``obj`` (``what`` names its role), or None."""
    cls = type(obj)
    spec: Spec | None = vars(cls).get("FAST_PATH")
    if spec is None:
        return f"the {what} ({cls.__name__}) declares no fast path"
    for name, value in getattr(obj, "options", {}).items():
        if name not in spec:
            return f"the {what} option {name!r} is not declared for the fast path"
        allowed = spec[name]
        if allowed is not ANY and value not in allowed:
            return f"the {what} option {name}={value!r} is not mirrored by the fast path"
    return None
