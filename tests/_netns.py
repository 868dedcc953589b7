"""A cluster of real hosts on this machine: Linux network namespaces, each with its own
address, hostname (UTS namespace), sshd (key authentication, private config) and box root
(its own clone of the project); the controller in a namespace of its own.

Layout (names unique per session, so parallel sessions and CI never collide):

    <tag>sw   the switch: a bridge that every host's veth plugs into
    <tag>c    the controller (hostname <tag>-ctl), where `tolerance launch` runs
    <tag>h0.. the hosts (hostname <tag>-h0, ...), each running its own sshd on port 22

No namespace touches the machine's network, /etc/hosts or ~/.ssh: every namespace gets a
private mount namespace in which a hosts file of our own is bind-mounted on /etc/hosts and
a tmpfs on /run (sshd's privilege-separation directory); ssh finds its key and options
through an `ssh` wrapper first on PATH. `close()` kills every process left in any of the
namespaces, deletes them and removes the files.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SUBNET = "10.77.0"


def can_make_namespaces() -> str | None:
    """None when this process can build the cluster, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/sbin/sshd").exists():
        return "sshd is not installed (apt-get install openssh-server)"
    return None


def _sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class NetnsCluster:
    def __init__(self, n_hosts: int, repo: Path) -> None:
        self.tag = f"tl{secrets.token_hex(3)}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        self.sw = f"{self.tag}sw"
        self.ctl = f"{self.tag}c"
        self.hosts = [f"{self.tag}h{i}" for i in range(n_hosts)]          # namespaces
        self.hostnames = [f"{self.tag}-h{i}" for i in range(n_hosts)]
        self.ctl_hostname = f"{self.tag}-ctl"
        self.gone_hostname = f"{self.tag}-gone"
        self._sshd: list[subprocess.Popen] = []
        self._made: list[str] = []
        try:
            self._build(repo)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ build
    def _build(self, repo: Path) -> None:
        d = self.dir
        (d / "ssh").mkdir(mode=0o700)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh" / "id"))
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "ssh" / "hostkey"))
        shutil.copy(d / "ssh" / "id.pub", d / "ssh" / "authorized_keys")
        (d / "ssh" / "config").write_text(
            f"Host *\n  IdentityFile {d}/ssh/id\n  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            "  BatchMode yes\n")
        (d / "sshd_config").write_text(
            f"Port 22\nListenAddress 0.0.0.0\nHostKey {d}/ssh/hostkey\n"
            f"AuthorizedKeysFile {d}/ssh/authorized_keys\nPermitRootLogin yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPidFile none\nPrintMotd no\nAcceptEnv *\nMaxStartups 100\n"
            "Subsystem sftp internal-sftp\n")
        (d / "bin").mkdir()
        wrapper = d / "bin" / "ssh"
        wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {d}/ssh/config \"$@\"\n")
        wrapper.chmod(0o755)
        lines = ["127.0.0.1 localhost", f"{SUBNET}.1 {self.ctl_hostname}"]
        lines += [f"{SUBNET}.{10 + i} {h}" for i, h in enumerate(self.hostnames)]
        lines.append(f"{SUBNET}.99 {self.gone_hostname}")  # an address no host answers
        (d / "hosts").write_text("\n".join(lines) + "\n")

        _sh("ip", "netns", "add", self.sw)
        self._made.append(self.sw)
        _sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        for k, (ns, addr) in enumerate([(self.ctl, 1)] + [(h, 10 + i)
                                                          for i, h in enumerate(self.hosts)]):
            _sh("ip", "netns", "add", ns)
            self._made.append(ns)
            a, b = f"{self.tag}a{k}", f"{self.tag}b{k}"
            _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            _sh("ip", "link", "set", a, "netns", ns)
            _sh("ip", "link", "set", b, "netns", self.sw)
            _sh("ip", "-n", ns, "link", "set", a, "name", "eth0")
            _sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{addr}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", self.sw, "link", "set", b, "master", "br0")
            _sh("ip", "-n", self.sw, "link", "set", b, "up")
        commit = _sh("git", "-C", str(repo), "rev-parse", "HEAD").stdout.strip()
        for i, ns in enumerate(self.hosts):
            root = d / f"root{i}"   # every box root: its own clone, all at one commit
            _sh("git", "clone", "-q", "--shared", "--no-checkout", str(repo), str(root),
                timeout=120)
            _sh("git", "-C", str(root), "checkout", "-q", "--detach", commit, timeout=120)
            self._sshd.append(subprocess.Popen(
                self.prefix(ns, self.hostnames[i]) + ["/usr/sbin/sshd", "-D", "-e", "-f",
                                                      str(d / "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=open(d / f"sshd{i}.log", "wb")))
        deadline = time.monotonic() + 20
        for name in self.hostnames:
            while True:
                r = self.run_ctl(["ssh", name, "true"], timeout=15, check=False)
                if r.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd on {name} does not answer: {r.stderr.strip()}")
                time.sleep(0.2)

    def prefix(self, ns: str, hostname: str) -> list[str]:
        """argv prefix: run in namespace `ns` with its hostname, hosts file and /run."""
        d = self.dir
        shm = d / f"shm-{ns}"
        shm.mkdir(exist_ok=True)
        script = (f"mount --make-rprivate / && mount --bind {d}/hosts /etc/hosts && "
                  f"mount --bind {shm} /dev/shm && "
                  f"mount -t tmpfs -o mode=755 tolerance-run /run && mkdir -p /run/sshd && "
                  f"hostname {hostname} && exec \"$@\"")
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "sh", "-c", script, "sh"]

    def shm_left(self) -> dict[str, list[str]]:
        """What is left in each namespace's own /dev/shm."""
        out = {}
        for ns in [self.ctl] + self.hosts:
            names = sorted(os.listdir(self.dir / f"shm-{ns}"))
            if names:
                out[ns] = names
        return out

    def root(self, i: int) -> Path:
        return self.dir / f"root{i}"

    def env(self) -> dict:
        return {**os.environ, "PATH": f"{self.dir}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def run_ctl(self, argv, *, timeout: float = 120, check: bool = False, env=None, cwd=None):
        """Run argv on the controller; returns CompletedProcess (killed whole on timeout)."""
        proc = subprocess.Popen(self.prefix(self.ctl, self.ctl_hostname) + [str(a) for a in argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env or self.env(), cwd=cwd, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"timed out after {timeout} s:\n{out}\n{err}")
        res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and res.returncode:
            raise AssertionError(f"{argv} failed: {err}")
        return res

    def start_ctl(self, argv, *, env=None, cwd=None) -> subprocess.Popen:
        return subprocess.Popen(self.prefix(self.ctl, self.ctl_hostname) + [str(a) for a in argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env or self.env(), cwd=cwd, start_new_session=True,
                                stdin=subprocess.DEVNULL)

    def link(self, i: int, up: bool) -> None:
        """Cut (or restore) host i's link at the switch."""
        _sh("ip", "-n", self.sw, "link", "set", f"{self.tag}b{i + 1}", "up" if up else "down")

    def stop_sshd(self, i: int) -> None:
        p = self._sshd[i]
        p.kill()
        p.wait(timeout=10)

    # ------------------------------------------------------------------ inspection
    def pids(self, ns: str) -> set[int]:
        r = _sh("ip", "netns", "pids", ns, check=False)
        return {int(x) for x in r.stdout.split()}

    def job_pids(self) -> dict[str, list[str]]:
        """Every process in any namespace that is not a host's sshd listener: {ns: [cmdline]}."""
        keep = {p.pid for p in self._sshd}
        out: dict[str, list[str]] = {}
        for ns in [self.ctl] + self.hosts:
            for pid in self.pids(ns) - keep:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                out.setdefault(ns, []).append(f"{pid} {cmd.strip()}")
        return out

    def wait_no_job(self, timeout: float = 15) -> dict[str, list[str]]:
        deadline = time.monotonic() + timeout
        while True:
            left = self.job_pids()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        for p in self._sshd:
            try:
                p.kill()
                p.wait(timeout=10)
            except (OSError, subprocess.SubprocessError):
                pass
        for ns in self._made:
            for pid in self.pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self._made):
            _sh("ip", "netns", "del", ns, check=False)
        self._made.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
