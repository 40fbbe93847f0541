"""Token ids for requests that only have lengths: deterministic, and shared where prefixes are.

The workload gives a request its lengths and the hashes of its prompt blocks, not text. The
tokens fed to the model are derived from those hashes, so two prompts with the same leading
hashes have the same leading tokens: a KV block that a prefix cache shares is then exactly the
block the other request would have computed.
"""

from __future__ import annotations

import numpy as np

from core import Request

_MIX = 0x9E3779B1  # golden-ratio multiplier: spreads consecutive keys over the vocabulary


def prompt_token_ids(request: Request, start: int, stop: int, vocab_size: int) -> np.ndarray:
    """Prompt tokens at positions ``start..stop-1`` (int64)."""
    pos = np.arange(start, stop, dtype=np.int64)
    block = pos // request.hash_block_tokens
    keys = np.full(pos.shape, (request.request_id % (1 << 31)) + (1 << 31), dtype=np.int64)
    if request.prefix_hashes:
        hashes = np.array([h % (1 << 31) for h in request.prefix_hashes], dtype=np.int64)
        shared = block < len(hashes)
        keys[shared] = hashes[block[shared]]
    return (keys * _MIX + pos * 7919) % vocab_size


def draft_token_ids(request: Request, start: int, stop: int, vocab_size: int) -> np.ndarray:
    """Speculative tokens at positions ``start..stop-1``: any ids do, only their count matters."""
    pos = np.arange(start, stop, dtype=np.int64)
    return (pos * 104729 + request.request_id * 31) % vocab_size


def draft_token_id(request: Request, pos: int, vocab_size: int) -> int:
    """``draft_token_ids`` of one position, in plain integers (the decode rows' fast path)."""
    return (pos * 104729 + request.request_id * 31) % vocab_size
