"""Errors of the hardware model: bad names and models that do not fit.

Both are ``ValueError`` subclasses with one-line messages, so the CLI and the config layer can
print them as they are.
"""


class CatalogError(ValueError):
    """Unknown GPU, model or precision name; the message lists the allowed names."""


class DoesNotFitError(ValueError):
    """The model (weights, activations or one KV block) does not fit the GPU memory."""
