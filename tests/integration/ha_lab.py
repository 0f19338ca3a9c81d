"""Two routers in front of one LAN, as a home with a spare would run them:
keepalived (VRRPv3) in each router's namespace moves the LAN's gateway
address 192.168.1.1 and the shared WAN address 198.51.100.10, and the
routers keep their connection tables in sync over a link of their own.

    c1 (192.168.1.10) --- switch (lan) --- ra eth1 .2 / rb eth1 .3
    isp (198.51.100.1) -- switch (isp) --- ra eth0 .2 / rb eth0 .3
    ra sync 10.99.0.1 ---------------------- rb sync 10.99.0.2

Each router runs as root in its namespace with interfaces attached
(``[[interface]] attach``), source NAT to the shared WAN address, a port
forward of it to c1, and ``[ha]`` watching the gateway address.  A crash is
modelled as the issue asks: the node unplugged (its switch ports and sync
link down), then its router and keepalived killed with SIGKILL; its return,
as a restart with clean interfaces.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.conftest import run

ROOT = Path(__file__).resolve().parents[2]
STREAMS = str(Path(__file__).with_name("streams.py"))
GATEWAY, SHARED, ISP, CLIENT = "192.168.1.1", "198.51.100.10", "198.51.100.1", "192.168.1.10"
SYNC = {"a": "10.99.0.1", "b": "10.99.0.2"}
OWN = {"a": 2, "b": 3}

ROUTER_CONF = """\
[control]
socket = "{work}/router.sock"

[metrics]
listen = ""

[conntrack]
state_file = ""
gc_interval = 1.0
{conntrack}

[[interface]]
name = "lan0"
attach = "eth1"
address = "192.168.1.{own}/24"
zone = "lan"
kernel_multicast = true                 # keepalived's VRRP

[[interface]]
name = "wan0"
attach = "eth0"
address = "198.51.100.{own}/24"
zone = "wan"

[[route]]
destination = "0.0.0.0/0"
interface = "wan0"
gateway = "198.51.100.1"

[[nat.snat]]
interface = "wan0"
to = "198.51.100.10"

[[nat.forward]]
interface = "wan0"
address = "198.51.100.10"
protocol = "tcp"
port = 8080
to = "192.168.1.10"

[firewall]
forward = "drop"
{firewall}
{extra}

[[firewall.policy]]
from = "lan"
to = "wan"
action = "accept"

[ha]
mode = "{mode}"
local = "{local}"
peer = "{peer}"
interface = "sync"
track_file = "{work}/ready"
watch = ["192.168.1.1"]
"""

KEEPALIVED_CONF = """\
global_defs {{
    router_id {name}
    vrrp_version 3
    script_user root
    enable_script_security
}}

track_file ready {{
    file "{work}/ready"
    weight 0
}}

