"""The native mailbox on its own: layout, validation of corrupted images (random and
adversarial), names, the many-mailbox wait, and the child-side bring-up run in-process."""
from __future__ import annotations

import mmap
import os
import re
import struct
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _bootstrap_helpers import no_leaked_segments  # noqa: F401 (autouse fixture)
from tolerance import _native
from tolerance.config.chips import parse_chip

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /dev/shm")

OFF = _native.MAILBOX_OFFSETS
SIZE = _native.MAILBOX_SIZE
MailboxError = _native.MailboxError


def test_layout_constants():
    assert SIZE == 4096 and _native.LAYOUT_VERSION == 2
    assert (OFF["magic"], OFF["version"], OFF["state"], OFF["child_pid"]) == (0, 8, 12, 16)
    assert OFF["error"] == 32 and OFF["context"] == 544
    assert OFF["cpus"] + 256 <= SIZE


class Box:
    """A created mailbox unlinked at the end."""

    def __init__(self):
        self.mb = _native.Mailbox.create(_native.make_segment_name("m"))

    def raw(self) -> bytes:
        with open("/dev/shm" + self.mb.name, "rb") as fh:
            return fh.read()

    def poke(self, offset: int, data: bytes) -> None:
        with open("/dev/shm" + self.mb.name, "r+b") as fh:
            mm = mmap.mmap(fh.fileno(), SIZE)
            mm[offset:offset + len(data)] = data
            mm.close()

    def close(self):
        self.mb.close()
        self.mb.unlink()


@pytest.fixture
def box():
    b = Box()
    yield b
    b.close()


def _bring_up(box, chip="cpu:*"):
    c = parse_chip(chip)  # the parent parses (config.chips); the bring-up takes the result
    return _native.chip_bring_up(box.mb.name, str(c), c.kind, -1 if c.index is None else c.index,
                                 None if c.cores is None else list(c.cores), 1, 3, 0)


@pytest.fixture
def success_image(box):
    ok, info = _bring_up(box)
    assert ok, info
    return box.raw()


# --------------------------------------------------------------------------- lifecycle


def test_fresh_mailbox_is_idle(box):
    assert box.mb.state() == "IDLE" and box.mb.raw_state() == 0
    rep = box.mb.read()
    assert rep == {"state": "IDLE", "child_pid": 0, "error_code": 0, "error": "", "context": None}
    raw = box.raw()
    assert len(raw) == SIZE and struct.unpack_from("<Q", raw, 0)[0] == _native.MAILBOX_MAGIC
    assert raw[12:] == bytes(SIZE - 12)


def test_in_process_bring_up_publishes_the_context(box):
    ok, info = _bring_up(box)
    assert ok
    rep = box.mb.read()
    assert rep["state"] == "SUCCESS" and rep["child_pid"] == os.getpid()
    ctx = rep["context"]
    assert ctx == info
    assert (ctx["device"], ctx["device_id"], ctx["rank"], ctx["nranks"]) == ("cpu", -1, 1, 3)
    assert set(ctx) == {"device", "device_id", "rank", "nranks", "affinity_applied",
                        "threads", "cpus"}
    # a second bring-up on a used mailbox is refused
    with pytest.raises(MailboxError, match="already in state SUCCESS"):
        _native.chip_bring_up(box.mb.name, "cpu:*", "cpu", -1, None, 0, 1, 0)


def test_bring_up_failures_are_published_errors(box):
    # a core the CPU set cannot hold is refused by the bring-up too (the grammar refuses it
    # first: config.chips.MAX_CPU)
    ok, info = _native.chip_bring_up(box.mb.name, "cpu:9999", "cpu", -1, [9999], 1, 3, 0)
    assert not ok and info == "chip cpu:9999: core 9999 exceeds the supported maximum 1023"
    rep = box.mb.read()
    assert rep["state"] == "ERROR" and rep["error"] == info and rep["error_code"] != 0


def test_error_message_is_bounded_and_utf8_safe(box):
    _native.chip_fail(box.mb.name, "é" * 1000)
    rep = box.mb.read()
    assert rep["state"] == "ERROR"
    assert len(rep["error"].encode()) <= _native.ERROR_CAP - 1 and set(rep["error"]) == {"é"}


