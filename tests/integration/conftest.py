"""A lab of network namespaces with the real router between them.

Each test gets two fresh namespaces (a LAN host and a WAN server) whose names
carry the test process id, a config made from conf/router.toml with short
timeouts, and the router running as a separate process on real TUN devices.
Everything is torn down afterwards: processes this fixture started are ended
by their pid, then the namespaces are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS = str(Path(__file__).with_name("peers.py"))
LAN_HOST = "192.168.77.2"
ROUTER_LAN = "192.168.77.1"
ROUTER_WAN = "203.0.113.1"
SERVER = "203.0.113.10"

SHORT_TIMEOUTS = {"udp": 3, "udp_stream": 4, "icmp": 3, "tcp_time_wait": 3, "tcp_close": 2,
                  "tcp_fin_wait": 3, "tcp_close_wait": 3, "tcp_last_ack": 3}


def run(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


@dataclass
class NetLab:
    lan: str
    wan: str
    workdir: Path
    config: Path
    socket: str
    router: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, ns: str, *cmd: str, timeout: float = 30,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *cmd, timeout=timeout, check=check)

    def spawn(self, ns: str, *cmd: str, stdin: bool = False) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             stdin=subprocess.PIPE if stdin else None)
        self.procs.append(p)
        return p

    def server(self, ns: str, mode: str, addr: str, port: int, lifetime: float = 60) -> None:
        p = self.spawn(ns, sys.executable, PEERS, mode, addr, str(port), str(lifetime))
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "ready", line

    def echo(self, port: int, lifetime: float = 60) -> Echo:
        """A TCP connection from the LAN host to an echo server on the WAN,
        kept open for the test to check with ``Echo.check``."""
        return Echo(self, port, lifetime)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = run(sys.executable, "-m", "router.ctl", "-S", self.socket, *args, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"routerctl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl("--json", *args).stdout)

    def start_router(self, prefix: tuple[str, ...] = ()) -> None:
        """Starts the router (``prefix``: a command to run it through) and
        waits until it serves: its socket exists (never mistake an old one)
        and it logged router.started (the table restored, the loop running)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        started = len(self.events("router.started")) if (self.workdir / "router.log").exists() \
            else 0
        log = open(self.workdir / "router.log", "ab")  # noqa: SIM115
        self.router = subprocess.Popen([*prefix, sys.executable, "-m", "router", "run", "-c",
                                        str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.router.poll() is not None:
                raise AssertionError(f"router exited: {self.log()}")
            if os.path.exists(self.socket) and len(self.events("router.started")) > started:
                return
            time.sleep(0.05)
        raise AssertionError(f"router did not start: {self.log()}")

    def end_peers(self) -> None:
        """Ends the processes ``spawn`` started (by their own handles)."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        self.procs.clear()

    def stop_router(self) -> int:
        assert self.router is not None
        self.router.send_signal(signal.SIGTERM)
        rc = self.router.wait(timeout=15)
        self.router = None
        return rc

    def log(self) -> str:
        return (self.workdir / "router.log").read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if ev.get("event") == name:
                out.append(ev)
        return out

    def drops(self) -> dict[str, int]:
        return dict(self.ctl_json("stats")["drops"])


@contextlib.contextmanager
def namespaces(*names: str) -> Iterator[tuple[str, ...]]:
    """Fresh network namespaces (loopback up), removed afterwards."""
    for n in names:
        run("ip", "netns", "del", n, check=False)
        run("ip", "netns", "add", n)
        run("ip", "-n", n, "link", "set", "lo", "up")
    try:
        yield names
    finally:
        for n in names:
            run("ip", "netns", "del", n, check=False)


class Echo:
    def __init__(self, netlab: NetLab, port: int, lifetime: float) -> None:
        srv = netlab.spawn(netlab.wan, sys.executable, PEERS, "tcp-echo", SERVER, str(port),
                           str(lifetime))
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        client = ("import socket,sys\n"
                  f"s=socket.create_connection(('{SERVER}',{port}),timeout=10)\n"
                  "for line in sys.stdin:\n"
                  "  s.sendall(line.encode()); print(s.recv(100).decode().strip(),flush=True)\n")
        self.p = netlab.spawn(netlab.lan, sys.executable, "-c", client, stdin=True)

    def check(self, word: str) -> None:
        """Sends a word and expects it back."""
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(word + "\n")
        self.p.stdin.flush()
        assert self.p.stdout.readline().strip() == word

    def close(self) -> None:
        if self.p.stdin is not None:
            self.p.stdin.close()


def make_config(text: str, lan: str, wan: str, sock: str,
                timeouts: dict[str, int] | None = None) -> str:
    text = text.replace('"rtlab-lan"', f'"{lan}"').replace('"rtlab-wan"', f'"{wan}"')
    text = text.replace('"/run/router/router.sock"', f'"{sock}"')
    text = text.replace('listen = "127.0.0.1:9188"', 'listen = "127.0.0.1:0"')
    text = text.replace('"/var/lib/router/state/conntrack.json"',
                        f'"{os.path.dirname(sock)}/state/conntrack.json"')
    text = text.replace('"/var/lib/router/state.key"', f'"{os.path.dirname(sock)}/state.key"')
    text, n = re.subn(r"(?m)^gc_interval = [0-9.]+", "gc_interval = 1.0", text)
    assert n == 1
    for k, v in (timeouts or {}).items():
        text, n = re.subn(rf"(?m)^{k} = \d+", f"{k} = {v}", text)
        assert n == 1, k
    return text


@pytest.fixture
def dataplane() -> dict[str, Any]:
    """[dataplane] settings of the lab's router beyond conf/router.toml:
    none (one queue, one worker thread) unless a module overrides this
    fixture, as test_gateway.py does to run every test in each mode."""
    return {}


@pytest.fixture
def netlab(tmp_path: Path, dataplane: dict[str, Any]) -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, /dev/net/tun)")
    tag = f"rt{os.getpid() % 100000}"
    lan, wan = f"{tag}l", f"{tag}w"
    for ns in (lan, wan):
        run("ip", "netns", "del", ns, check=False)
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
    sock = str(tmp_path / "router.sock")
    cfg = tmp_path / "router.toml"
    text = make_config((ROOT / "conf/router.toml").read_text(), lan, wan, sock, SHORT_TIMEOUTS)
    for k, v in dataplane.items():
        value = str(v).lower() if isinstance(v, bool) else str(v)
        text = text.replace("[dataplane]\n", f"[dataplane]\n{k} = {value}\n", 1)
    cfg.write_text(text)
    lab = NetLab(lan=lan, wan=wan, workdir=tmp_path, config=cfg, socket=sock)
    try:
        lab.start_router()
        yield lab
    finally:
        lab.end_peers()
        if lab.router is not None:
            lab.stop_router()
        for ns in (lan, wan):
            run("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def server_behind_wan(netlab: NetLab, suffix: str, wan_addr: str, srv_addr: str,
                      gateway: str) -> Iterator[str]:
    """A server namespace behind the WAN host, for checking checksums on the
    receiving side.  Inside namespaces a receiving kernel trusts a packet
    marked CHECKSUM_PARTIAL; here the WAN host forwards to the server over a
    veth whose sending side has checksum offload off (its kernel completes
    every partial checksum the router passed on, in software) and whose
    receiving side has receive offload off (the server's kernel verifies
    every checksum).  Addresses are IPv4 or IPv6 with their prefix length."""
    six = ":" in srv_addr
    srv = f"{netlab.lan[:-1]}{suffix}"
    wan_if, srv_if = f"vw{suffix}", f"vs{suffix}"
    nodad = ["nodad"] if six else []
    run("ip", "netns", "del", srv, check=False)
    run("ip", "netns", "add", srv)
    try:
        run("ip", "-n", srv, "link", "set", "lo", "up")
        run("ip", "link", "add", wan_if, "netns", netlab.wan, "type", "veth", "peer", srv_if,
            "netns", srv)
        netlab.ns(netlab.wan, "ip", "addr", "add", wan_addr, "dev", wan_if, *nodad)
        netlab.ns(netlab.wan, "ip", "link", "set", wan_if, "up")
        netlab.ns(srv, "ip", "addr", "add", srv_addr, "dev", srv_if, *nodad)
        netlab.ns(srv, "ip", "link", "set", srv_if, "up")
        netlab.ns(srv, "ip", "-6" if six else "-4", "route", "add", "default", "via", gateway)
        netlab.ns(netlab.wan, "sysctl", "-qw",
                  "net.ipv6.conf.all.forwarding=1" if six else "net.ipv4.ip_forward=1")
        netlab.ns(netlab.wan, "ethtool", "-K", wan_if, "tx", "off")
        netlab.ns(srv, "ethtool", "-K", srv_if, "rx", "off")
        yield srv
    finally:
        run("ip", "netns", "del", srv, check=False)


def csum_errors(netlab: NetLab, ns: str) -> dict[str, int]:
    """The checksum error counters of namespace ``ns``'s kernel."""
    out = netlab.ns(ns, "nstat", "-az", "TcpInCsumErrors", "UdpInCsumErrors",
                    "IpInHdrErrors").stdout
    vals = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            vals[parts[0]] = int(parts[1])
    return vals


def udp_gso_arrives(netlab: NetLab, srv: str, addr: str, port: str) -> dict[str, int]:
    """One UDP_SEGMENT send of 8 datagrams of 1000 bytes from the LAN host
    to ``addr``:``port`` in namespace ``srv`` arrives as 8 datagrams with
    correct checksums.  The router's counters from before, for the caller."""
    before: dict[str, int] = netlab.ctl_json("stats")["counters"]
    cnt = netlab.spawn(srv, sys.executable, PEERS, "udp-count", addr, port, "5")
    assert cnt.stdout is not None and cnt.stdout.readline().strip() == "ready"
    netlab.ns(netlab.lan, sys.executable, PEERS, "udp-gso", addr, port, "8", "1000")
    assert cnt.stdout.readline().split() == ["8", "8000"]
    assert csum_errors(netlab, srv).get("UdpInCsumErrors", 0) == 0
    return before


def path_mtu_transfer(netlab: NetLab, ip: tuple[str, ...], wan_net: str, advmss: str,
                      server: str, port: str, seen_as: str, mtu: int) -> None:
    """A 2 MiB TCP transfer from the LAN host to ``server`` across a WAN
    link of ``mtu``, the server advertising a full-size MSS (``advmss`` on
    its route to ``wan_net``) although its link is smaller, as a server
    behind a smaller hop would: only path MTU discovery can help.  The first
    full-size segments are refused with an ICMP error, the transfer
    completes (seen from ``seen_as``), and the LAN host learned the MTU.
    ``ip`` is the family option of ip(8): () or ("-6",)."""
    netlab.ns(netlab.wan, "ip", *ip, "route", "change", wan_net, "dev", "wan0", "advmss", advmss)
    sink = netlab.spawn(netlab.wan, sys.executable, PEERS, "tcp-sink", server, port, "30")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    netlab.ns(netlab.lan, sys.executable, PEERS, "tcp-send", server, port, str(2 << 20))
    assert sink.stdout.readline().split() == [seen_as, str(2 << 20)]
    assert netlab.drops()["too_big"] >= 1
    assert netlab.ctl_json("stats")["counters"]["icmp_sent"] >= 1
    r = netlab.ns(netlab.lan, "ip", *ip, "route", "get", server)
    assert f"mtu {mtu}" in r.stdout, r.stdout


# The service user the privilege tests run the router as.
USER = "rtr-test"


@pytest.fixture(scope="session")
def service_user() -> Iterator[pwd.struct_passwd]:
    """The system account ``USER``: made for the tests if it does not exist,
    and then removed again when they end (an account that was there before
    is left alone)."""
    made = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER)
        made = True
    try:
        yield pwd.getpwnam(USER)
    finally:
        if made:
            run("userdel", USER)  # fails loudly if the account cannot go
