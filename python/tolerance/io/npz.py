"""A safe streaming reader for `.npz` and `.npy` files (docs/run.md "Memory").

* Never unpickles: headers are parsed by `tolerance.io.npy`; object dtypes are refused.
* Never loads a whole array: stored members are memory-mapped at their data offset inside
  the zip, one window per chunk (a window is unmapped as soon as its chunk is dropped);
  deflated members are inflated block by block, never past what the header promises.
* Every structural lie is a `FormatError` of one line: `<file>: <key>: <problem>`.

The zip's central directory is read by `zipfile`; everything after that (local headers,
data offsets, sizes, CRCs) is checked here against the file and the `.npy` header.
"""
from __future__ import annotations

import math
import mmap
import os
import queue
import stat
import struct
import tempfile
import threading
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from tolerance._errors import FormatError
from tolerance.io.npy import MAGIC, NpyHeader, read_header

#: default byte budget of one chunk
DEFAULT_CHUNK_BYTES = 4 << 20
#: compressed bytes read per block while inflating
_INFLATE_BLOCK = 256 << 10

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIG = b"PK\x03\x04"
_STORED = zipfile.ZIP_STORED
_DEFLATED = zipfile.ZIP_DEFLATED
_GRAN = mmap.ALLOCATIONGRANULARITY
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def _err(path: object, key: str | None, problem: str) -> FormatError:
    if key is None:
        return FormatError(f"{path}: {problem}")
    return FormatError(f"{path}: {key}: {problem}")


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = os.pread(fd, n - len(out), offset + len(out))
        if not got:
            break
        out += got
    return bytes(out)


def normalize_axis(steps_axis: int | None, ndim: int, where: str = "") -> int | None:
    """The steps axis as a non-negative int, or None (one step; also for 0-d arrays)."""
    if steps_axis is None or ndim == 0:
        return None
    ax = steps_axis + ndim if steps_axis < 0 else steps_axis
    if not 0 <= ax < ndim:
        raise ValueError(f"{where}steps axis {steps_axis} is out of range for {ndim} dimensions")
    return ax


#: a block is also one MPI message; MPI counts are C ints, so a block stays far below
#: 2 GiB (1 GiB leaves room for any MPI implementation's header arithmetic)
MAX_BLOCK_BYTES = 1 << 30


