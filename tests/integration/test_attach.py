"""Kernel interfaces attached to the router (``[[interface]] attach``).

The router runs in a namespace of its own that holds two veth interfaces, a
LAN's and a WAN's, as a gateway's NICs would be; a LAN host and a WAN server
sit at their other ends.  The kernel of the router's namespace keeps layer 2
(ARP, neighbour discovery); every IP packet passes through the router.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LAN_OUT
from tests.integration.conftest import PEERS, NetLab, namespaces, run

pytestmark = pytest.mark.netns

LAN_HOST, ROUTER_LAN, ROUTER_WAN, GATEWAY = "192.168.88.2", "192.168.88.1", "198.51.100.2", \
    "198.51.100.1"
SERVER = "203.0.113.80"  # behind the WAN's gateway
LAN_HOST6, ROUTER_LAN6, ROUTER_WAN6, SERVER6 = "2001:db8:88::2", "2001:db8:88::1", \
    "2001:db8:51::2", "2001:db8:51::1"
FAR6 = "2001:db8:99::80"  # behind the WAN's IPv6 gateway (SERVER6)

# The LAN side, the NAT and policy, and the router's own paths: the parts
# both configs below share.
LAN_SIDE = """
[[interface]]
name = "lan0"
attach = "r-lan"
address = "192.168.88.1/24"
address6 = "2001:db8:88::1/64"
zone = "lan"
"""
REST = LAN_OUT + """
[control]
socket = "{work}/router.sock"

[metrics]
listen = ""

[conntrack]
state_file = ""
state_key = "{work}/state.key"
"""
CONFIG = LAN_SIDE + """
[[interface]]
name = "wan0"
attach = "r-wan"
address = "198.51.100.2/24"
address6 = "2001:db8:51::2/64"
zone = "wan"

[[route]]
destination = "0.0.0.0/0"
gateway = "198.51.100.1"

[[route]]
destination = "2001:db8:99::/48"
interface = "wan0"
gateway = "2001:db8:51::1"

