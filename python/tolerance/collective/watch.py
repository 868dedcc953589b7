"""The watch line: one TCP connection from every rank to `tolerance launch`, held for the run.

It does four things the MPI runtime does not:

- **who is who**: a rank says `hello <secret> <rank> <box> <host> <pid>` before it starts
  MPI; the per-launch secret (in TOLERANCE_LAUNCH_WATCH, never on a command line) makes
  the launcher ignore every other connection;
- **the job's inputs**: the launcher answers a hello with the registry and spec content
  (`collective.inputs`), so a box never needs a controller path;
- **a start barrier**: once every box has said hello the launcher says `go`, and only
  then do the ranks start MPI (whose start blocks on a peer that never comes, with no
  Python thread running);
- **heartbeats both ways**: a rank silent for longer than `lost_after` is lost (its host
  or its link is gone), and a rank whose launcher is silent (or gone) ends itself and its
  chips, so a host that comes back holds no orphans;
- **which box died first**: the kernel closes a killed process's sockets at once, so the
  first line that ends without `bye` names the box that died; the ranks the runtime kills
  afterwards end later. The order is the kernel's, not the reader threads': on a busy
  box the thread of a later line can run first, so one epoll set, woken by nothing but a
  line's end, numbers the ends as they arrive (`_Ends`).

Messages are newline-ended ASCII lines; the launcher's one reply to a hello is
`inputs <n>` followed by n bytes of JSON.
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
import select
import socket
import threading
import time
from typing import Callable

from tolerance._errors import EXIT_ERROR, ToleranceError, say

WATCH_ENV = "TOLERANCE_LAUNCH_WATCH"
DEFAULT_LOST_AFTER_S = 15.0
_CONNECT_TIMEOUT_S = 10.0
_HELLO_TIMEOUT_S = 5.0        # a connection must say a good hello this fast, or is ignored
_LINE_MAX = 64 * 1024
_INPUTS_MAX = 64 << 20


def beat_interval(lost_after: float) -> float:
    """How often each side beats: several beats fit in one `lost_after`."""
    return max(0.1, min(1.0, lost_after / 5.0))


class _Peer:
    """What the launcher knows about one rank."""

    def __init__(self, conn: socket.socket, rank: int, box: str, host: str, pid: int) -> None:
        self.conn = conn
        self.rank, self.box, self.host, self.pid = rank, box, host, pid
        self.t_hello = self.t_seen = time.monotonic()
        self.bye = False
        self.closed_at: float | None = None   # when its reader saw the line end
        self.end_seq: int | None = None        # its place in the order the lines ended
        self.phase = "hello"
        self.notes: dict = {}
        self.shm: list[str] = []
        self.send_lock = threading.Lock()

    def send(self, data: bytes) -> bool:
        with self.send_lock:
            try:
                self.conn.sendall(data)
                return True
            except OSError:
                return False

    def to_dict(self) -> dict:
        return {"rank": self.rank, "box": self.box, "host": self.host, "pid": self.pid,
                "phase": self.phase, "bye": self.bye, **self.notes}


class _Ends:
    """Numbers the watch lines in the order their ends (FIN or RST) reached this host.

    Each line is registered through a dup of its socket for EPOLLRDHUP alone: a socket's
    data wake-ups carry EPOLLIN in their key, which such an entry ignores, so it joins the
    epoll ready list only when the line ends, and the ready list is first in, first out.
    (The dup is a second descriptor of one socket: the reader thread's recv and close are
    untouched; a line's dup is closed only here, between two polls, so a descriptor
    number is never reused while an event for it may be pending.)
    """

    def __init__(self, lock: threading.Lock, changed: threading.Event,
                 stop: threading.Event) -> None:
        self._lock, self._changed, self._stop = lock, changed, stop
        self._epoll = select.epoll()
        self._by_fd: dict[int, _Peer] = {}
        self._retired: list[int] = []
        self._seq = 0
        threading.Thread(target=self._run, daemon=True, name="tolerance-watch-ends").start()

    def add(self, peer: _Peer) -> int:
        fd = os.dup(peer.conn.fileno())
        with self._lock:
            self._by_fd[fd] = peer
            self._epoll.register(fd, select.EPOLLRDHUP)
        return fd

    def retire(self, fd: int) -> None:
        """The reader is done with this line: its dup goes at the next turn."""
        with self._lock:
            self._retired.append(fd)

    def _number(self, events) -> None:
        with self._lock:
            for fd, _ in events:
                peer = self._by_fd.get(fd)
                if peer is not None and peer.end_seq is None:
                    peer.end_seq = self._seq
                    self._seq += 1
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass
        if events:
            self._changed.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._number(self._epoll.poll(0.2))
                with self._lock:
                    retired, self._retired = self._retired, []
                if retired:
                    # their ends happened before their readers retired them: take what
                    # is pending before the dups go
                    self._number(self._epoll.poll(0))
                    self._drop(retired)
        finally:
            with self._lock:
                rest = list(self._by_fd)
            self._drop(rest)
            self._epoll.close()

    def _drop(self, fds: list[int]) -> None:
        with self._lock:
            for fd in fds:
                if self._by_fd.pop(fd, None) is None:
                    continue
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass
                os.close(fd)


class Watch:
    """The launcher's side: accepts authenticated lines, hands out inputs, beats, follows."""

    def __init__(self, inputs: dict, *, lost_after: float = DEFAULT_LOST_AFTER_S,
                 bind_host: str = "127.0.0.1", advertise_host: str | None = None,
                 boxes: list[str] | None = None) -> None:
        self.secret = secrets.token_hex(16)
        self.lost_after = float(lost_after)
        self._payload = json.dumps({"inputs": inputs, "lost_after": self.lost_after}).encode()
        self._srv = socket.create_server((bind_host, 0))
        self._srv.settimeout(0.2)
        port = self._srv.getsockname()[1]
        self.address = f"{advertise_host or bind_host}:{port}"
        self.env_value = f"{self.secret}@{self.address}"
        self._lock = threading.Lock()
        self.peers: dict[str, _Peer] = {}        # by box
        self.ignored = 0                          # connections without the secret
        self.boxes = list(boxes or [])            # `go` once every one of these said hello
        self.went = False
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._ends = _Ends(self._lock, self.changed, self._stop)
        for target, name in ((self._accept, "accept"), (self._beat, "beat")):
            threading.Thread(target=target, daemon=True, name=f"tolerance-watch-{name}").start()

    # -- threads
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._follow, args=(conn,), daemon=True).start()

    def _beat(self) -> None:
        period = beat_interval(self.lost_after)
        while not self._stop.wait(period):
            with self._lock:
                peers = [p for p in self.peers.values() if p.closed_at is None]
            for p in peers:
                p.send(b"beat\n")

    def _hello(self, conn: socket.socket) -> _Peer | None:
        conn.settimeout(_HELLO_TIMEOUT_S)
        buf = b""
        try:
            while b"\n" not in buf and len(buf) < _LINE_MAX:
                data = conn.recv(4096)
                if not data:
                    return None
                buf += data
        except OSError:
            return None
        line = buf.split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if len(line) != 6 or line[0] != "hello" or not line[2].lstrip("-").isdigit() \
                or not line[5].isdigit():
            return None
        if not hmac.compare_digest(line[1].encode(), self.secret.encode()):
            return None
        peer = _Peer(conn, int(line[2]), line[3], line[4], int(line[5]))
        with self._lock:
            if peer.box in self.peers:      # a second hello for one box: not ours
                return None
            self.peers[peer.box] = peer
        peer.send(f"inputs {len(self._payload)}\n".encode() + self._payload)
        with self._lock:
            go = (not self.went and bool(self.boxes)
                  and all(b in self.peers for b in self.boxes))
            if go:
                self.went = True
            peers = list(self.peers.values())
        if go:
            for p in peers:
                p.send(b"go\n")
        return peer

    def _follow(self, conn: socket.socket) -> None:
        with conn:
            peer = self._hello(conn)
            if peer is None:
                with self._lock:
                    self.ignored += 1
                return
            end_fd = self._ends.add(peer)
            self.changed.set()
            conn.settimeout(0.5)
            buf = b""
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                peer.t_seen = time.monotonic()
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self._message(peer, line.decode("utf-8", "replace"))
                if len(buf) > _LINE_MAX:
                    break
            with self._lock:
                peer.closed_at = time.monotonic()
            self._ends.retire(end_fd)
            self.changed.set()

    def _message(self, peer: _Peer, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "bye":
            peer.bye = True
        elif word == "phase":
            peer.phase = rest.strip()[:64]
        elif word == "shm":
            peer.shm = [n for n in rest.split() if "/" not in n][:256]
        elif word == "note":
            try:
                note = json.loads(rest)
            except ValueError:
                return
            if isinstance(note, dict):
                peer.notes.update({str(k): v for k, v in note.items()})

    # -- what the launcher asks
    def snapshot(self) -> dict[str, _Peer]:
        with self._lock:
            return dict(self.peers)

    def lost(self) -> tuple[_Peer, float] | None:
        """A rank that said hello, has not said bye, and has been silent too long."""
        now = time.monotonic()
        for p in self.snapshot().values():
            if not p.bye and p.closed_at is None and now - p.t_seen > self.lost_after:
                return p, now - p.t_seen
        return None

    def first_death(self, settle_s: float = 1.0) -> _Peer | None:
        """The rank whose line ended first without `bye` (waits briefly for late EOFs)."""
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            peers = self.snapshot().values()
            if peers and all(p.closed_at is not None and p.end_seq is not None
                             for p in peers):
                break
            time.sleep(0.02)
        dead = [p for p in self.snapshot().values() if p.closed_at is not None and not p.bye]
        # the kernel's order of the ends; a line without one (its reader broke off) by time
        return min(dead, key=lambda p: (p.end_seq is None, p.end_seq or 0, p.closed_at)) \
            if dead else None

    def end_all(self) -> None:
        """Tell every rank to end now (the job is over); each tears its box down."""
        for p in self.snapshot().values():
            if p.closed_at is None:
                p.send(b"end\n")

    def close(self) -> None:
        self._stop.set()
        try:
            self._srv.close()
        except OSError:
            pass
        for p in self.snapshot().values():
            try:
                p.conn.close()
            except OSError:
                pass


def env_rank() -> int:
    """This process's rank as the MPI runtime set it, before MPI is initialized."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return -1


class RankLine:
    """The rank's side: hello, the inputs, heartbeats, and the end of the box if the
    launcher is lost."""

    def __init__(self, sock: socket.socket, inputs: dict, lost_after: float, who: str,
                 pending: bytes = b"") -> None:
        self._sock = sock
        self._pending = pending
        self.inputs = inputs
        self.lost_after = lost_after
        self.who = who
        self._send_lock = threading.Lock()
        self._done = threading.Event()
        self._go = threading.Event()
        self._read_ended = threading.Event()   # the reader is gone: no `go` can come now
        self.on_lost: Callable[[str], None] = self._default_lost
        threading.Thread(target=self._read, daemon=True, name="tolerance-line-read").start()
        threading.Thread(target=self._beat, daemon=True, name="tolerance-line-beat").start()

    @classmethod
    def open(cls, value: str, *, rank: int, box: str, host: str, pid: int) -> "RankLine":
        """Connect and say hello; raises ToleranceError when the launcher cannot be reached."""
        secret, _, address = value.partition("@")
        host_part, _, port = address.rpartition(":")
        who = f"rank {rank} (box {box})"
        try:
            sock = socket.create_connection((host_part, int(port)), timeout=_CONNECT_TIMEOUT_S)
            sock.sendall(f"hello {secret} {rank} {box} {host} {pid}\n".encode())
            head = b""
            while b"\n" not in head:
                data = sock.recv(64)
                if not data:
                    raise OSError("the launcher closed the line (refused the hello)")
                head += data
                if len(head) > 64:
                    raise OSError("the launcher's reply is malformed")
            first, rest = head.split(b"\n", 1)
            word, _, n = first.decode("ascii", "replace").partition(" ")
            if word != "inputs" or not n.isdigit() or int(n) > _INPUTS_MAX:
                raise OSError("the launcher's reply is malformed")
            need = int(n)
            body = bytearray(rest)
            while len(body) < need:
                data = sock.recv(min(1 << 20, need - len(body)))
                if not data:
                    raise OSError("the launcher closed the line while sending the inputs")
                body += data
            doc = json.loads(bytes(body[:need]))
            extra = bytes(body[need:])
        except (OSError, ValueError) as exc:
            raise ToleranceError(f"{who}: cannot reach the launcher at {address}: {exc}") from None
        return cls(sock, doc["inputs"], float(doc["lost_after"]), who, extra)

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError:
                pass

    def _beat(self) -> None:
        period = beat_interval(self.lost_after)
        while not self._done.wait(period):
            self._send(b"beat\n")

    def _read(self) -> None:
        try:
            self._follow()
        finally:
            self._read_ended.set()

    def _follow(self) -> None:
        self._sock.settimeout(self.lost_after)
        buf, why = self._pending, None
        while why is None:
            while b"\n" in buf and why is None:
                line, buf = buf.split(b"\n", 1)
                if line == b"end":
                    why = "the launcher ended the job"
                elif line == b"go":
                    self._go.set()
            if why is not None:
                break
            if len(buf) > _LINE_MAX:
                buf = b""
            try:
                data = self._sock.recv(4096)
            except socket.timeout:
                why = f"the launcher was silent for {self.lost_after:g} s"
                break
            except OSError:
                data = b""
            if not data:
                why = "the launcher's line closed"
                break
            buf += data
        if not self._done.is_set():
            self.on_lost(why)

    def _default_lost(self, why: str) -> None:
        say(f"tolerance: error: {self.who}: lost the launcher ({why}); ending this box")
        os._exit(EXIT_ERROR)

    def wait_go(self) -> None:
        """Block until every box has said hello (the launcher says `go`): MPI starts only
        then, so a box that never starts leaves the others nothing to clean but themselves.
        (While MPI initializes, this process runs no Python thread.)"""
        while not self._go.wait(0.5):
            if self._read_ended.is_set() and not self._go.is_set():
                # the line ended and its on_lost returned (or raised) without ending us
                raise ToleranceError(f"{self.who}: lost the launcher before every box "
                                     "said hello")

    def phase(self, name: str) -> None:
        self._send(f"phase {name}\n".encode())

    def note(self, **fields) -> None:
        self._send(("note " + json.dumps(fields, separators=(",", ":")) + "\n").encode())

    def shm(self, names: list[str]) -> None:
        self._send(("shm " + " ".join(names) + "\n").encode())

    def bye(self) -> None:
        self._done.set()
        self._send(b"bye\n")
        try:
            self._sock.close()
        except OSError:
            pass


__all__ = ["DEFAULT_LOST_AFTER_S", "RankLine", "WATCH_ENV", "Watch", "beat_interval", "env_rank"]