vrrp_instance home {{
    state BACKUP
    nopreempt
    interface eth1
    virtual_router_id 51
    priority 100
    advert_int {advert}
    virtual_ipaddress {{
        192.168.1.1/24 dev eth1
        198.51.100.10/24 dev eth0
    }}
    track_file {{
        ready
    }}
    notify_master "{notify} master"
    notify_backup "{notify} backup"
    notify_fault "{notify} fault"
}}
"""

# keepalived's notify for a kernel gateway with conntrackd, as conntrack-tools'
# primary-backup.sh (and VyOS) do it: commit the external cache, flush it,
# resync the internal one from the kernel, send it all to the peer; or, on
# standing by, shorten the kernel's timers and ask the peer for its table.
KERNEL_NOTIFY = """\
#!/bin/sh
C="conntrackd -C {work}/conntrackd.conf"
case "$1" in
master) $C -c; $C -f; $C -R; $C -B ;;
backup|fault) $C -t; $C -n ;;
esac
"""


CONNTRACKD_CONF = """\
Sync {{
    Mode {mode} {{
    }}
    UDP {{
        IPv4_address {local}
        IPv4_Destination_Address {peer}
        Port 3780
        Interface sync
        Checksum on
    }}
}}
General {{
    Systemd off
    HashSize 8192
    HashLimit 65535
    LogFile {work}/conntrackd.log
    Syslog off
    LockFile {work}/conntrackd.lock
    UNIX {{
        Path {work}/conntrackd.ctl
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Protocol Accept {{
            TCP
            UDP
            ICMP
        }}
        Address Ignore {{
            IPv4_address 127.0.0.1
            IPv4_address {local}
            IPv4_address 192.168.1.{own}
            IPv4_address 198.51.100.{own}
        }}
    }}
}}
"""

# The kernel's own NAT gateway: what keepalived + conntrackd pairs run.
KERNEL_NAT = """\
table ip hanat {
    chain pre {
        type nat hook prerouting priority dstnat;
        iifname "eth0" ip daddr 198.51.100.10 tcp dport 8080 dnat to 192.168.1.10
    }
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "eth0" ip saddr 192.168.1.0/24 snat to 198.51.100.10
    }
}
"""


@dataclass
class Node:
    name: str
    ns: str
    work: Path
    router: subprocess.Popen[bytes] | None = None
    keepalived: subprocess.Popen[bytes] | None = None
    conntrackd: bool = False  # a kernel gateway's conntrackd runs (its lock file says)

    @property
    def socket(self) -> str:
        return str(self.work / "router.sock")

    def log(self) -> str:
        p = self.work / "router.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                ev = json.loads(line)
                if ev.get("event") == name:
                    out.append(ev)
        return out


@dataclass
class Pair:
    prefix: str
    work: Path
    mode: str = "ftfw"
    advert: str = "0.2"
    firewall: str = ""  # more [firewall] keys
    conntrack: str = ""  # more [conntrack] keys
    extra: str = ""      # more sections
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, part: str) -> str:
        return f"{self.prefix}-{part}"

    def sh(self, part: str, *cmd: str, check: bool = True, timeout: float = 30
           ) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns(part), *cmd, check=check, timeout=timeout)

    # -- the topology ------------------------------------------------------

    def build(self) -> None:
        for part in ("sw", "ra", "rb", "c1", "isp"):
            run("ip", "netns", "add", self.ns(part))
            run("ip", "-n", self.ns(part), "link", "set", "lo", "up")
        sw = self.ns("sw")
        for br in ("lan", "isp"):
            run("ip", "-n", sw, "link", "add", br, "type", "bridge", "mcast_snooping", "0")
            run("ip", "-n", sw, "link", "set", br, "up")
        self._plug("ra", "eth1", "lan", "a-lan")
        self._plug("rb", "eth1", "lan", "b-lan")
        self._plug("ra", "eth0", "isp", "a-isp")
        self._plug("rb", "eth0", "isp", "b-isp")
        self._plug("c1", "eth0", "lan", "c1-lan")
        self._plug("isp", "eth0", "isp", "isp-isp")
        run("ip", "link", "add", f"{self.prefix}s", "netns", self.ns("ra"), "type", "veth",
            "peer", "name", "sync", "netns", self.ns("rb"))
        run("ip", "-n", self.ns("ra"), "link", "set", f"{self.prefix}s", "name", "sync")
        for part, n in (("ra", "a"), ("rb", "b")):
            run("ip", "-n", self.ns(part), "addr", "add", f"{SYNC[n]}/30", "dev", "sync")
            run("ip", "-n", self.ns(part), "link", "set", "sync", "up")
        run("ip", "-n", self.ns("c1"), "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        run("ip", "-n", self.ns("c1"), "route", "add", "default", "via", GATEWAY)
        run("ip", "-n", self.ns("isp"), "addr", "add", f"{ISP}/24", "dev", "eth0")
        for n in ("a", "b"):
            work = self.work / n
            work.mkdir(parents=True, exist_ok=True)
            self.nodes[n] = Node(n, self.ns(f"r{n}"), work)

    def _plug(self, part: str, dev: str, bridge: str, port: str) -> None:
        run("ip", "link", "add", f"{self.prefix}{port}", "netns", self.ns(part), "type", "veth",
            "peer", "name", port, "netns", self.ns("sw"))
        run("ip", "-n", self.ns(part), "link", "set", f"{self.prefix}{port}", "name", dev)
        run("ip", "-n", self.ns("sw"), "link", "set", port, "master", bridge, "up")
        run("ip", "-n", self.ns(part), "link", "set", dev, "up")

    # -- the routers and keepalived ----------------------------------------

    def ctl_cmd(self, n: str) -> str:
        return f"{sys.executable} -m router.ctl -S {self.nodes[n].socket}"

    def start(self, n: str, keepalived: bool = True) -> None:
        node = self.nodes[n]
        other = "b" if n == "a" else "a"
        conf = node.work / "router.toml"
        conf.write_text(ROUTER_CONF.format(work=node.work, own=OWN[n], mode=self.mode,
                                           local=SYNC[n], peer=SYNC[other],
                                           firewall=self.firewall, conntrack=self.conntrack,
                                           extra=self.extra))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node.socket)
        started = len(node.events("router.started"))
        log = open(node.work / "router.log", "ab")  # noqa: SIM115
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        node.router = subprocess.Popen(["ip", "netns", "exec", node.ns, sys.executable, "-m",
                                        "router", "run", "-c", str(conf)], stdout=log,
                                       stderr=log, env=env, cwd=ROOT)
        until(lambda: len(node.events("router.started")) > started, 20,
              f"router {n} did not start: {node.log()[-3000:]}")
        if keepalived:
            self.start_keepalived(n)

    def start_kernel(self, n: str, vips: bool = True, keepalived: bool = False) -> None:
        """Node ``n`` as the kernel's own NAT gateway with conntrackd, its
        sync peer the other node; with ``vips``, holding the addresses;
        with ``keepalived``, keepalived moving them instead."""
        node = self.nodes[n]
        other = "b" if n == "a" else "a"
        part = f"r{n}"
        self.sh(part, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for dev, addr in (("eth1", f"192.168.1.{OWN[n]}/24"), ("eth0", f"198.51.100.{OWN[n]}/24")):
            self.sh(part, "ip", "addr", "add", addr, "dev", dev)
        self.sh(part, "ip", "route", "add", "default", "via", ISP)
        subprocess.run(["ip", "netns", "exec", self.ns(part), "nft", "-f", "-"], input=KERNEL_NAT,
                       text=True, check=True)
        if vips and not keepalived:
            self.sh(part, "ip", "addr", "add", f"{GATEWAY}/24", "dev", "eth1")
            self.sh(part, "ip", "addr", "add", f"{SHARED}/24", "dev", "eth0")
        conf = node.work / "conntrackd.conf"
        conf.write_text(CONNTRACKD_CONF.format(mode="FTFW" if self.mode == "ftfw" else "NOTRACK",
                                               local=SYNC[n], peer=SYNC[other], work=node.work,
                                               own=OWN[n]))
        self.sh(part, "conntrackd", "-C", str(conf), "-d")
        node.conntrackd = True
        until(lambda: (node.work / "conntrackd.ctl").exists(), 10, "conntrackd did not start")
        if keepalived:
            self.start_keepalived(n, kernel=True)

    def conntrackd(self, n: str, *args: str) -> str:
        node = self.nodes[n]
        return self.sh(f"r{n}", "conntrackd", "-C", str(node.work / "conntrackd.conf"),
                       *args).stdout

    def start_keepalived(self, n: str, kernel: bool = False) -> None:
        """keepalived on node ``n``, its notify the router's routerctl, or
        (``kernel``) conntrackd's commands."""
        node = self.nodes[n]
        conf = node.work / "keepalived.conf"
        if kernel:
            script = node.work / "notify.sh"
            script.write_text(KERNEL_NOTIFY.format(work=node.work))
            script.chmod(0o700)
            (node.work / "ready").write_text("0\n")  # conntrackd tells keepalived nothing
            notify = str(script)
        else:
            notify = f"{self.ctl_cmd(n)} ha"
        conf.write_text(KEEPALIVED_CONF.format(name=f"r{n}", work=node.work, advert=self.advert,
                                               notify=notify))
        log = open(node.work / "keepalived.log", "ab")  # noqa: SIM115
        node.keepalived = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, "keepalived", "-n", "-l", "-D", "--vrrp",
             "-f", str(conf), "-p", str(node.work / "keepalived.pid"),
             "-r", str(node.work / "vrrp.pid"), "-i", f"r{n}"],
            stdout=log, stderr=log, cwd=node.work)

    def ctl(self, n: str, *args: str) -> Any:
        r = run(sys.executable, "-m", "router.ctl", "-S", self.nodes[n].socket, "--json", *args)
        return json.loads(r.stdout)

    def holder(self) -> str | None:
        """The node holding the gateway address (keepalived's MASTER)."""
        return next((n for n in self.nodes if self.holds_gateway(n)), None)

    def active(self) -> str | None:
        for n, node in self.nodes.items():
            if node.router is not None and node.router.poll() is None:
                with contextlib.suppress(Exception):
                    if self.ctl(n, "ha", "status")["role"] == "active":
                        return n
        return None

    def holds_gateway(self, n: str) -> bool:
        out = self.sh(f"r{n}", "ip", "-4", "-o", "addr", "show", "dev", "eth1").stdout
        return f" {GATEWAY}/" in out

    # -- failures ----------------------------------------------------------

    def crash(self, n: str) -> None:
        """Unplugged, then killed: nothing of it reaches the others after."""
        node = self.nodes[n]
        for port in (f"{n}-lan", f"{n}-isp"):
            run("ip", "-n", self.ns("sw"), "link", "set", port, "down")
        run("ip", "-n", node.ns, "link", "set", "sync", "down")
        for p in (node.router, node.keepalived):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
        vrrp = node.work / "vrrp.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(vrrp.read_text()), signal.SIGKILL)
        node.router = node.keepalived = None

    def revive(self, n: str) -> None:
        """The crashed machine boots again: its interfaces clean (the
        addresses keepalived left are gone), plugged back in."""
        node = self.nodes[n]
        for dev, vip in (("eth1", f"{GATEWAY}/24"), ("eth0", f"{SHARED}/24")):
            self.sh(f"r{n}", "ip", "addr", "del", vip, "dev", dev, check=False)
        for port in (f"{n}-lan", f"{n}-isp"):
            run("ip", "-n", self.ns("sw"), "link", "set", port, "up")
        run("ip", "-n", node.ns, "link", "set", "sync", "up")
        (node.work / "ready").unlink(missing_ok=True)
        self.start(n)

    # -- traffic -------------------------------------------------------------

    def spawn(self, part: str, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(part), sys.executable, STREAMS,
                              *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        self.procs.append(p)
        return p

    def serve(self, part: str, *args: str) -> subprocess.Popen[str]:
        p = self.spawn(part, *args)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "ready", line
        return p

    def three_flows(self, lifetime: str, secs: str
                    ) -> tuple[dict[str, subprocess.Popen[str]], list[subprocess.Popen[str]]]:
        """The flows a failover must keep: a TCP stream and a UDP flow from
        c1 to the ISP, and a TCP stream from the ISP to c1 through the port
        forward, each measuring itself for ``secs`` seconds.  Returns the
        watchers by name and the two TCP servers (tcp, forward)."""
        servers = [self.serve("isp", "tcp-serve", ISP, "9000", lifetime)]
        self.serve("isp", "udp-serve", ISP, "9001", lifetime)
        servers.append(self.serve("c1", "tcp-serve", CLIENT, "8080", lifetime))
        watchers = {"tcp": self.spawn("c1", "tcp-watch", ISP, "9000", secs),
                    "udp": self.spawn("c1", "udp-watch", ISP, "9001", secs),
                    "forward": self.spawn("isp", "tcp-watch", SHARED, "8080", secs)}
        return watchers, servers

    # -- the end -------------------------------------------------------------

    def teardown(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
        for node in self.nodes.values():
            for proc in (node.keepalived, node.router):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
            vrrp = node.work / "vrrp.pid"
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(vrrp.read_text()), signal.SIGKILL)
            if node.conntrackd:  # its own way out: "conntrackd -k"
                self.sh(f"r{node.name}", "conntrackd", "-C", str(node.work / "conntrackd.conf"),
                        "-k", check=False)
        for part in ("sw", "ra", "rb", "c1", "isp"):
            run("ip", "netns", "del", self.ns(part), check=False)


def until(what: Callable[[], object], timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.05)
    raise AssertionError(why)


_pairs = itertools.count()


@contextlib.contextmanager
def pair(tmp: Path, mode: str = "ftfw", advert: str = "0.2") -> Iterator[Pair]:
    # Namespaces and devices named after the process and a count, short
    # enough for device names ("h" + 4 + 2 digits + "isp-isp": 14 < 16),
    # so that two pairs of one process never meet.
    p = Pair(f"h{os.getpid() % 10000}{next(_pairs) % 100}", tmp, mode, advert)
    try:
        p.build()
        yield p
    finally:
        p.teardown()
