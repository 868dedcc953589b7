"""The safe streaming reader: exact chunks, and a corpus of hostile files (made here)."""
from __future__ import annotations

import os
import pickle
import resource
import time
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from _npzfiles import Entry, npy_bytes, npy_header, write_zip
from tolerance._errors import FormatError, ToleranceError
from tolerance.cli import main
from tolerance.io import (atomic_writer, newest_npz, open_npz, plan_blocks, write_json,
                          write_npz)


def _arrays():
    rng = np.random.default_rng(7)
    return {
        "f4": rng.standard_normal((37, 5)).astype(np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((23, 3, 4))),
        "big_endian": np.arange(40, dtype=">i8").reshape(8, 5),
        "fortran_be": np.asfortranarray(rng.standard_normal((11, 6)).astype(">f4")),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "bools": rng.random((13, 2)) > 0.5,
        "u2": rng.integers(0, 60000, (9,), dtype=np.uint16),
    }


@pytest.mark.parametrize("compressed", [False, True])
def test_chunks_reassemble_exactly(tmp_path, compressed):
    arrays = _arrays()
    path = tmp_path / "x.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    with open_npz(path) as ar:
        assert ar.keys() == list(arrays)
        for key, ref in arrays.items():
            m = ar[key]
            assert m.shape == ref.shape and m.fortran_order == (ref.flags.f_contiguous
                                                                and not ref.flags.c_contiguous)
            assert m.method == ("deflated" if compressed else "stored")
            for ax in (0, -1, None):
                for per in (1, 4, None):
                    chunks = list(m.chunks(ax, per))
                    assert chunks
                    for c in chunks:
                        assert c.dtype == ref.dtype.newbyteorder("=")
                        assert c.dtype.isnative
                    if per is not None and ref.size:  # the same boundaries for every layout
                        sizes = [c.size if ax is None or ref.ndim == 0 else c.shape[ax]
                                 for c in chunks]
                        assert all(x == per for x in sizes[:-1]) and 0 < sizes[-1] <= per
                    if ax is None or ref.ndim == 0:
                        got = np.concatenate([c.reshape(-1) for c in chunks])
                        assert np.array_equal(got, ref.reshape(-1))
                    else:
                        got = np.concatenate(chunks, axis=ax)
                        assert np.array_equal(got, ref)
                        if per is not None and ref.shape[ax]:
                            assert all(c.shape[ax] <= per for c in chunks)


