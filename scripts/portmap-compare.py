#!/usr/bin/env python3
"""The same port mapping client operations against the router and against
Debian's miniupnpd-nftables on the kernel's own NAT, on one small topology
built here; prints which pass on each (a Markdown table, for
docs/portmap.md).  Run as root: scripts/portmap-compare.py

Topology, namespaces cmp-*: a switch (cmp-sw: bridges lan, wan), the
gateway (cmp-gw: eth0 on wan, 11.0.0.2 and 2001:db8:100::2; eth1 on lan,
192.168.1.1 and 2001:db8:1::1), an ISP (cmp-isp: 11.0.0.1 and 11.0.0.80,
2001:db8:100::1 and ::80) and two LAN machines (cmp-c1 .10, cmp-c2 .11, and
::10, ::11).  The WAN is 11.0.0.0/24, not a documentation range: miniupnpd
refuses to map anything on an external address it takes for reserved, and
the namespaces reach nothing outside.  Everything is removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
PEERS = str(ROOT / "tests" / "integration" / "peers.py")
PCPC = str(ROOT / "tests" / "integration" / "pcpc.py")
GW, GW6, WAN, ISP, OTHER = "192.168.1.1", "2001:db8:1::1", "11.0.0.2", "11.0.0.1", "11.0.0.80"
C1, C2, C16, C26 = "192.168.1.10", "192.168.1.11", "2001:db8:1::10", "2001:db8:1::11"
ISP6, OTHER6 = "2001:db8:100::1", "2001:db8:100::80"
NS = ("cmp-sw", "cmp-gw", "cmp-isp", "cmp-c1", "cmp-c2")

ROUTER_TOML = f"""
[control]
socket = "{{work}}/router.sock"

[metrics]
listen = ""

[conntrack]
state_file = "{{work}}/state/conntrack.json"
state_key = "{{work}}/state.key"

[lan]
dns = false
lease_file = "{{work}}/dhcp.leases"

[[interface]]
name = "lan0"
attach = "eth1"
address = "{GW}/24"
address6 = "{GW6}/64"
zone = "lan"

[interface.lan]
ra = false

[[interface]]
name = "wan0"
attach = "eth0"
address = "{WAN}/24"
address6 = "2001:db8:100::2/64"
zone = "wan"

[[route]]
destination = "0.0.0.0/0"
interface = "wan0"
gateway = "{ISP}"

[[route]]
destination = "::/0"
interface = "wan0"
gateway = "{ISP6}"

[[nat.masquerade]]
interface = "wan0"

[portmap]
pcp = true
natpmp = true
upnp = true
interface = "wan0"
min_lifetime = 2

[firewall]
forward = "drop"
input = "drop"

[[firewall.policy]]
from = "lan"
to = "wan"
action = "accept"

[[firewall.rule]]
chain = "input"
from = "lan"
protocol = "udp"
port = 5351
action = "accept"

[[firewall.rule]]
chain = "input"
from = "lan"
protocol = "tcp"
port = 5000
action = "accept"

[[firewall.rule]]
chain = "input"
from = "lan"
protocol = 58
action = "accept"
"""

MINIUPNPD_CONF = f"""ext_ifname=eth0
ext_ifname6=eth0
listening_ip=eth1
http_port=5000
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
min_lifetime=2
max_lifetime=86400
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
allow 1024-65535 192.168.1.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""

NFT = """table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "eth1" oifname "eth0" accept
        jump miniupnpd
    }
    chain miniupnpd { }
    chain prerouting {
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname "eth0" ip saddr 192.168.1.0/24 masquerade
    }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
}
"""


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout + r.stderr


def ns(name: str, *cmd: str, timeout: float = 30) -> str:
    return sh("ip", "netns", "exec", name, *cmd, check=False, timeout=timeout)


