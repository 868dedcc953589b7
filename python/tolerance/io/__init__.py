"""io layer: safe streaming .npz/.npy reader (no pickle, bounded memory) and atomic writers."""
from __future__ import annotations

from tolerance.io.atomic import atomic_writer, write_bytes, write_json, write_npz, write_text
from tolerance.io.npy import NpyHeader, read_header
from tolerance.io.npz import (DEFAULT_CHUNK_BYTES, Archive, Member, newest_npz, open_npz,
                              plan_blocks, resolve_input)

__all__ = [
    "Archive", "DEFAULT_CHUNK_BYTES", "Member", "NpyHeader", "atomic_writer", "newest_npz",
    "open_npz", "plan_blocks", "read_header", "resolve_input", "write_bytes", "write_json",
    "write_npz", "write_text",
]
