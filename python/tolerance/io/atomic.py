"""Atomic report writers (docs/formats.md: reports are written to a temp name and renamed).

A report is written to a hidden temporary file in the destination directory, flushed and
fsync'ed, then moved into place: readers see the old file or the whole new one, never a
part. By default an existing file is never replaced (the report files of a run directory
are new): the move is a hard link, which fails if the name exists. Pass overwrite=True to
replace (os.replace).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import numpy as np

from tolerance._errors import ToleranceError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb", *,
                  overwrite: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; on a clean exit, move it to `path`.

    On an exception the temporary file is removed and `path` is untouched. Raises
    ToleranceError if `path` exists and overwrite is False, and ToleranceError naming
    `path` and the errno text when the file system refuses the write (a full disk).
    """
    if mode not in ("wb", "w"):
        raise ValueError("mode must be 'wb' or 'w'")
    dest = Path(path)
    directory = dest.parent if str(dest.parent) else Path(".")
    if not overwrite and dest.exists():
        raise ToleranceError(f"{dest}: already exists (refusing to overwrite)")
    fd = -1
    tmp = None
    for n in range(1000):
        tmp = directory / f".{dest.name}.tmp-{os.getpid()}-{n}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _cannot_write(dest, exc) from None
    if fd < 0 or tmp is None:
        raise ToleranceError(f"{dest}: cannot create a temporary file beside it")
    try:
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk, a quota, an I/O error: name the file
            if exc.filename not in (None, str(tmp)):
                raise  # the caller's own trouble with another file: its own message
            raise _cannot_write(dest, exc) from None
        if overwrite:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)
            except FileExistsError:
                raise ToleranceError(f"{dest}: already exists (refusing to overwrite)") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise _cannot_write(dest, exc) from None
                # no hard links on this file system: best effort no-clobber
                if dest.exists():
                    raise ToleranceError(
                        f"{dest}: already exists (refusing to overwrite)") from None
                os.replace(tmp, dest)
            else:
                os.unlink(tmp)
        _fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _cannot_write(dest, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _cannot_write(dest: Path, exc: OSError) -> ToleranceError:
    """`<file>: cannot write (<errno text>)`: the one line a failed write becomes."""
    return ToleranceError(f"{dest}: cannot write ({exc.strerror or exc})")


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> None:
    with atomic_writer(path, "wb", overwrite=overwrite) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_json(path: str | os.PathLike[str], obj: Any, *, overwrite: bool = False) -> None:
    """Strict JSON (allow_nan=False: non-finite numbers must already be strings)."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n", overwrite=overwrite)


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], *,
              overwrite: bool = False, compressed: bool = False) -> None:
    """An .npz of plain numeric arrays (object arrays are refused: no pickle ever)."""
    clean = {}
    for k, v in arrays.items():
        a = np.asarray(v)
        if a.dtype.hasobject:
            raise TypeError(f"{k}: object arrays are not written")
        clean[k] = a
    with atomic_writer(path, "wb", overwrite=overwrite) as f:
        save = np.savez_compressed if compressed else np.savez
        save(f, **clean)