def build() -> None:
    for n in NS:
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    sh("ip", "netns", "exec", "cmp-sw", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
       "net.ipv6.conf.default.disable_ipv6=1")
    for br in ("lan", "wan"):
        sh("ip", "-n", "cmp-sw", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", "cmp-sw", "link", "set", br, "up")

    def plug(n: str, dev: str, br: str, port: str) -> None:
        sh("ip", "link", "add", dev, "netns", n, "type", "veth", "peer", "name", port,
           "netns", "cmp-sw")
        sh("ip", "-n", "cmp-sw", "link", "set", port, "master", br, "up")
        sh("ip", "-n", n, "link", "set", dev, "up")

    plug("cmp-gw", "eth0", "wan", "gw-wan")
    plug("cmp-gw", "eth1", "lan", "gw-lan")
    plug("cmp-isp", "isp0", "wan", "isp")
    for a in (f"{ISP}/24", f"{OTHER}/24"):
        sh("ip", "-n", "cmp-isp", "addr", "add", a, "dev", "isp0")
    for a in (f"{ISP6}/64", f"{OTHER6}/64"):
        sh("ip", "-n", "cmp-isp", "addr", "add", a, "dev", "isp0", "nodad")
    sh("ip", "-n", "cmp-isp", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:100::2")
    for n, a, a6 in (("cmp-c1", C1, C16), ("cmp-c2", C2, C26)):
        plug(n, "eth0", "lan", n[-2:])
        sh("ip", "-n", n, "addr", "add", f"{a}/24", "dev", "eth0")
        sh("ip", "-n", n, "addr", "add", f"{a6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", n, "route", "add", "default", "via", GW)
        sh("ip", "-n", n, "-6", "route", "add", "default", "via", GW6)
    time.sleep(2)  # link-local addresses settle


def down() -> None:
    for n in NS:
        sh("ip", "netns", "del", n, check=False)


@contextlib.contextmanager
def router(work: Path) -> Iterator[None]:
    (work / "router.toml").write_text(ROUTER_TOML.format(work=work))
    log = open(work / "router.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(["ip", "netns", "exec", "cmp-gw", PY, "-m", "router", "run", "-c",
                          str(work / "router.toml")], stdout=log, stderr=log, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while b"portmap.upnp_serving" not in (work / "router.log").read_bytes():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "router.log").read_text()[-2000:])
            time.sleep(0.1)
        yield
    finally:
        p.terminate()
        p.wait(timeout=20)
        log.close()


@contextlib.contextmanager
def miniupnpd(work: Path) -> Iterator[None]:
    gw = "cmp-gw"
    for a, dev in ((f"{WAN}/24", "eth0"), (f"{GW}/24", "eth1")):
        sh("ip", "-n", gw, "addr", "add", a, "dev", dev)
    for a, dev in (("2001:db8:100::2/64", "eth0"), (f"{GW6}/64", "eth1")):
        sh("ip", "-n", gw, "addr", "add", a, "dev", dev, "nodad")
    sh("ip", "-n", gw, "route", "add", "default", "via", ISP)
    sh("ip", "-n", gw, "-6", "route", "add", "default", "via", ISP6)
    sh("ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.ip_forward=1",
       "net.ipv6.conf.all.forwarding=1")
    (work / "nft.conf").write_text(NFT)
    sh("ip", "netns", "exec", gw, "nft", "-f", str(work / "nft.conf"))
    (work / "miniupnpd.conf").write_text(MINIUPNPD_CONF)
    log = open(work / "miniupnpd.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(["ip", "netns", "exec", gw, "miniupnpd", "-f",
                          str(work / "miniupnpd.conf"), "-d"], stdout=log, stderr=log)
    try:
        time.sleep(2)
        if p.poll() is not None:
            raise RuntimeError((work / "miniupnpd.log").read_text()[-2000:])
        yield
    finally:
        p.terminate()
        p.wait(timeout=20)
        log.close()


# ---- the operations ----------------------------------------------------------


SERVERS: list[subprocess.Popen[str]] = []  # what server() started, ended by run()


