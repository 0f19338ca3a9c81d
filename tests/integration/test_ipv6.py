"""IPv6 end to end: the lab is dual-stack (conf/router.toml), IPv6 routed
through the stateful firewall as is, with NPTv6 or with NAT66; path MTU
discovery, fragments, and TSO6/USO6 checked by a receiving kernel."""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import (
    PEERS,
    NetLab,
    csum_errors,
    path_mtu_transfer,
    server_behind_wan,
    udp_gso_arrives,
)

pytestmark = pytest.mark.netns
HOST6 = "2001:db8:77::2"
SERVER6 = "2001:db8:113::10"
ROUTER_LAN6 = "2001:db8:77::1"


def wait_ping6(netlab: NetLab, addr: str) -> None:
    """Waits until the LAN host gets an answer from 'addr' (addresses are set
    without DAD; a re-created link needs a moment anyway)."""
    for _ in range(50):
        if netlab.ns(netlab.lan, "ping", "-6", "-c", "1", "-W", "1", addr,
                     check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{addr} does not answer over IPv6")


def wait_addr(netlab: NetLab) -> None:
    wait_ping6(netlab, ROUTER_LAN6)


def test_ping6_tcp_udp_through_the_router(netlab: NetLab) -> None:
    wait_addr(netlab)
    r = netlab.ns(netlab.lan, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", SERVER6)
    assert "3 received" in r.stdout
    # TCP: an HTTP fetch; the server sees the LAN host's own address (no NAT66).
    netlab.server(netlab.wan, "http", SERVER6, 8080)
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://[{SERVER6}]:8080/")
    assert r.stdout.startswith(f"you are {HOST6}:")
    # UDP both ways.
    netlab.server(netlab.wan, "udp-echo", SERVER6, 5353)
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER6, "5353", "hello6")
    assert f"from {HOST6}:" in r.stdout and "hello6" in r.stdout
    lines = netlab.ctl("conntrack", "list", "-p", "tcp").stdout
    assert f"src={HOST6} dst={SERVER6}" in lines and "dport=8080" in lines
    assert {e["family"] for e in netlab.ctl_json("conntrack", "list")} >= {"ipv6"}
    icmp6 = netlab.ctl("conntrack", "list", "-p", "icmpv6").stdout
    assert f"src={HOST6} dst={SERVER6} type=128 code=0 id=" in icmp6, icmp6
    assert f"src={SERVER6} dst={HOST6} type=129 code=0 id=" in icmp6, icmp6
    assert "::/0" not in netlab.ctl("routes").stdout  # shown as default
    (lan,) = [i for i in netlab.ctl_json("interfaces") if i["name"] == "lan0"]
    assert lan["address6"] == f"{ROUTER_LAN6}/64"
    assert f"address6 {ROUTER_LAN6}/64" in netlab.ctl("interfaces").stdout
    assert f"2001:db8:77::/64 dev lan0 proto kernel scope link src {ROUTER_LAN6}" in \
        netlab.ctl("routes").stdout.splitlines()


def test_fragmented_udp6_through_the_router(netlab: NetLab) -> None:
    """IPv6 hosts fragment what does not fit the path; the router forwards
    the fragments of tracked flows (virtual reassembly, dp_frag.c)."""
    wait_addr(netlab)
    netlab.server(netlab.wan, "udp-echo", SERVER6, 5355)
    big = "f" * 4000
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER6, "5355", big)
    assert r.stdout.startswith(f"from {HOST6}:") and r.stdout.rstrip().endswith(big)
    c = netlab.ctl_json("stats")["counters"]
    assert c["fragments"] >= 6, c  # three each way
    drops = netlab.drops()
    assert drops["bad_ipv6_fragment"] == 0 and drops["fragment_expired"] == 0, drops


def test_unsolicited_inbound_ipv6_is_blocked(netlab: NetLab) -> None:
    wait_addr(netlab)
    netlab.server(netlab.lan, "http", HOST6, 8081)
    r = netlab.ns(netlab.wan, sys.executable, PEERS, "scan", HOST6, "8081,22", "2")
    assert r.stdout.split() == []
    assert netlab.drops()["policy"] >= 2


def test_packet_too_big_completes_a_tcp_transfer(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text().replace(
        'name = "wan0"\naddress = "203.0.113.1/24"\nzone = "wan"\nmtu = 1500',
        'name = "wan0"\naddress = "203.0.113.1/24"\nzone = "wan"\nmtu = 1280', 1))
    r = netlab.ctl_json("reload")
    assert r["applied"] and r["interfaces_added"] == ["wan0"]  # the link was re-created
    wait_addr(netlab)
    wait_ping6(netlab, SERVER6)  # the re-created WAN link needs its address again
    # "Packet too big" makes the LAN host lower its segments.
    path_mtu_transfer(netlab, ("-6",), "2001:db8:77::/64", "1440", SERVER6, "9106", HOST6, 1280)


def npt_outside(inside_addr: str, inside: str, outside: str) -> str:
    """RFC 6296 3.2 for a /48, written out here: the outside prefix, and
    word 3 adjusted so that the address's one's complement sum is kept."""
    from ipaddress import IPv6Address, IPv6Network

    def ones(x: int) -> int:
        while x >> 16:
            x = (x & 0xFFFF) + (x >> 16)
        return x

    w = list(struct.unpack("!8H", IPv6Address(inside_addr).packed))
    pin = struct.unpack("!8H", IPv6Network(inside).network_address.packed)[:3]
    pout = struct.unpack("!8H", IPv6Network(outside).network_address.packed)[:3]
    adj = ones(sum(pin) + sum(~x & 0xFFFF for x in pout))
    w3 = ones(w[3] + adj)
    w = [*pout, 0 if w3 == 0xFFFF else w3, *w[4:]]
    return str(IPv6Address(struct.pack("!8H", *w)))


