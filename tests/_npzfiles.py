"""Test helpers: write .npz files byte by byte, so the tests can lie in every field."""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np


def npy_bytes(a: np.ndarray, *, version=(1, 0), allow_pickle=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, version=version, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(header: str, *, version=(1, 0), magic=b"\x93NUMPY", pad=True) -> bytes:
    """A hand-written .npy header: `header` is the dict text (no padding, no newline)."""
    text = header
    pre = len(magic) + 2 + (2 if version == (1, 0) else 4)
    if pad:
        total = pre + len(text) + 1
        text += " " * ((64 - total % 64) % 64)
    text += "\n"
    raw = text.encode("latin1")
    lenfield = struct.pack("<H", len(raw)) if version == (1, 0) else struct.pack("<I", len(raw))
    return magic + bytes(version) + lenfield + raw


@dataclass
class Entry:
    name: str
    data: bytes                 # the member's uncompressed bytes
    method: int = 0             # 0 stored, 8 deflate, anything else is written as is
    usize: int | None = None    # declared uncompressed size (default: len(data))
    crc: int | None = None      # declared CRC (default: the true one)
    flags: int = 0
    payload: bytes | None = None  # the compressed bytes as written (default: from data)


def zip_bytes(entries: list[Entry]) -> bytes:
    """A zip archive with exactly these members and declared fields (no zip64)."""
    out = bytearray()
    central = bytearray()
    for e in entries:
        if e.payload is not None:
            payload = e.payload
        elif e.method == 8:
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            payload = c.compress(e.data) + c.flush()
        else:
            payload = e.data
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        usize = len(e.data) if e.usize is None else e.usize
        name = e.name.encode("utf-8")
        off = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, e.flags, e.method, 0, 0x21,
                           crc, len(payload), usize, len(name), 0)
        out += name + payload
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, e.flags,
                               e.method, 0, 0x21, crc, len(payload), usize, len(name), 0, 0,
                               0, 0, 0, off)
        central += name
    cd_off = len(out)
    out += central
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                       len(central), cd_off, 0)
    return bytes(out)


def write_zip(path, entries: list[Entry]) -> None:
    with open(path, "wb") as f:
        f.write(zip_bytes(entries))
