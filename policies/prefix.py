"""From a request's ``prefix_hashes`` to the keys of its shareable KV blocks.

A request names its prompt by one hash per ``hash_block_tokens`` tokens (Mooncake: 512). The KV
cache cuts the same prompt into ``block_size``-token blocks. KV block ``j`` (tokens
``[j * block_size, (j + 1) * block_size)``) is shareable iff it is full and lies inside the
hashed region, and its content is named by the hash blocks that cover it: two requests whose
covering hashes agree, position by position from the start, hold identical KV there.

``content_keys`` gives one key per shareable block (the covering hash id, or a tuple of them
when a KV block spans several hash blocks); the position is implied by the index, as in a radix
tree's path. ``chain_keys`` folds the keys into chained hashes (each names the whole prefix up
to its block, as vLLM's block hashes do) for a flat hash table. A request with no hashes has no
shareable block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from core import Request

Key = int | tuple[int, ...]


def shareable_blocks(request: Request, block_size: int) -> int:
    """Number of full KV blocks inside the hashed part of the prompt."""
    hashed = min(request.prompt_tokens, len(request.prefix_hashes) * request.hash_block_tokens)
    return hashed // block_size


def max_hit_blocks(request: Request, block_size: int) -> int:
    """Most blocks a cache may serve: at least one token is left to compute, which gives the
    logits of the next token (vLLM and SGLang both recompute the last prompt token)."""
    return min(shareable_blocks(request, block_size), (request.num_tokens - 1) // block_size)


def content_keys(request: Request, block_size: int, limit: int | None = None) -> list[Key]:
    """Content key of each shareable block (the first ``limit`` of them if given)."""
    n = shareable_blocks(request, block_size)
    if limit is not None:
        n = min(n, limit)
    hashes, span = request.prefix_hashes, request.hash_block_tokens
    if span % block_size == 0:  # the common case: a KV block lies inside one hash block
        per = span // block_size
        return [hashes[j // per] for j in range(n)]
    return [tuple(hashes[(j * block_size) // span:((j + 1) * block_size - 1) // span + 1])
            for j in range(n)]


def chain_keys(request: Request, block_size: int, limit: int | None = None) -> Iterator[int]:
    """Chained hash of each shareable block: equal iff the whole prefix up to it is equal."""
    parent = 0
    for key in content_keys(request, block_size, limit):
        parent = hash((parent, key))
        yield parent


@dataclass(slots=True)
class PrefixCacheStats:
    """Hits of a prefix cache, counted when a request takes its hit (its first allocation).

    ``query_blocks`` counts every block the prompt occupies (``ceil(prompt / block_size)``), so
    the block hit rate is the share of the prompt's blocks served from the cache.
    """

    prefix_queries: int = 0
    prefix_query_tokens: int = 0
    prefix_hit_tokens: int = 0
    prefix_query_blocks: int = 0
    prefix_hit_blocks: int = 0
    evicted_blocks: int = 0

    def record(self, request: Request, hit_blocks: int, block_size: int) -> None:
        self.prefix_queries += 1
        self.prefix_query_tokens += request.prompt_tokens
        self.prefix_hit_tokens += hit_blocks * block_size
        self.prefix_query_blocks += -(-request.prompt_tokens // block_size)
        self.prefix_hit_blocks += hit_blocks
