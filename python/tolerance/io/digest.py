"""Block digests: one function for every place that asks "are these bytes the same?".

The MPI exchange hashes each block of steps to skip pairs whose blocks are equal; a
published reference records the digest of each of its blocks so that a digests-only
reference can still tell equal bytes from different ones. Both use `block_digest`.

128-bit digests: a collision between two different blocks that would hide a real
difference has probability ~2^-128 per pair of blocks.
"""
from __future__ import annotations

import hashlib

import numpy as np

#: the name recorded beside digests (a reference says which algorithm made its digests)
DIGEST_ALGORITHM = "blake2b-128"
DIGEST_BYTES = 16


def block_digest(block: np.ndarray) -> bytes:
    """blake2b-128 of a block's dtype, shape and C-order bytes."""
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    h.update(block.dtype.str.encode())
    h.update(repr(block.shape).encode())
    h.update(np.ascontiguousarray(block).data)
    return h.digest()