[[firewall.rule]]
from = "lan"
protocol = "tcp"
port = 8099
action = "drop"
""" + REST


def wired(router_ns: str) -> dict[str, object]:
    """What the router may change in its namespace: the addresses other than
    link-local ones, which links are up, the tc hooks and its routes."""
    def ip(*cmd: str) -> str:
        return run("ip", "netns", "exec", router_ns, *cmd).stdout

    addrs = {line.split()[0]: [a for a in line.split()[2:] if not a.startswith("fe80:")]
             for line in ip("ip", "-br", "addr").splitlines()}
    up = sorted(line.split(":")[1].strip() for line in ip("ip", "-o", "link").splitlines()
                if "<" in line and "UP" in line.split("<")[1].split(">")[0].split(","))
    return {"addr": addrs, "up": up,
            "hooks": [q for q in ip("tc", "qdisc").splitlines() if "clsact" in q],
            "route": ip("ip", "route", "show", "proto", "190")
            + ip("ip", "-6", "route", "show", "proto", "190")}


def cable(rtr: str, lan: str, wan: str) -> None:
    """The router's namespace with a LAN and a WAN veth, up as NICs in use
    would be; the LAN host and the WAN side (the ISP's gateway, with a
    server behind it) at their other ends."""
    for side, ns in (("r-lan", lan), ("r-wan", wan)):
        run("ip", "link", "add", side, "netns", rtr, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", rtr, "link", "set", side, "up")
    run("ip", "-n", lan, "addr", "add", f"{LAN_HOST}/24", "dev", "eth0")
    run("ip", "-n", lan, "route", "add", "default", "via", ROUTER_LAN)
    run("ip", "-n", lan, "addr", "add", f"{LAN_HOST6}/64", "dev", "eth0", "nodad")
    run("ip", "-n", lan, "-6", "route", "add", "default", "via", ROUTER_LAN6)
    run("ip", "-n", wan, "addr", "add", f"{GATEWAY}/24", "dev", "eth0")
    run("ip", "-n", wan, "addr", "add", f"{SERVER}/32", "dev", "lo")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[NetLab, str]]:
    tag = f"at{os.getpid() % 100000}"
    rtr, lan, wan = f"{tag}r", f"{tag}l", f"{tag}w"
    with namespaces(rtr, lan, wan):
        cable(rtr, lan, wan)
        run("ip", "-n", wan, "addr", "add", f"{SERVER6}/64", "dev", "eth0", "nodad")
        run("ip", "-n", wan, "addr", "add", f"{FAR6}/128", "dev", "lo")
        run("ip", "-n", wan, "-6", "route", "add", "2001:db8:88::/64", "via", ROUTER_WAN6)
        # The router's namespace forwards if its kernel may: the router must
        # be the only way through all the same.
        run("ip", "netns", "exec", rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        before = wired(rtr)
        cfg = tmp_path / "router.toml"
        cfg.write_text(CONFIG.replace("{work}", str(tmp_path)))
        lab = NetLab(lan=lan, wan=wan, workdir=tmp_path, config=cfg,
                     socket=str(tmp_path / "router.sock"))
        lab.start_router(prefix=("ip", "netns", "exec", rtr))
        try:
            yield lab, rtr
        finally:
            lab.end_peers()
            if lab.router is not None:
                assert lab.stop_router() == 0
            # Stopping the router leaves its namespace as it found it.
            assert wired(rtr) == before


def test_traffic_crosses_attached_interfaces_through_the_router(
        home: tuple[NetLab, str]) -> None:
    lab, _ = home
    r = lab.ns(lab.lan, "ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER)
    assert "3 received" in r.stdout
    assert "ttl=63" in r.stdout  # one hop: the router's; the kernel forwarded nothing
    r = lab.ns(lab.lan, "ping", "-c", "1", "-W", "2", ROUTER_LAN)
    assert "1 received" in r.stdout and "ttl=64" in r.stdout  # the router answers
    lab.server(lab.wan, "http", SERVER, 8080)
    r = lab.ns(lab.lan, "curl", "-sS", "-m", "5", f"http://{SERVER}:8080/")
    assert r.stdout.startswith(f"you are {ROUTER_WAN}:")  # masqueraded to the WAN address
    r = lab.ns(lab.lan, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", SERVER6)
    assert "2 received" in r.stdout and "ttl=63" in r.stdout  # hop limit: one hop
    r = lab.ns(lab.lan, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", FAR6)
    assert "2 received" in r.stdout  # through the IPv6 gateway the route names
    (e,) = lab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "8080")
    assert e["original"]["src"] == LAN_HOST and e["reply"]["dst"] == ROUTER_WAN
    # A bulk transfer: segmentation offloads cross the hooks both ways.
    sink = lab.spawn(lab.wan, sys.executable, PEERS, "tcp-sink", SERVER, "9100", "30")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    lab.ns(lab.lan, sys.executable, PEERS, "tcp-send", SERVER, "9100", str(8 << 20))
    assert sink.stdout.readline().split() == [ROUTER_WAN, str(8 << 20)]


def test_the_kernel_forwards_nothing_the_router_refuses(home: tuple[NetLab, str]) -> None:
    """ip_forward is on in the router's namespace, and a rule drops port
    8099: nothing gets through, and the router counted every attempt."""
    lab, _ = home
    lab.server(lab.wan, "http", SERVER, 8099)
    r = lab.ns(lab.lan, "curl", "-sS", "-m", "2", f"http://{SERVER}:8099/", check=False)
    assert r.returncode != 0
    assert lab.drops()["firewall_drop"] >= 2  # the SYN and its retransmission
    # Unsolicited traffic from the WAN reaches no LAN host either.
    r = lab.ns(lab.wan, sys.executable, PEERS, "scan", ROUTER_WAN, "22,8080", "2")
    assert r.stdout.split() == []


def test_the_namespace_kernel_serves_nothing_on_attached_links(
        home: tuple[NetLab, str]) -> None:
    """A service of the router namespace's own kernel (here a web server on
    every address) is out of reach through attached interfaces: their IP
    packets go to the router, which delivers nothing to the kernel."""
    lab, rtr = home
    lab.server(rtr, "http", "0.0.0.0", 8081)
    r = run("ip", "netns", "exec", rtr, "curl", "-sS", "-m", "2", f"http://{ROUTER_WAN}:8081/")
    assert r.stdout.startswith("you are")  # it serves, from inside the namespace
    for ns, addr in ((lab.wan, ROUTER_WAN), (lab.lan, ROUTER_LAN)):
        r = lab.ns(ns, "curl", "-sS", "-m", "2", f"http://{addr}:8081/", check=False)
        assert r.returncode != 0, (ns, r.stdout)
    assert lab.drops()["local_unhandled"] >= 2


def test_attached_interfaces_follow_a_reload(home: tuple[NetLab, str]) -> None:
    """Dropping the LAN side on reload takes its address and hooks away;
    the WAN side keeps working with its route."""
    lab, rtr = home
    text = lab.config.read_text()
    start = text.index("[[interface]]")
    end = text.index("[[interface]]", start + 1)
    lan_less = text[:start] + text[end:]
    lan_less = lan_less.replace('[[firewall.policy]]\nfrom = "lan"\nto = "wan"\n'
                                'action = "accept"\n', "")
    lan_less = lan_less.replace('[[firewall.rule]]\nfrom = "lan"\nprotocol = "tcp"\n'
                                'port = 8099\naction = "drop"\n', "")
    lab.config.write_text(lan_less)
    r = lab.ctl_json("reload")
    assert r["applied"] and r["interfaces_removed"] == ["lan0"], r
    state = wired(rtr)
    addrs = {dev.split("@")[0]: a for dev, a in state["addr"].items()}  # type: ignore[union-attr]
    assert addrs["r-lan"] == [] and "198.51.100.2/24" in addrs["r-wan"]
    assert "default via 198.51.100.1 dev r-wan" in str(state["route"])
    v6 = run("ip", "netns", "exec", rtr, "ip", "-6", "route", "show", "proto", "190").stdout
    assert "2001:db8:99::/48 via 2001:db8:51::1 dev r-wan" in v6
    r = lab.ns(lab.wan, "ping", "-c", "1", "-W", "2", ROUTER_WAN)
    assert "1 received" in r.stdout


def test_a_missing_kernel_interface_is_a_clear_error(tmp_path: Path) -> None:
    tag = f"am{os.getpid() % 100000}"
    with namespaces(tag):
        cfg = tmp_path / "router.toml"
        cfg.write_text(CONFIG.replace("{work}", str(tmp_path)))
        r = run("ip", "netns", "exec", tag, sys.executable, "-m", "router", "run", "-c",
                str(cfg), check=False)
        assert r.returncode == 1
        assert "attach: interface 'r-lan' does not exist in the router's network namespace" \
            in r.stderr, r.stderr
        # Nothing is left behind: no TUN device, no hook.
        links = run("ip", "-n", tag, "-o", "link").stdout
        assert "lan0" not in links and "wan0" not in links


ISP_CONFIG = LAN_SIDE + """
[[interface]]
name = "wan0"
attach = "r-wan"
address = "dhcp"
zone = "wan"