def test_npy_files_and_header_versions(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    for version in ((1, 0), (2, 0), (3, 0)):
        p = tmp_path / f"v{version[0]}.npy"
        p.write_bytes(npy_bytes(a, version=version))
        with open_npz(p) as ar:
            (m,) = ar.members.values()
            assert m.header.version == version
            assert np.array_equal(np.concatenate(list(m.chunks(0, 2))), a)


def test_stored_chunks_are_views_of_the_file_not_copies(tmp_path):
    a = np.arange(1 << 16, dtype=np.float64).reshape(256, 256)
    np.savez(tmp_path / "s.npz", a=a)
    with open_npz(tmp_path / "s.npz") as ar:
        c = next(ar["a"].chunks(0, 64))
        assert not c.flags.owndata and not c.flags.writeable
        assert np.array_equal(c, a[:64])


def test_chunk_plan_by_byte_budget():
    assert plan_blocks((1000, 64), 0, 4, budget=4096)[0] == 16
    assert plan_blocks((1000, 64), 1, 4, budget=4096)[0] == 1  # a step of 4000 B: one per block
    assert plan_blocks((10, 10**7), 0, 8, budget=4096) == (1, [(i, i + 1) for i in range(10)])
    assert plan_blocks((100,), None, 8, budget=80) == (10, [(i, i + 10) for i in range(0, 100, 10)])
    assert plan_blocks((100,), None, 2, budget=80)[0] == 40  # the real element size counts
    assert plan_blocks((0, 3), 0, 8, budget=80) == (3, [(0, 0)])
    assert plan_blocks((7,), 0, 8, budget=1 << 40)[0] == (1 << 30) // 8  # capped: one MPI message


def test_streaming_memory_is_bounded(tmp_path):
    """Reading a 64 MiB compressed member in 1 MiB chunks keeps the peak RSS growth small."""
    n = 8 << 20  # 8 Mi float64 = 64 MiB
    x = np.zeros(n)
    x[::1000] = 1.0
    np.savez_compressed(tmp_path / "z.npz", x=x)
    del x
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = 0.0
    with open_npz(tmp_path / "z.npz") as ar:
        for c in ar["x"].chunks(None, budget=1 << 20):
            total += float(c.sum())
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert total == len(range(0, n, 1000))
    assert grown_mib < 32


# --- newest by mtime ------------------------------------------------------------------

def test_newest_npz_by_mtime_not_name(tmp_path):
    (tmp_path / "run" / "a").mkdir(parents=True)
    old = tmp_path / "run" / "a" / "z_later_name.npz"
    new = tmp_path / "run" / "a_first_name.npz"
    np.savez(old, x=np.zeros(2))
    np.savez(new, x=np.ones(2))
    (tmp_path / "run" / "notes.txt").write_text("not an array")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert newest_npz(tmp_path / "run") == new
    os.utime(old, (3_000_000, 3_000_000))
    assert newest_npz(tmp_path / "run") == old
    with pytest.raises(FormatError, match="no .npz"):
        (tmp_path / "empty").mkdir()
        newest_npz(tmp_path / "empty")


# --- atomic writers -------------------------------------------------------------------

def test_atomic_writers_never_clobber_unless_asked(tmp_path):
    p = tmp_path / "report.json"
    write_json(p, {"a": 1})
    with pytest.raises(ToleranceError, match="already exists"):
        write_json(p, {"a": 2})
    assert p.read_text().strip().endswith("}") and '"a": 1' in p.read_text()
    write_json(p, {"a": 3}, overwrite=True)
    assert '"a": 3' in p.read_text()
    with pytest.raises(RuntimeError):
        with atomic_writer(tmp_path / "half.bin") as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert not (tmp_path / "half.bin").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["report.json"]  # no temp left
    write_npz(tmp_path / "s.npz", {"k": np.arange(3)})
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        assert z["k"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        write_json(tmp_path / "nan.json", {"x": float("nan")})


# --- the hostile corpus ---------------------------------------------------------------

def _good(key="x"):
    return npy_bytes(np.arange(10, dtype=np.float64))


def _bomb_entry():
    """Header and directory agree on 80 bytes; the deflate stream holds 64 MiB."""
    head = npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }")
    body = head + bytes(80) + bytes(64 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = c.compress(body) + c.flush()
    return Entry("x.npy", head + bytes(80), method=8, payload=payload)


def _pickle_entry(marker):
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    return Entry("x.npy", npy_bytes(arr, allow_pickle=True))


def _hdr(text, **kw):
    return npy_header(text, **kw)


F8_10 = "{'descr': '<f8', 'fortran_order': False, 'shape': (10,), }"

# name -> (builder(tmp_path) -> entries or raw bytes, expected message fragment, key or None)
HOSTILE = {
    "bad_magic": (lambda t: [Entry("x.npy", b"\x93NUMPZ\x01\x00" + _good()[8:])], "magic", "x"),
    "bad_version": (lambda t: [Entry("x.npy", _hdr(F8_10, version=(9, 0)) + bytes(80))],
                    "version 9.0", "x"),
    "missing_key": (lambda t: [Entry("x.npy", _hdr("{'descr': '<f8', 'shape': (10,), }")
                                     + bytes(80))], "missing fortran_order", "x"),
    "extra_key": (lambda t: [Entry("x.npy", _hdr(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (10,), 'evil': 1}") + bytes(80))],
        "unexpected 'evil'", "x"),
    "not_a_literal": (lambda t: [Entry("x.npy", _hdr("__import__('os').system('true')")
                                       + bytes(80))], "literal", "x"),
    "size_lie": (lambda t: [Entry("x.npy", _hdr(F8_10) + bytes(40))], "= 208 bytes", "x"),
    "size_lie_deflated": (lambda t: [Entry("x.npy", _hdr(F8_10) + bytes(40), method=8)],
                          "the member holds 168", "x"),
    "negative_shape": (lambda t: [Entry("x.npy", _hdr(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 10), }") + bytes(80))],
        "negative", "x"),
    "absurd_shape": (lambda t: [Entry("x.npy", _hdr(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2**40, 2**40), }".replace(
            "2**40", str(2**40))) + bytes(80))], "absurd", "x"),
    "float_shape": (lambda t: [Entry("x.npy", _hdr(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (10.0,), }") + bytes(80))],
        "non-integer", "x"),
    "structured_dtype": (lambda t: [Entry("x.npy", _hdr(
        "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (10,), }") + bytes(80))],
        "structured", "x"),
    "void_dtype": (lambda t: [Entry("x.npy", _hdr(
        "{'descr': '|V8', 'fortran_order': False, 'shape': (10,), }") + bytes(80))],
        "unsupported dtype", "x"),
    "object_dtype": (lambda t: [Entry("x.npy", npy_bytes(np.array([1, "a"], dtype=object),
                                                          allow_pickle=True))],
                     "'|O'", "x"),
    "bad_padding": (lambda t: [Entry("x.npy", _hdr(F8_10, pad=False)[:-1] + b"X" + bytes(80))],
                    "newline", "x"),
    "duplicate_member": (lambda t: [Entry("x.npy", _good()), Entry("x.npy", _good())],
                         "duplicate", "x"),
    "non_npy_member": (lambda t: [Entry("x.npy", _good()), Entry("notes.txt", b"hi")],
                       "not a <key>.npy", "notes.txt"),
    "encrypted": (lambda t: [Entry("x.npy", _good(), flags=1)], "encrypted", "x"),
    "bzip2": (lambda t: [Entry("x.npy", _good(), method=12)], "compression", "x"),
    "zip_bomb": (lambda t: [_bomb_entry()], "more data than the header", "x"),
    "crc_mismatch": (lambda t: [Entry("x.npy", _good(), method=8, crc=1234)], "CRC", "x"),
    "corrupt_deflate": (lambda t: [Entry("x.npy", _good(), method=8,
                                         payload=zlib.compress(_good())[:2] + b"\xff" * 60)],
                        "deflate", "x"),
    "truncated_deflate": (lambda t: [Entry("x.npy", _good(), method=8,
                                           payload=zlib.compress(_good())[2:-20])],
                          "deflate stream", "x"),
}


def _build(tmp_path, name):
    builder, fragment, key = HOSTILE[name]
    bad = tmp_path / "bad.npz"
    write_zip(bad, builder(tmp_path))
    return bad, fragment, key


def _run(*args):
    return CliRunner().invoke(main, ["diff", *map(str, args)])


def _assert_one_line_error(result, path, fragment, key):
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "\n" not in err, err
    assert err.startswith("tolerance: error: "), err
    assert str(path) in err, err
    if key is not None:
        assert f": {key}: " in err, err
    assert fragment in err, err
    assert "Traceback" not in result.output


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.npz"
    np.savez(p, x=np.arange(10, dtype=np.float64))
    return p


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_member_is_a_one_line_error_exit_2(tmp_path, good, name):
    bad, fragment, key = _build(tmp_path, name)
    t0 = time.monotonic()
    _assert_one_line_error(_run(good, bad), bad, fragment, key)
    _assert_one_line_error(_run(bad, good), bad, fragment, key)
    assert time.monotonic() - t0 < 10


def test_sizes_are_checked_before_inflating(tmp_path):
    """A header that promises more than the directory declares is refused at open."""
    head = _hdr("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000,), }")
    write_zip(tmp_path / "lie.npz", [Entry("x.npy", head + bytes(80), method=8)])
    with pytest.raises(FormatError, match=r"lie.npz: x: header \+ shape \(1000000000,\) x itemsize 8 "
                                          r"= 8000000\d+ bytes, the member holds \d+"):
        open_npz(tmp_path / "lie.npz")


def test_pickle_payload_never_runs(tmp_path, good):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.npz"
    write_zip(bad, [_pickle_entry(marker)])
    # sanity: the payload is live (an unsafe loader would create the file)
    raw = zipfile.ZipFile(bad).read("x.npy")
    assert b"PWNED" in raw
    _assert_one_line_error(_run(good, bad), bad, "'|O'", "x")
    npy = tmp_path / "evil.npy"
    npy.write_bytes(raw)
    _assert_one_line_error(_run(good, npy), npy, "'|O'", "evil")
    assert not marker.exists()
    with pytest.raises(ValueError):  # the file really is a pickle: NumPy refuses it too
        np.load(npy, allow_pickle=False)
    assert not marker.exists()
    assert pickle  # imported for clarity: nothing here calls pickle.load


@pytest.mark.parametrize("mutilate", ["truncate_half", "truncate_tail", "garbage", "empty",
                                      "central_dir_offset"])
def test_broken_zip_files(tmp_path, good, mutilate):
    p = tmp_path / "broken.npz"
    np.savez(p, x=np.arange(1000.0), y=np.arange(5))
    raw = p.read_bytes()
    if mutilate == "truncate_half":
        raw = raw[: len(raw) // 2]
    elif mutilate == "truncate_tail":
        raw = raw[:-5]
    elif mutilate == "garbage":
        raw = b"GARBAGE!" * 10
    elif mutilate == "empty":
        raw = b""
    else:  # point the central directory's member offset past the end of the file
        i = raw.rfind(b"PK\x01\x02")
        raw = raw[: i + 42] + (10**9).to_bytes(4, "little") + raw[i + 46:]
    p.write_bytes(raw)
    result = _run(good, p)
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert "\n" not in err and str(p) in err and "Traceback" not in result.output


def test_truncated_npy_file(tmp_path, good):
    p = tmp_path / "t.npy"
    p.write_bytes(npy_bytes(np.arange(10.0))[:-8])
    _assert_one_line_error(_run(good, p), p, "the file holds", "t")


def test_missing_input_is_exit_2(tmp_path, good):
    result = _run(good, tmp_path / "nope.npz")
    assert result.exit_code == 2 and "nope.npz" in result.stderr


def test_stored_crc_is_checked_on_request(tmp_path):
    write_zip(tmp_path / "s.npz", [Entry("x.npy", _good(), crc=99)])
    with open_npz(tmp_path / "s.npz") as ar:  # default: stored members are not re-hashed
        assert np.array_equal(np.concatenate(list(ar["x"].chunks(0, 3))), np.arange(10.0))
    with open_npz(tmp_path / "s.npz", verify_crc=True) as ar:
        with pytest.raises(FormatError, match="s.npz: x: CRC-32 mismatch"):
            list(ar["x"].chunks(0, 3))
    np.savez(tmp_path / "ok.npz", x=np.arange(10.0))
    with open_npz(tmp_path / "ok.npz", verify_crc=True) as ar:
        assert len(list(ar["x"].chunks(0, 3))) == 4


shapes = st.lists(st.integers(0, 6), min_size=0, max_size=4).map(tuple)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, fortran=st.booleans(), compressed=st.booleans(),
       dtype=st.sampled_from(["<f4", ">f8", "<i2", "|b1", ">u4"]),
       axis=st.integers(-4, 3) | st.none(), per=st.integers(1, 7))
def test_any_layout_reassembles(tmp_path_factory, shape, fortran, compressed, dtype, axis,
                                per):
    a = (np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) * 3 % 7).astype(dtype)
    if fortran:
        a = np.array(a, order="F")  # (asfortranarray would make a 0-d array 1-d)
    p = tmp_path_factory.mktemp("h") / "a.npz"
    (np.savez_compressed if compressed else np.savez)(p, a=a)
    if axis is not None and shape and not -len(shape) <= axis < len(shape):
        axis = None
    with open_npz(p) as ar:
        chunks = list(ar["a"].chunks(axis, per))
    if axis is None or not shape:
        got = np.concatenate([c.reshape(-1) for c in chunks])
        assert np.array_equal(got, a.reshape(-1))
        if a.size:
            assert all(c.size == per for c in chunks[:-1])
    else:
        assert np.array_equal(np.concatenate(chunks, axis=axis), a)


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", "u1"])
def test_tiny_pieces_of_a_deflated_member_drain_zlib(tmp_path, dtype):
    # zlib holds inflated output back when asked for a few bytes at a time: the reader must
    # drain it before calling the stream truncated (found by hypothesis: (3, 6) >f8, per=1)
    a = (np.arange(18, dtype=np.float64).reshape(3, 6) * 3 % 7).astype(dtype)
    p = tmp_path / "a.npz"
    np.savez_compressed(p, a=a)
    with open_npz(p) as ar:
        chunks = list(ar["a"].chunks(None, 1))
    assert np.array_equal(np.concatenate(chunks), a.reshape(-1))
