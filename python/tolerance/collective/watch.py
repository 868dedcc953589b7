"""Which box died first: a TCP line from every rank to the launcher, held open for the run.

The MPI runtime kills every rank when one dies and reports a pid that need not be the
one that died. So each rank, once it knows its box, connects to the launcher (address in
TOLERANCE_LAUNCH_WATCH), says `hello <rank> <box> <host> <pid>` and keeps the connection;
at a normal end it says `bye`. The kernel closes a killed process's sockets at once, so
the first connection that ends without `bye` names the box that died first; the ranks
the runtime kills afterwards end later.
"""
from __future__ import annotations

import socket
import threading
import time

WATCH_ENV = "TOLERANCE_LAUNCH_WATCH"
_CONNECT_TIMEOUT_S = 5.0
_LINE_MAX = 1024


class DeathWatch:
    """The launcher's side: accepts every rank's line and records how each one ended."""

    def __init__(self, bind_host: str = "127.0.0.1", advertise_host: str | None = None) -> None:
        self._srv = socket.create_server((bind_host, 0))
        self._srv.settimeout(0.5)
        port = self._srv.getsockname()[1]
        self.address = f"{advertise_host or bind_host}:{port}"
        self._lock = threading.Lock()
        self.ranks: dict[int, dict] = {}
        self.deaths: list[dict] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True, name="tolerance-watch")
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._follow, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _follow(self, conn: socket.socket) -> None:
        me: dict | None = None
        said_bye = False
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(256)
                except OSError:
                    data = b""
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    parts = line.decode("utf-8", "replace").split()
                    if len(parts) == 5 and parts[0] == "hello" and parts[1].isdigit():
                        me = {"rank": int(parts[1]), "box": parts[2], "host": parts[3],
                              "pid": parts[4]}
                        with self._lock:
                            self.ranks[me["rank"]] = me
                    elif parts == ["bye"]:
                        said_bye = True
                if len(buf) > _LINE_MAX:
                    break
        if me is not None and not said_bye:
            with self._lock:
                self.deaths.append({**me, "t": time.monotonic()})

    def first_death(self, settle_s: float = 1.0) -> dict | None:
        """The rank whose line ended first without `bye` (waits briefly for late EOFs)."""
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.deaths) >= len(self.ranks) and self.ranks:
                    break
            time.sleep(0.02)
        with self._lock:
            return min(self.deaths, key=lambda d: d["t"]) if self.deaths else None

    def close(self) -> None:
        self._stop.set()
        try:
            self._srv.close()
        except OSError:
            pass


def announce(address: str, rank: int, box: str, host: str, pid: int) -> socket.socket | None:
    """The rank's side: connect and say hello; None when the launcher cannot be reached."""
    host_part, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host_part, int(port)), timeout=_CONNECT_TIMEOUT_S)
        sock.sendall(f"hello {rank} {box} {host} {pid}\n".encode())
        sock.settimeout(None)
        return sock
    except (OSError, ValueError):
        return None


def farewell(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.sendall(b"bye\n")
    except OSError:
        pass
    finally:
        sock.close()