[[route]]
destination = "0.0.0.0/0"
interface = "wan0"
""" + REST


def isp_dhcp(lab: NetLab, first: int, last: int) -> subprocess.Popen[str]:
    """dnsmasq as the ISP's DHCP server on the WAN link, leasing
    198.51.100.FIRST..LAST with the WAN server's side as the gateway."""
    return lab.spawn(lab.wan, "dnsmasq", "--no-daemon", "--port=0", "--interface=eth0",
                     "--bind-interfaces", "--dhcp-authoritative",
                     f"--dhcp-range=198.51.100.{first},198.51.100.{last},255.255.255.0,2m",
                     f"--dhcp-option=option:router,{GATEWAY}",
                     f"--dhcp-leasefile={lab.workdir}/leases-{first}", "--log-dhcp")


def wait_address(lab: NetLab, previous: str | None, timeout: float = 20) -> str:
    """The WAN address the router logged after ``previous``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = [str(e["address"]).split("/")[0] for e in lab.events("wan.address")
                if e.get("address")]
        if seen and seen[-1] != previous:
            return seen[-1]
        time.sleep(0.2)
    raise AssertionError(f"no new WAN address after {previous}: {lab.log()[-3000:]}")


def test_the_wan_address_comes_by_dhcp_and_is_followed(tmp_path: Path) -> None:
    tag = f"ad{os.getpid() % 100000}"
    rtr, lan, wan = f"{tag}r", f"{tag}l", f"{tag}w"
    with namespaces(rtr, lan, wan):
        cable(rtr, lan, wan)
        cfg = tmp_path / "router.toml"
        cfg.write_text(ISP_CONFIG.replace("{work}", str(tmp_path)))
        lab = NetLab(lan=lan, wan=wan, workdir=tmp_path, config=cfg,
                     socket=str(tmp_path / "router.sock"))
        try:
            dhcp = isp_dhcp(lab, 50, 59)
            lab.start_router(prefix=("ip", "netns", "exec", rtr))
            first = wait_address(lab, None)
            assert first.startswith("198.51.100.5"), first
            lab.server(lab.wan, "http", SERVER, 8080)
            r = lab.ns(lab.lan, "curl", "-sS", "-m", "5", f"http://{SERVER}:8080/")
            assert r.stdout.startswith(f"you are {first}:"), r.stdout  # the leased address
            assert any(i["address"].startswith(first) for i in lab.ctl_json("interfaces"))
            # The ISP renumbers: the old lease is refused at the next renewal,
            # and the client takes a new one.
            dhcp.terminate()
            dhcp.wait()
            isp_dhcp(lab, 70, 79)
            pid = run("pgrep", "-f", "udhcpc -f -i r-wan").stdout.split()[0]
            run("kill", "-USR1", pid)  # renew now (as at half the lease time)
            second = wait_address(lab, first)
            assert second.startswith("198.51.100.7"), second
            r = lab.ns(lab.lan, "curl", "-sS", "-m", "5", f"http://{SERVER}:8080/")
            assert r.stdout.startswith(f"you are {second}:"), r.stdout  # new flows, new address
            changed = [e for e in lab.events("wan.address") if e.get("previous")]
            assert changed and changed[-1]["connections_flushed"] >= 1  # the first fetch's
        finally:
            lab.end_peers()
            if lab.router is not None:
                assert lab.stop_router() == 0
        # The lease's address and route went with the router.
        assert "198.51.100" not in run("ip", "-n", rtr, "-4", "addr").stdout
        assert "default" not in run("ip", "-n", rtr, "route").stdout