def test_names_and_errors_of_segments():
    names = {_native.make_segment_name("m") for _ in range(2000)}
    assert len(names) == 2000
    pat = re.compile(rf"^/tol-{os.getpid():x}-[0-9a-f]+m-[0-9a-f]{{6}}$")
    assert all(len(n) <= 30 and pat.match(n) for n in names)
    tagged = {_native.make_segment_name("m", "z9") for _ in range(5000)}  # the counter wraps
    assert len(tagged) == 5000
    pat = re.compile(rf"^/tol-{os.getpid():x}-[0-9a-f]{{1,3}}m-[0-9a-f]{{6}}\.z9$")
    assert all(len(n) <= 30 and pat.match(n) for n in tagged)
    assert len(_native.make_segment_name("m", "wxyz")) <= 30
    for bad_tag in ["ABC", "toolong", "a.b", "é"]:
        with pytest.raises(MailboxError, match="invalid shared-memory segment tag"):
            _native.make_segment_name("m", bad_tag)
    for bad in ["noslash", "/a/b", "/" + "x" * 40, ""]:
        with pytest.raises(MailboxError, match="invalid shared-memory segment name"):
            _native.Mailbox.create(bad)
    name = _native.make_segment_name("m")
    with pytest.raises(MailboxError, match="cannot open mailbox"):
        _native.chip_fail(name, "x")
    assert _native.unlink_segment(name) is False


def test_create_is_exclusive(box):
    with pytest.raises(MailboxError, match="cannot create mailbox .*exists"):
        _native.Mailbox.create(box.mb.name)


def test_open_refuses_a_foreign_segment(box):
    box.poke(0, b"XXXXXXXX")
    with pytest.raises(MailboxError, match="is not a tolerance mailbox"):
        _native.chip_fail(box.mb.name, "x")


def test_closed_mailbox_is_an_error(box):
    box.mb.close()
    assert box.mb.closed
    with pytest.raises(MailboxError, match="closed"):
        box.mb.read()
    with pytest.raises(MailboxError, match="closed"):
        _native.wait_all([box.mb], [-1], 0.1)


# --------------------------------------------------------------------------- the wait


def test_wait_times_out_with_its_deadline(box):
    t = time.monotonic()
    assert _native.wait_all([box.mb], [-1], 0.2) == ("timeout", 0, 0)
    assert 0.19 < time.monotonic() - t < 1.0


def test_wait_wakes_on_publish_from_another_thread():
    boxes = [Box() for _ in range(3)]
    try:
        def publish():
            time.sleep(0.1)
            _native.chip_fail(boxes[2].mb.name, "late failure")

        th = threading.Thread(target=publish)
        t = time.monotonic()
        th.start()
        kind, idx, state = _native.wait_all([b.mb for b in boxes], [-1] * 3, 30)
        th.join()
        assert (kind, idx, state) == ("error", 2, 3)
        assert time.monotonic() - t < 1.0
    finally:
        for b in boxes:
            b.close()


def test_wait_sees_every_state(box, success_image):
    assert _native.wait_all([box.mb], [-1], 5) == ("ready", 0, 0)
    box.poke(OFF["state"], struct.pack("<I", 9))
    assert _native.wait_all([box.mb], [-1], 5) == ("corrupt", 0, 9)
    with pytest.raises(ValueError):
        _native.wait_all([box.mb], [-1], -1)


def test_bench_helper():
    for mode in ("futex", "sleep1ms"):
        lat = _native._bench_bootstrap.wake_latency(mode, 3)
        assert len(lat) == 3 and all(x > 0 for x in lat)


# --------------------------------------------------------------------------- corrupted images


def _with(image: bytes, offset: int, data: bytes) -> bytes:
    b = bytearray(image)
    b[offset:offset + len(data)] = data
    return bytes(b)


def test_valid_image_parses(success_image):
    rep = _native.parse_mailbox(success_image)
    assert rep["state"] == "SUCCESS" and rep["context"]["device"] == "cpu"