def plan_blocks(shape: Sequence[int], steps_axis: int | None, itemsize: int,
                budget: int = DEFAULT_CHUNK_BYTES) -> tuple[int, list[tuple[int, int]]]:
    """The one block planner: how a key of `shape` (elements of `itemsize` bytes) is cut
    into blocks of at most `budget` bytes (capped at MAX_BLOCK_BYTES).

    With a steps axis a block holds whole steps (at least one: a single step larger than
    the budget is one block); with `steps_axis` None (and for 0-d arrays) the array is one
    step and blocks are flat C-order element ranges. Depends only on its arguments, so
    every reader and every rank cuts alike. Returns (steps or elements per block, the
    consecutive [lo, hi) ranges; one empty range for an empty extent).
    """
    budget = max(1, min(int(budget), MAX_BLOCK_BYTES))
    itemsize = max(1, int(itemsize))
    shape = tuple(int(d) for d in shape)
    ax = normalize_axis(steps_axis, len(shape))
    size = math.prod(shape)
    if ax is None:
        per, extent = max(1, budget // itemsize), size
    else:
        extent = shape[ax]
        step_bytes = itemsize * math.prod(d for i, d in enumerate(shape) if i != ax)
        per = max(1, budget // max(step_bytes, 1))
    if extent == 0:
        return per, [(0, 0)]
    return per, [(lo, min(lo + per, extent)) for lo in range(0, extent, per)]


class _CrcWorker:
    """The running CRC-32 of a member's chunks, computed in a thread of its own so that it
    overlaps the next block's inflation (zlib releases the GIL for both)."""

    def __init__(self, crc: int):
        self.crc = crc
        self._q: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._t = threading.Thread(target=self._run, name="tolerance-crc", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            buf = self._q.get()
            if buf is None:
                return
            self.crc = zlib.crc32(buf, self.crc)

    def add(self, buf: Any) -> None:
        self._q.put(buf)

    def value(self) -> int:
        self.close()
        return self.crc

    def close(self) -> None:
        if self._t.is_alive():
            self._q.put(None)
            self._t.join()


@dataclass
class _Inflater:
    """Inflates one deflated member block by block, checking sizes and the CRC."""

    member: "Member"
    d: object = field(default=None)
    pos: int = 0
    end: int = 0
    tail: bytes = b""
    produced: int = 0
    crc: int = 0
    worker: Any = None

    def __post_init__(self) -> None:
        m = self.member
        self.d = zlib.decompressobj(-15)
        self.pos = m.data_offset
        self.end = m.data_offset + m.compress_size

    def _feed(self) -> None:
        m = self.member
        if self.pos >= self.end:
            raise _err(m.path, m.key, "deflate stream is truncated (ends before the "
                       "header's shape x itemsize)")
        block = os.pread(m.fd, min(_INFLATE_BLOCK, self.end - self.pos), self.pos)
        if not block:
            raise _err(m.path, m.key, "file is truncated inside the member")
        self.pos += len(block)
        self.tail = block

    def _fill(self, buf: memoryview) -> None:
        """Inflate exactly len(buf) bytes into buf, never past the declared member size."""
        m = self.member
        n = len(buf)
        if self.produced + n > m.file_size:
            raise _err(m.path, m.key, "read past the declared member size")
        d = self.d
        filled = 0
        while filled < n:
            # zlib may hold inflated output back (max_length): ask it with no new input
            # before calling the stream truncated
            if not self.tail and self.pos < self.end and not d.eof:  # type: ignore[attr-defined]
                self._feed()
            if d.eof:  # type: ignore[attr-defined]
                raise _err(m.path, m.key, "deflate stream ends before the header's "
                           "shape x itemsize")
            before = len(self.tail)
            try:
                out = d.decompress(self.tail, n - filled)  # type: ignore[attr-defined]
            except zlib.error as exc:
                raise _err(m.path, m.key, f"corrupt deflate stream ({exc})") from None
            self.tail = d.unconsumed_tail  # type: ignore[attr-defined]
            if out:
                buf[filled:filled + len(out)] = out
                filled += len(out)
            elif d.eof:  # type: ignore[attr-defined]
                raise _err(m.path, m.key, "deflate stream ends before the header's "
                           "shape x itemsize")
            elif not self.tail and self.pos >= self.end:
                raise _err(m.path, m.key, "deflate stream is truncated (ends before the "
                           "header's shape x itemsize)")
            elif self.tail and len(self.tail) == before:
                raise _err(m.path, m.key, "corrupt deflate stream (no progress)")
        self.produced += n

    def read(self, n: int) -> bytes:
        """The next n bytes (headers: small, so the CRC is folded here, in this thread)."""
        if self.worker is not None:
            raise RuntimeError("read() after readinto(): the CRC is being folded elsewhere")
        buf = bytearray(n)
        self._fill(memoryview(buf))
        self.crc = zlib.crc32(buf, self.crc)
        return bytes(buf)

    def readinto(self, buf: memoryview) -> None:
        """Fill buf exactly (one copy from zlib's output into buf); the CRC is folded in a
        thread of its own, overlapping the next inflation."""
        self._fill(buf)
        if self.worker is None:
            self.worker = _CrcWorker(self.crc)
        self.worker.add(buf)  # buf is not written again: the chunk it belongs to is new

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def finish(self) -> None:
        """The stream must end exactly here, and the CRC must match the directory's."""
        m = self.member
        d = self.d
        while not d.eof:  # type: ignore[attr-defined]
            if not self.tail and self.pos < self.end:
                self._feed()
            before = len(self.tail)
            try:
                out = d.decompress(self.tail, 1)  # type: ignore[attr-defined]
            except zlib.error as exc:
                raise _err(m.path, m.key, f"corrupt deflate stream ({exc})") from None
            self.tail = d.unconsumed_tail  # type: ignore[attr-defined]
            if out:
                raise _err(m.path, m.key, "deflate stream holds more data than the header's "
                           "shape x itemsize (zip bomb?)")
            if not d.eof and not self.tail and self.pos >= self.end:  # type: ignore[attr-defined]
                raise _err(m.path, m.key, "deflate stream is truncated (no end marker)")
            if not d.eof and self.tail and len(self.tail) == before:  # type: ignore[attr-defined]
                raise _err(m.path, m.key, "corrupt deflate stream (no progress)")
        if self.worker is not None:
            self.crc = self.worker.value()
            self.worker = None
        if (self.crc & 0xFFFFFFFF) != m.crc:
            raise _err(m.path, m.key, f"CRC-32 mismatch (directory {m.crc:08x}, data "
                       f"{self.crc & 0xFFFFFFFF:08x})")

@dataclass
class Member:
    """One array of an archive: its header and where its bytes are."""

    path: str
    key: str
    header: NpyHeader
    method: str              # "stored" | "deflated" | "npy"
    fd: int                  # the archive's descriptor (owned by the archive)
    data_offset: int         # file offset of the member's first byte (the .npy magic)
    compress_size: int
    file_size: int           # uncompressed member size (header + data)
    crc: int
    #: also check the CRC-32 of stored members while streaming them (deflated: always)
    verify_crc: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return self.header.shape

    @property
    def dtype(self) -> np.dtype:
        """The dtype chunks are yielded in (native byte order)."""
        dt = self.header.dtype
        return dt.newbyteorder("=") if dt.byteorder not in ("=", "|") else dt

    @property
    def file_dtype(self) -> np.dtype:
        return self.header.dtype

    @property
    def fortran_order(self) -> bool:
        return self.header.fortran_order

    @property
    def nbytes(self) -> int:
        return self.header.nbytes

    # -- layout -------------------------------------------------------------------------

    def _contiguous(self, ax: int | None) -> bool:
        """Whether the chunks (whole steps along ax, or flat C-order pieces) are byte ranges."""
        shape = self.shape
        if len(shape) <= 1 or self.header.size == 0:
            return True
        if not self.fortran_order:
            return ax is None or all(d == 1 for d in shape[:ax])
        if ax is None:
            return sum(1 for d in shape if d != 1) <= 1
        return all(d == 1 for d in shape[ax + 1:])

    def _native(self, a: np.ndarray) -> np.ndarray:
        if a.dtype != self.dtype:
            return a.astype(self.dtype)
        return a

    # -- chunks -------------------------------------------------------------------------

    def chunks(self, steps_axis: int | None = 0, per_chunk: int | None = None, *,
               budget: int = DEFAULT_CHUNK_BYTES) -> Iterator[np.ndarray]:
        """Consecutive blocks of whole steps along steps_axis (arrays of the member's ndim),
        or, for steps_axis None (and 0-d arrays), consecutive flat C-order pieces (1-D).

        per_chunk: steps per chunk (or elements per flat piece); default from `budget`.
        Always yields at least one chunk (an empty one for an empty array).
        """
        shape = self.shape
        ax = normalize_axis(steps_axis, len(shape), f"{self.path}: {self.key}: ")
        if per_chunk is None:
            per_chunk = plan_blocks(shape, ax, self.file_dtype.itemsize, budget)[0]
        per_chunk = max(1, int(per_chunk))
        if self._contiguous(ax):
            if self.method == "deflated":
                yield from self._inflated_ranges(ax, per_chunk)
            else:
                yield from self._mapped_ranges(ax, per_chunk)
        else:
            yield from self._strided(ax, per_chunk)

    def _ranges(self, ax: int | None, per_chunk: int):
        """(elements start, elements count, chunk shape) of every contiguous chunk."""
        shape = self.shape
        size = self.header.size
        if ax is None:
            if size == 0:
                yield 0, 0, (0,)
                return
            for lo in range(0, size, per_chunk):
                n = min(per_chunk, size - lo)
                yield lo, n, (n,)
            return
        steps = shape[ax]
        per_step = size // steps if steps else 0
        if steps == 0:
            yield 0, 0, shape
            return
        for t in range(0, steps, per_chunk):
            k = min(per_chunk, steps - t)
            cshape = shape[:ax] + (k,) + shape[ax + 1:]
            yield t * per_step, k * per_step, cshape

    def _mapped_ranges(self, ax: int | None, per_chunk: int) -> Iterator[np.ndarray]:
        dt = self.file_dtype
        base = self.data_offset + self.header.header_size
        order = "F" if self.fortran_order else "C"
        end_needed = base + self.nbytes
        crc = None
        if self.verify_crc and self.method == "stored":
            crc = zlib.crc32(_pread_exact(self.fd, self.header.header_size, self.data_offset))
        for lo, n, cshape in self._ranges(ax, per_chunk):
            if n == 0:
                yield np.empty(cshape, dtype=self.dtype)
                continue
            start = base + lo * dt.itemsize
            length = n * dt.itemsize
            aligned = start - start % _GRAN
            if os.fstat(self.fd).st_size < end_needed:
                raise _err(self.path, self.key, "file shrank while being read")
            mm = mmap.mmap(self.fd, start + length - aligned, flags=_MAP_FLAGS,
                           prot=mmap.PROT_READ, offset=aligned)
            a = np.frombuffer(mm, dtype=dt, count=n, offset=start - aligned)
            del mm  # the array keeps the mapping alive; it is unmapped with the array
            if crc is not None:
                crc = zlib.crc32(a, crc)
            yield self._native(a.reshape(cshape, order=order))
        if crc is not None and (crc & 0xFFFFFFFF) != self.crc:
            raise _err(self.path, self.key, f"CRC-32 mismatch (directory {self.crc:08x}, data "
                       f"{crc & 0xFFFFFFFF:08x})")

    def _inflated_ranges(self, ax: int | None, per_chunk: int) -> Iterator[np.ndarray]:
        dt = self.file_dtype
        order = "F" if self.fortran_order else "C"
        inf = _Inflater(self)
        try:
            inf.read(self.header.header_size)  # validated at open; re-read for the CRC
            for _lo, n, cshape in self._ranges(ax, per_chunk):
                a = np.empty(n, dtype=dt)
                if n:
                    inf.readinto(memoryview(a.view(np.uint8)))
                yield self._native(a.reshape(cshape, order=order))
            inf.finish()
        finally:
            inf.close()

    def _random_access(self) -> tuple[mmap.mmap, int]:
        """A read-only mapping of the whole data, and the data's offset inside it.

        Stored members map the archive; deflated ones are inflated into an unlinked
        temporary file first (bounded RAM whatever the array size).
        """
        if self.nbytes == 0:
            raise AssertionError("empty arrays are contiguous")
        if self.method != "deflated":
            start = self.data_offset + self.header.header_size
            aligned = start - start % _GRAN
            mm = mmap.mmap(self.fd, start + self.nbytes - aligned, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ, offset=aligned)
            return mm, start - aligned
        inf = _Inflater(self)
        inf.read(self.header.header_size)
        with tempfile.TemporaryFile(prefix="tolerance-inflate-") as tmp:
            left = self.nbytes
            try:
                while left:
                    n = min(left, DEFAULT_CHUNK_BYTES)
                    chunk = bytearray(n)  # a new buffer each time: the CRC thread reads it
                    inf.readinto(memoryview(chunk))
                    tmp.write(chunk)
                    left -= n
                inf.finish()
            finally:
                inf.close()
            tmp.flush()
            mm = mmap.mmap(tmp.fileno(), self.nbytes, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ)
        return mm, 0

    def _strided(self, ax: int | None, per_chunk: int) -> Iterator[np.ndarray]:
        """Chunks that are not byte ranges (e.g. Fortran order, steps along axis 0):
        copied out of a mapping of the whole data, whose pages are dropped after each."""
        mm, off = self._random_access()
        dontneed = getattr(mmap, "MADV_DONTNEED", None)
        try:
            full = np.frombuffer(mm, dtype=self.file_dtype, count=self.header.size, offset=off)
            full = full.reshape(self.shape, order="F" if self.fortran_order else "C")
            if ax is not None:
                for index in self._strided_index(ax, per_chunk):
                    block = np.ascontiguousarray(full[index])
                    if dontneed is not None:
                        mm.madvise(dontneed)
                    yield self._native(block)
            else:
                # flat C-order pieces of exactly per_chunk elements (the same boundaries as
                # every other input's pieces), assembled from blocks of at most per_chunk
                size = self.header.size
                piece = np.empty(min(per_chunk, size), dtype=self.file_dtype)
                fill = 0
                done = 0
                for index in self._strided_index(None, per_chunk):
                    block = np.ascontiguousarray(full[index]).reshape(-1)
                    while block.size:
                        take = min(block.size, piece.size - fill)
                        piece[fill:fill + take] = block[:take]
                        block = block[take:]
                        fill += take
                        if fill == piece.size:
                            if dontneed is not None:
                                mm.madvise(dontneed)
                            yield self._native(piece)
                            done += fill
                            fill = 0
                            piece = np.empty(min(per_chunk, size - done), dtype=self.file_dtype)
            del full
        finally:
            try:
                mm.close()
            except BufferError:  # a caller still holds a view: it keeps the mapping
                pass

    def _strided_index(self, ax: int | None, per_chunk: int):
        shape = self.shape
        if ax is not None:
            for t in range(0, shape[ax], per_chunk):
                idx = [slice(None)] * len(shape)
                idx[ax] = slice(t, min(t + per_chunk, shape[ax]))
                yield tuple(idx)
            return
        # flat C-order pieces: blocks of axis d under every index of the axes before d,
        # d the first axis whose inner extent fits the piece size
        n = len(shape)
        inner = 1
        d = n - 1
        while d > 0 and inner * shape[d] <= per_chunk:
            inner *= shape[d]
            d -= 1
        k = max(1, per_chunk // inner)
        for outer in np.ndindex(*shape[:d]):
            for t in range(0, shape[d], k):
                yield tuple(outer) + (slice(t, min(t + k, shape[d])),)


class Archive:
    """An opened `.npz` (or `.npy`) file: every member validated, nothing loaded.

    Use as a context manager; `members` maps key -> Member, in archive order.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify_crc: bool = False):
        self.path = str(path)
        self.verify_crc = verify_crc
        self.members: dict[str, Member] = {}
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot open ({exc.strerror or exc})") from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def keys(self) -> list[str]:
        return list(self.members)

    def __getitem__(self, key: str) -> Member:
        return self.members[key]

    def __contains__(self, key: object) -> bool:
        return key in self.members

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -----------------------------------------------------------------------------------

    def _open(self) -> None:
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            raise _err(self.path, None, "not a regular file")
        self.size = st.st_size
        head = _pread_exact(self.fd, 6, 0)
        if head[:6] == MAGIC:
            self._open_npy()
        elif head[:2] == b"PK":
            self._open_zip()
        elif len(head) < 6:
            raise _err(self.path, None, "file is empty or truncated")
        else:
            raise _err(self.path, None, "neither a .npz (zip) nor a .npy file")

    def _open_npy(self) -> None:
        key = Path(self.path).stem
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            b = _pread_exact(self.fd, n, pos)
            pos += len(b)
            return b

        header = read_header(read, f"{self.path}: {key}")
        expected = header.header_size + header.nbytes
        if self.size != expected:
            raise _err(self.path, key, f"header + shape {header.shape} x itemsize "
                       f"{header.dtype.itemsize} = {expected} bytes, the file holds "
                       f"{self.size}")
        self.members[key] = Member(self.path, key, header, "npy", self.fd, 0,
                                   self.size, self.size, 0)

    def _open_zip(self) -> None:
        try:
            with open(self.fd, "rb", closefd=False) as fobj:
                with zipfile.ZipFile(fobj) as zf:
                    infos = zf.infolist()
        except zipfile.BadZipFile as exc:
            raise _err(self.path, None, f"corrupt or truncated zip ({exc})") from None
        except (OSError, ValueError, EOFError, struct.error, NotImplementedError,
                OverflowError, UnicodeDecodeError) as exc:
            raise _err(self.path, None, f"corrupt zip ({type(exc).__name__}: {exc})") from None
        for info in infos:
            name = info.filename
            if name.endswith("/"):
                raise _err(self.path, name, "directory entry in an array archive")
            if not name.endswith(".npy") or len(name) <= 4:
                raise _err(self.path, name, "member is not a <key>.npy array")
            key = name[:-4]
            if key in self.members:
                raise _err(self.path, key, "duplicate member name")
            self.members[key] = self._member(info, key)

    def _member(self, info: zipfile.ZipInfo, key: str) -> Member:
        if info.flag_bits & 0x1:
            raise _err(self.path, key, "member is encrypted")
        if info.compress_type not in (_STORED, _DEFLATED):
            raise _err(self.path, key, f"unsupported compression method {info.compress_type} "
                       "(only stored and deflate)")
        off = info.header_offset
        if off < 0 or off + _LOCAL_HEADER.size > self.size:
            raise _err(self.path, key, "local header lies outside the file (truncated?)")
        raw = _pread_exact(self.fd, _LOCAL_HEADER.size, off)
        (sig, _ver, flags, method, _t, _d, _crc, _cs, _us, nlen, xlen) = \
            _LOCAL_HEADER.unpack(raw)
        if sig != _LOCAL_SIG:
            raise _err(self.path, key, "bad local file header signature")
        if method != info.compress_type:
            raise _err(self.path, key, "local header and central directory disagree on the "
                       "compression method")
        if flags & 0x1:
            raise _err(self.path, key, "member is encrypted")
        lname = _pread_exact(self.fd, nlen, off + _LOCAL_HEADER.size)
        try:
            lname_s = lname.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            lname_s = None
        if lname_s != info.orig_filename:
            raise _err(self.path, key, "local header and central directory disagree on the "
                       "member name")
        data_offset = off + _LOCAL_HEADER.size + nlen + xlen
        csize, usize = info.compress_size, info.file_size
        if data_offset + csize > self.size:
            raise _err(self.path, key, "member data runs past the end of the file (truncated)")
        if info.compress_type == _STORED and csize != usize:
            raise _err(self.path, key, f"stored member: compressed size {csize} != size {usize}")
        method_s = "stored" if info.compress_type == _STORED else "deflated"
        where = f"{self.path}: {key}"
        if method_s == "stored":
            pos = data_offset
            end = data_offset + csize

            def read(n: int) -> bytes:
                nonlocal pos
                b = _pread_exact(self.fd, max(0, min(n, end - pos)), pos)
                pos += len(b)
                return b

            header = read_header(read, where)
            member = Member(self.path, key, header, method_s, self.fd, data_offset,
                            csize, usize, info.CRC, self.verify_crc)
        else:
            stub = Member(self.path, key, None, method_s, self.fd,  # type: ignore[arg-type]
                          data_offset, csize, usize, info.CRC)
            inf = _Inflater(stub)

            def read(n: int) -> bytes:
                n = max(0, min(n, usize - inf.produced))
                return inf.read(n) if n else b""

            header = read_header(read, where)
            member = Member(self.path, key, header, method_s, self.fd, data_offset,
                            csize, usize, info.CRC)
        expected = header.header_size + header.nbytes
        if expected != usize:
            raise _err(self.path, key, f"header + shape {header.shape} x itemsize "
                       f"{header.dtype.itemsize} = {expected} bytes, the member holds "
                       f"{usize}")
        return member


def open_npz(path: str | os.PathLike[str], *, verify_crc: bool = False) -> Archive:
    """Open and validate a `.npz` (or `.npy`) file. Raises FormatError naming file and key.

    Deflated members' CRC-32 is always checked while streaming; verify_crc=True checks
    stored members' too (for chunks that are byte ranges; costs one CRC pass).
    """
    return Archive(path, verify_crc=verify_crc)


def newest_npz(directory: str | os.PathLike[str]) -> Path:
    """The newest `.npz` under a directory tree by st_mtime (never by name).

    Ties on st_mtime_ns go to the lexicographically last path, so the choice is stable.
    Directory symlinks are not followed (no loops).
    """
    root = Path(directory)
    best: tuple[int, str] | None = None
    for dirpath, _dirs, files in os.walk(root, followlinks=False):
        for name in files:
            if not name.endswith(".npz"):
                continue
            p = os.path.join(dirpath, name)
            try:
                st = os.stat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            cand = (st.st_mtime_ns, p)
            if best is None or cand > best:
                best = cand
    if best is None:
        raise FormatError(f"{root}: no .npz file under this directory")
    return Path(best[1])


def resolve_input(path: str | os.PathLike[str]) -> Path:
    """A file path as is; a reference directory -> its validated arrays.npz; another
    directory -> its newest `.npz` (newest_npz)."""
    p = Path(path)
    if p.is_dir():
        from tolerance.io.reference import is_reference_dir, read_reference

        if is_reference_dir(p):  # a published reference: its arrays, once validated
            ref = read_reference(p)
            if ref.arrays_path is None:
                raise FormatError(f"{p}: a digests-only reference holds no arrays to diff "
                                  "(use tolerance verify)")
            return ref.arrays_path
        return newest_npz(p)
    if not p.exists():
        raise FormatError(f"{p}: no such file or directory")
    return p
