"""Block digests: one function for every place that asks "are these bytes the same?".

The MPI exchange hashes each block of steps to skip pairs whose blocks are equal; a
published reference records the digest of each of its blocks so that a digests-only
reference can still tell equal bytes from different ones. Both use `block_digest`.

128-bit digests: a collision between two different blocks that would hide a real
difference has probability ~2^-128 per pair of blocks.
"""
from __future__ import annotations

import numpy as np
import xxhash

#: the name recorded beside digests (a reference says which algorithm made its digests)
DIGEST_ALGORITHM = "xxh3-128"
DIGEST_BYTES = 16


def block_digest(block: np.ndarray) -> bytes:
    """xxh3-128 of a block's dtype, shape and C-order bytes (xxh3 runs at memory speed;
    it is not a cryptographic hash: blocks come from the boxes of one run, not from an
    adversary)."""
    h = xxhash.xxh3_128()
    h.update(block.dtype.str.encode())
    h.update(repr(block.shape).encode())
    h.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)
    return h.digest()
