"""Block digests: one function for every place that asks "are these bytes the same?".

The MPI exchange hashes each block of steps to skip pairs whose blocks are equal; a
published reference records the digest of each of its blocks so that a digests-only
reference can still tell equal bytes from different ones. Both use `block_digest`.

128-bit digests: a collision between two different blocks that would hide a real
difference has probability ~2^-128 per pair of blocks.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import xxhash

#: the name recorded beside digests (a reference says which algorithm made its digests)
DIGEST_ALGORITHM = "xxh3-128"
DIGEST_BYTES = 16


#: bytes hashed between two calls of `block_digest`'s `each` (well inside a core's L2 cache)
PIECE_BYTES = 1 << 19


def block_digest(block: np.ndarray,
                 each: Optional[Callable[[int, int], None]] = None) -> bytes:
    """xxh3-128 of a block's dtype, shape and C-order bytes (xxh3 runs at memory speed;
    it is not a cryptographic hash: blocks come from the boxes of one run, not from an
    adversary).

    each(lo, hi): called right after the bytes of rows [lo, hi) of axis 0 are hashed (pieces
    of about PIECE_BYTES, in order), so that the caller can read them again while they are
    still in cache; the digest is the same with or without it.
    """
    h = xxhash.xxh3_128()
    h.update(block.dtype.str.encode())
    h.update(repr(block.shape).encode())
    flat = np.ascontiguousarray(block)
    if each is None or flat.ndim == 0 or flat.shape[0] == 0:
        h.update(flat.reshape(-1).view(np.uint8).data)
        return h.digest()
    n = flat.shape[0]
    row = flat[0].nbytes
    per = max(1, PIECE_BYTES // max(1, row))
    raw = flat.reshape(-1).view(np.uint8)
    for lo in range(0, n, per):
        hi = min(n, lo + per)
        h.update(raw[lo * row:hi * row])
        each(lo, hi)
    return h.digest()
