"""A full /dev/shm is an error, not a crash.

A mailbox's pages are reserved (posix_fallocate) before anything touches them: on a
/dev/shm that cannot supply a page the parent gets one line naming /dev/shm, the bytes it
needs and the bytes available, exit 2, and no segment is left; never a SIGBUS (exit 135).
The /dev/shm here is a tiny tmpfs mounted over it in a private mount namespace
(`unshare -m`, root only): in CI, where TOLERANCE_CI=1 and we are root, these tests fail
instead of skipping.
"""
from __future__ import annotations

import sys
import textwrap

import pytest

from _bootstrap_helpers import need_root_namespaces
from _mpi import run_session

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="posix_fallocate on /dev/shm (Linux)")


def with_small_shm(free_kib: int, argv: list[str]) -> list[str]:
    """argv under a 16 KiB /dev/shm of which `free_kib` KiB are free; afterwards what is in
    that /dev/shm besides the filler is listed as `LEFT <name>` lines on stdout."""
    used = 16 - free_kib
    script = ('mount -t tmpfs -o size=16k tmpfs /dev/shm || exit 97; '
              f'head -c {used * 1024} /dev/zero > /dev/shm/filler || exit 98; "$@"; rc=$?; '
              'for f in /dev/shm/*; do [ "$f" = /dev/shm/filler ] || echo "LEFT $f"; done; '
              'exit $rc')
    return ["unshare", "-m", "sh", "-c", script, "small-shm", *argv]


def test_creating_a_mailbox_on_a_full_dev_shm_raises_naming_it():
    need_root_namespaces()
    code = textwrap.dedent("""\
        from tolerance import _native
        try:
            _native.Mailbox.create(_native.make_segment_name("m"))
        except _native.MailboxError as exc:
            print("ERROR", exc)
        else:
            print("CREATED")
        """)
    res = run_session(with_small_shm(0, [sys.executable, "-c", code]), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr   # no SIGBUS
    assert "ERROR /dev/shm is full: cannot reserve 4096 bytes for mailbox /tol-" in res.stdout
    assert "0 bytes available" in res.stdout and "No space left on device" in res.stdout
    assert "LEFT " not in res.stdout, res.stdout


def test_run_box_on_a_full_dev_shm_is_one_error_and_leaves_no_segment(tmp_path):
    """Room for one mailbox of two: the first is made, the second cannot be; both go."""
    need_root_namespaces()
    (tmp_path / "cluster.yaml").write_text(textwrap.dedent(f"""\
        schema: 1
        boxes:
          - name: a
            host: localhost
            root: {tmp_path}
            chips: ["cpu:0", "cpu:*"]
        """))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "quick.yaml").write_text(textwrap.dedent("""\
        schema: 1
        command: ["{python}", "-c", "import sys, numpy as np; np.savez(sys.argv[1] + '/out.npz', z=np.zeros(3))", "{out}"]
        keys: [z]
        timeout: 60
        """))
    argv = [sys.executable, "-m", "tolerance", "run-box", "quick", "--box", "a",
            "--cluster", str(tmp_path / "cluster.yaml"), "--specs", str(tmp_path / "specs")]
    res = run_session(with_small_shm(4, argv), timeout=60, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr      # not 135 (SIGBUS)
    assert "Traceback" not in res.stdout + res.stderr
    chips = [ln for ln in res.stdout.splitlines() if ln.startswith("  cpu:")]
    assert len(chips) == 2 and all("failed" in ln for ln in chips), res.stdout
    for ln in chips:
        assert ("could not start: cannot create the bootstrap mailboxes (2 of 4096 bytes, 8192 "
                "in all): /dev/shm is full: cannot reserve 4096 bytes for mailbox /tol-") in ln, ln
        assert "0 bytes available (No space left on device" in ln, ln
    assert "LEFT " not in res.stdout, res.stdout
    assert not list((tmp_path / "runs" / "quick").glob("*/a/*/out.npz"))  # nothing ran


def test_without_the_reservation_the_same_store_is_a_sigbus():
    """The fault the reservation prevents is real here: a sparse segment on a full /dev/shm
    kills the process that touches it."""
    need_root_namespaces()
    code = textwrap.dedent("""\
        import mmap, os
        fd = os.open("/dev/shm/sparse", os.O_CREAT | os.O_RDWR, 0o600)
        os.ftruncate(fd, 4096)
        m = mmap.mmap(fd, 4096)
        m[0:8] = b"TOLMAGIC"
        print("STORED")
        """)
    res = run_session(with_small_shm(0, [sys.executable, "-c", code]), timeout=60)
    assert "STORED" not in res.stdout
    assert "LEFT /dev/shm/sparse" in res.stdout   # (the namespace's tmpfs goes with it)
    assert res.returncode == 128 + 7, res.returncode  # SIGBUS (the shell's status)