def server(n: str, mode: str, addr: str, port: int) -> subprocess.Popen[str]:
    p = subprocess.Popen(["ip", "netns", "exec", n, PY, PEERS, mode, addr, str(port), "60"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    SERVERS.append(p)
    assert p.stdout is not None
    p.stdout.readline()
    return p


def udp_from(src: str, dst: str, port: int) -> bool:
    code = ("import socket\n"
            f"s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(({src!r},0))\n"
            f"s.settimeout(1.5); s.sendto(b'hi',({dst!r},{port}))\n"
            "try: s.recv(99); print('yes')\nexcept TimeoutError: print('no')\n")
    return ns("cmp-isp", PY, "-c", code).strip() == "yes"


def tcp_from(src: str, dst: str, port: int) -> bool:
    host = f"[{dst}]" if ":" in dst else dst
    out = ns("cmp-isp", "curl", "-sS", "-m", "2", "--interface", src, f"http://{host}:{port}/")
    return out.startswith("you are")


def natpmpc(n: str, *args: str) -> str:
    return ns(n, "natpmpc", "-g", GW, *args)


def upnpc(n: str, *args: str) -> str:
    return ns(n, "timeout", "30", "upnpc", "-i", "-u", f"http://{GW}:5000/rootDesc.xml", *args)


def pcp(n: str, *args: str, server_addr: str = GW) -> dict[str, object]:
    out = ns(n, PY, PCPC, "map", server_addr, *args).strip().splitlines()
    return json.loads(out[-1]) if out and out[-1].startswith("{") else {"result": "none"}


def ops() -> list[tuple[str, Callable[[], bool]]]:
    """The client operations: each returns whether it did what the RFC or
    the IGD specification says."""
    def natpmp_map() -> bool:
        server("cmp-c1", "udp-echo", "0.0.0.0", 6000)
        return "Mapped public port 7000" in natpmpc("cmp-c1", "-a", "7000", "6000", "udp",
                                                    "60") and udp_from(ISP, WAN, 7000)

    def natpmp_delete() -> bool:
        natpmpc("cmp-c1", "-a", "7000", "6000", "udp", "0")
        return not udp_from(OTHER, WAN, 7000)

    def natpmp_expire() -> bool:
        natpmpc("cmp-c1", "-a", "7001", "6000", "udp", "2")
        time.sleep(3.5)
        return not udp_from(OTHER, WAN, 7001)

    def upnp_add() -> bool:
        server("cmp-c1", "http", "0.0.0.0", 6300)
        out = upnpc("cmp-c1", "-e", "game", "-a", C1, "6300", "7300", "TCP", "3600")
        return "is redirected" in out and tcp_from(ISP, WAN, 7300)

    def upnp_list() -> bool:
        return bool(re.search(rf"TCP\s+7300->{re.escape(C1)}:6300", upnpc("cmp-c1", "-l")))

    def upnp_other_host() -> bool:
        return "is redirected" not in upnpc("cmp-c1", "-a", C2, "6301", "7301", "TCP", "3600")

    def upnp_delete() -> bool:
        upnpc("cmp-c1", "-d", "7300", "TCP")
        return not tcp_from(OTHER, WAN, 7300)

    def upnp_expire() -> bool:
        upnpc("cmp-c1", "-a", C1, "6300", "7302", "TCP", "2")
        time.sleep(3.5)
        return not tcp_from(ISP, WAN, 7302)

    def upnp_pinhole() -> bool:
        server("cmp-c1", "http", "::", 8080)
        server("cmp-c1", "http", "::", 8081)
        ns("cmp-c1", "ping", "-6", "-c", "1", "-W", "2", GW6)
        out = upnpc("cmp-c1", "-A", ISP6, "0", C16, "8080", "TCP", "60")
        return ("Pinhole ID" in out and tcp_from(ISP6, C16, 8080) and
                not tcp_from(ISP6, C16, 8081) and not tcp_from(OTHER6, C16, 8080))

    def upnp_pinhole_delete() -> bool:
        m = re.search(r"Pinhole ID = (\d+)", upnpc("cmp-c1", "-A", ISP6, "0", C16, "8080",
                                                  "TCP", "60"))
        if not m:
            return False
        upnpc("cmp-c1", "-D", m.group(1))
        return not tcp_from(ISP6, C16, 8080)

    def pcp_map() -> bool:
        server("cmp-c1", "udp-echo", "0.0.0.0", 6100)
        r = pcp("cmp-c1", "17", "6100", "7100", "60")
        return r.get("result") == 0 and udp_from(ISP, WAN, int(r.get("external_port", 0)))

    def pcp_filter() -> bool:
        server("cmp-c1", "udp-echo", "0.0.0.0", 6103)
        r = pcp("cmp-c1", "17", "6103", "7103", "60", "--filter", f"{ISP}/32:0")
        port = int(r.get("external_port", 0))
        return r.get("result") == 0 and udp_from(ISP, WAN, port) and \
            not udp_from(OTHER, WAN, port)

    def pcp_third_party() -> bool:
        return pcp("cmp-c1", "17", "6101", "7101", "60", "--third-party", C2).get("result") == 2

    def pcp_delete() -> bool:
        r = pcp("cmp-c1", "17", "6102", "7102", "60")
        d = pcp("cmp-c1", "17", "6102", "0", "0", "--nonce", str(r.get("nonce", "")))
        return d.get("result") == 0 and d.get("lifetime") == 0 and not udp_from(ISP, WAN, 7102)

    def pcp_pinhole() -> bool:
        r = pcp("cmp-c2", "6", "8080", "0", "60", server_addr=GW6)
        return r.get("result") == 0 and r.get("external") == C26

    def wan_closed() -> bool:
        return not tcp_from(ISP, WAN, 5000) and not udp_from(ISP, WAN, 5351)

    return [("NAT-PMP: map UDP, a WAN host gets in", natpmp_map),
            ("NAT-PMP: delete", natpmp_delete),
            ("NAT-PMP: a mapping expires", natpmp_expire),
            ("UPnP: AddPortMapping TCP, a WAN host gets in", upnp_add),
            ("UPnP: GetGenericPortMappingEntry lists it", upnp_list),
            ("UPnP: another machine's address is refused", upnp_other_host),
            ("UPnP: DeletePortMapping", upnp_delete),
            ("UPnP: a lease expires", upnp_expire),
            ("UPnP: AddPinhole over IPv4, one host to one port", upnp_pinhole),
            ("UPnP: DeletePinhole", upnp_pinhole_delete),
            ("PCP: MAP, a WAN host gets in", pcp_map),
            ("PCP: FILTER lets only the named peer in", pcp_filter),
            ("PCP: THIRD_PARTY refused (NOT_AUTHORIZED)", pcp_third_party),
            ("PCP: delete (lifetime 0)", pcp_delete),
            ("PCP: MAP of an IPv6 address (pinhole)", pcp_pinhole),
            ("the WAN reaches neither 5351 nor the IGD's HTTP port", wan_closed)]


def run(gateway: str) -> dict[str, bool]:
    work = Path(tempfile.mkdtemp(prefix=f"cmp-{gateway}-", dir="/run"))
    work.chmod(0o755)
    build()
    try:
        with (router(work) if gateway == "router" else miniupnpd(work)):
            out = {}
            for name, op in ops():
                try:
                    out[name] = bool(op())
                except Exception as e:  # one operation's failure is a result
                    print(f"{gateway}: {name}: {e!r}", file=sys.stderr)
                    out[name] = False
            return out
    finally:
        for p in SERVERS:
            p.kill()
            p.wait()
        SERVERS.clear()
        down()
        print(f"{gateway}: logs in {work}", file=sys.stderr)


def main() -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    down()
    a, b = run("router"), run("miniupnpd")
    print("| operation | this router | miniupnpd-nftables 2.3.1 |")
    print("|---|---|---|")
    for name in a:
        print(f"| {name} | {'pass' if a[name] else 'FAIL'} | {'pass' if b[name] else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