ADVERSARIAL = [
    ("size 4095", lambda im: im[:-1], "image has 4095 bytes"),
    ("size 8192", lambda im: im + im, "image has 8192 bytes"),
    ("empty", lambda im: b"", "image has 0 bytes"),
    ("bad magic", lambda im: _with(im, 0, b"\0" * 8), "bad magic 0x0000000000000000"),
    ("version", lambda im: _with(im, 8, struct.pack("<I", 1)), "layout version 1, expected 2"),
    ("state", lambda im: _with(im, 12, struct.pack("<I", 4)), "invalid state 0x00000004"),
    ("state max", lambda im: _with(im, 12, b"\xff" * 4), "invalid state 0xffffffff"),
    ("no pid", lambda im: _with(im, 16, struct.pack("<i", 0)), "child pid 0"),
    ("huge error len", lambda im: _with(im, 24, struct.pack("<I", 1 << 31)), "error length"),
    ("error len at cap", lambda im: _with(im, 24, struct.pack("<I", 512)), "error length 512"),
    ("unterminated error", lambda im: _with(_with(im, 24, struct.pack("<I", 5)), 32, b"A" * 512),
     "not terminated"),
    ("short error", lambda im: _with(_with(im, 24, struct.pack("<I", 5)), 32, b"AB\0"),
     "not terminated at its length 5"),
    ("unterminated device", lambda im: _with(im, OFF["device"], b"cpuxxxxx"), "device is not terminated"),
    ("device name", lambda im: _with(im, OFF["device"], b"tpu\0"), "unknown device 'tpu'"),
    ("device bytes", lambda im: _with(im, OFF["device"], b"\x80pu\0"), "unknown device '\\x80pu'"),
    ("cpu with id", lambda im: _with(im, OFF["device_id"], struct.pack("<i", 2)), "device id 2"),
    ("rank", lambda im: _with(im, OFF["rank"], struct.pack("<i", 3)), "rank 3 of 3"),
    ("nranks", lambda im: _with(im, OFF["nranks"], struct.pack("<i", 0)), "rank 1 of 0"),
    ("affinity flag", lambda im: _with(im, OFF["affinity_applied"], struct.pack("<I", 2)),
     "affinity flag 2"),
    ("unterminated cpus", lambda im: _with(im, OFF["cpus"], b"1" * 256), "cpu list is not terminated"),
]


@pytest.mark.parametrize("label,mutate,why", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_images_are_clean_errors(success_image, label, mutate, why):
    with pytest.raises(MailboxError, match="^mailbox corrupted: ") as ei:
        _native.parse_mailbox(mutate(success_image))
    assert why in str(ei.value)


def test_non_utf8_text_is_replaced_not_raised(success_image):
    rep = _native.parse_mailbox(_with(success_image, OFF["cpus"], b"\xff\xfe\0"))
    assert rep["context"]["cpus"] == "\ufffd\ufffd"


def test_corrupted_live_mailbox_reads_as_an_error(box, success_image):
    box.poke(OFF["rank"], struct.pack("<i", 7))
    with pytest.raises(MailboxError, match="rank 7 of 3"):
        box.mb.read()


def _check_invariants(rep: dict) -> None:
    assert rep["state"] in ("IDLE", "BOOTING", "SUCCESS", "ERROR")
    assert len(rep["error"]) < _native.ERROR_CAP
    ctx = rep["context"]
    if ctx is not None:
        assert ctx["device"] in ("cpu", "cuda", "rocm") and 0 <= ctx["rank"] < ctx["nranks"]


def _parse_or_error(image: bytes) -> None:
    try:
        rep = _native.parse_mailbox(image)
    except MailboxError as exc:
        assert str(exc).startswith("mailbox corrupted: ")
    else:
        _check_invariants(rep)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=4096, max_size=4096))
def test_random_images(data):
    _parse_or_error(data)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 3), st.binary(min_size=4096 - 16, max_size=4096 - 16))
def test_random_images_with_a_valid_header(state, rest):
    head = struct.pack("<QII", _native.MAILBOX_MAGIC, _native.LAYOUT_VERSION, state)
    _parse_or_error(head + rest)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=12))
def test_mutated_valid_images(success_image, flips):
    b = bytearray(success_image)
    for off, val in flips:
        b[off] = val
    _parse_or_error(bytes(b))