def test_nptv6_between_a_ula_lan_and_the_wan(netlab: NetLab) -> None:
    netlab.stop_router()
    text = netlab.config.read_text()
    text = text.replace('address6 = "2001:db8:77::1/64"', 'address6 = "fd00:77::1/64"')
    text = text.replace('host_address6 = "2001:db8:77::2/64"', 'host_address6 = "fd00:77::2/64"')
    text = text.replace('host_routes6 = ["2001:db8:77::/64"]',
                        'host_routes6 = ["2001:db8:77::/48"]')
    netlab.config.write_text(text + '''
[[nat.npt6]]
interface = "wan0"
inside = "fd00:77::/48"
outside = "2001:db8:77::/48"
''')
    netlab.start_router()
    wait_ping6(netlab, SERVER6)
    netlab.server(netlab.wan, "http", SERVER6, 8083)
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://[{SERVER6}]:8083/")
    ext = npt_outside("fd00:77::2", "fd00:77::/48", "2001:db8:77::/48")
    assert r.stdout.startswith(f"you are {ext}:"), (r.stdout, ext)
    # conntrack shows the inside address; the server only ever saw the outside one.
    assert "src=fd00:77::2 dst=2001:db8:113::10" in netlab.ctl("conntrack", "list").stdout


def test_nat66_masquerade_for_a_ula_lan(netlab: NetLab) -> None:
    netlab.stop_router()
    text = netlab.config.read_text()
    text = text.replace('address6 = "2001:db8:77::1/64"', 'address6 = "fd00:77::1/64"')
    text = text.replace('host_address6 = "2001:db8:77::2/64"', 'host_address6 = "fd00:77::2/64"')
    # The WAN side knows no route to the inside prefix: only NAT66 gets through.
    text = text.replace('host_routes6 = ["2001:db8:77::/64"]', 'host_routes6 = []')
    netlab.config.write_text(text + '''
[[nat.masquerade6]]
interface = "wan0"
sources = ["fd00:77::/64"]
''')
    netlab.start_router()
    wait_ping6(netlab, SERVER6)
    r = netlab.ns(netlab.lan, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", SERVER6)
    assert "3 received" in r.stdout
    netlab.server(netlab.wan, "http", SERVER6, 8084)
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://[{SERVER6}]:8084/")
    assert r.stdout.startswith("you are 2001:db8:113::1:"), r.stdout
    netlab.server(netlab.wan, "udp-echo", SERVER6, 5354)
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER6, "5354", "nat66")
    assert "from 2001:db8:113::1:" in r.stdout and "nat66" in r.stdout
    # A datagram the host fragments, both ways.
    big = "n" * 3000
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER6, "5354", big)
    assert r.stdout.startswith("from 2001:db8:113::1:") and r.stdout.rstrip().endswith(big)
    assert netlab.ctl_json("stats")["counters"]["fragments"] >= 4
    # conntrack -L style: the reply tuple goes to the router's address.
    lines = netlab.ctl("conntrack", "list", "-p", "tcp").stdout
    assert "src=fd00:77::2 dst=2001:db8:113::10" in lines
    assert "src=2001:db8:113::10 dst=2001:db8:113::1 " in lines
    maps = netlab.ctl_json("nat", "list")
    assert any(m["internal"].startswith("[fd00:77::2]:") and
               m["external"].startswith("[2001:db8:113::1]:") for m in maps), maps
    # Nothing from the WAN reaches the LAN host or the router's ports.
    netlab.server(netlab.lan, "http", "fd00:77::2", 8085)
    r = netlab.ns(netlab.wan, sys.executable, PEERS, "scan", "2001:db8:113::1", "8085,22", "2")
    assert r.stdout.split() == []


FAR6 = "2001:db8:18::2"


@pytest.fixture
def far_server6(netlab: NetLab) -> Iterator[str]:
    """A server behind the WAN host that verifies every checksum it gets."""
    wait_addr(netlab)
    with server_behind_wan(netlab, "t", "2001:db8:18::1/64", f"{FAR6}/64",
                           "2001:db8:18::1") as srv:
        wait_ping6(netlab, FAR6)
        yield srv


def test_tcp6_upload_with_tso6_checked_by_receiver(netlab: NetLab, far_server6: str) -> None:
    """TSO6: the LAN host's kernel hands 64 KB TCPv6 super-packets to the
    router, which forwards them whole; the far server verifies every
    segment's checksum."""
    srv = far_server6
    before = netlab.ctl_json("stats")["counters"]["gso_packets"]
    sink = netlab.spawn(srv, sys.executable, PEERS, "tcp-sink", FAR6, "9107", "30")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    netlab.ns(netlab.lan, sys.executable, PEERS, "tcp-send", FAR6, "9107", str(8 << 20))
    assert sink.stdout.readline().split() == [HOST6, str(8 << 20)]
    assert csum_errors(netlab, srv).get("TcpInCsumErrors", 0) == 0
    c = netlab.ctl_json("stats")["counters"]
    assert c["gso_packets"] - before > 0, c
    drops = netlab.drops()
    assert drops["tcp_out_of_window"] == 0 and drops["bad_offload"] == 0, drops


def test_udp6_gso_checked_by_receiver(netlab: NetLab, far_server6: str) -> None:
    """USO6: one UDP_SEGMENT send of 8 datagrams crosses as one GSO packet
    and arrives as 8 datagrams with correct checksums."""
    before = udp_gso_arrives(netlab, far_server6, FAR6, "9108")
    c = netlab.ctl_json("stats")["counters"]
    assert c["gso_packets"] - before["gso_packets"] >= 1, c
    assert c["gso_segments"] - before["gso_segments"] >= 8, c
