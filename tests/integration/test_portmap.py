"""Port mapping on the simulated home, with real clients: natpmpc (NAT-PMP),
upnpc from miniupnpc (UPnP IGD, SSDP discovery included) and pcpc.py (PCP,
written from RFC 6887: none is packaged).  For each protocol: a LAN machine
maps a port and a host behind the ISP reaches its service through it; the
mapping expires and deletes; another machine's address is refused; FILTER
and remote hosts restrict who gets in; IPv6 pinholes open one port of one
machine; mappings survive a restart, and a PCP client maps again when the
epoch says the router lost them.

(The machines' clients see the ISP's documentation addresses as "reserved":
upnpc then calls the gateway "not connected?" and goes on with -i.)
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import run
from tests.integration.home import ROUTER_LAN, ROUTER_LAN6, Home, open_home, until

pytestmark = pytest.mark.netns

PCPC = str(Path(__file__).with_name("pcpc.py"))
ISP, OTHER = "198.51.100.1", "198.51.100.80"        # two hosts behind the ISP
ISP6, OTHER6 = "2001:db8:100::1", "2001:db8:100::80"


@pytest.fixture(scope="module")
def home() -> Iterator[Home]:
    # PCP's shortest lifetime down from 120 s, so that expiry can be seen.
    with open_home("veth", edit=lambda t: t.replace("min_lifetime = 120", "min_lifetime = 2"),
                   prefix="pm") as h:
        yield h


def send_from(home: Home, src: str, dst: str, port: int, data: str = "hi") -> str:
    """One UDP datagram from address ``src`` of the ISP's namespace; the
    answer, or "timeout"."""
    code = ("import socket,sys\n"
            f"s=socket.socket(socket.AF_INET6 if ':' in {dst!r} else socket.AF_INET,"
            " socket.SOCK_DGRAM)\n"
            f"s.bind(({src!r},0)); s.settimeout(1.5); s.sendto(b{data!r},({dst!r},{port}))\n"
            "try: print(s.recv(999).decode())\n"
            "except TimeoutError: print('timeout')\n")
    return home.lab.ns(home.ns("isp"), sys.executable, "-c", code).stdout.strip()


def fetch_from(home: Home, src: str, dst: str, port: int) -> str:
    host = f"[{dst}]" if ":" in dst else dst
    r = home.lab.ns(home.ns("isp"), "curl", "-sS", "-m", "2", "--interface", src,
                    f"http://{host}:{port}/", check=False)
    return r.stdout.strip() if r.returncode == 0 else "refused"


def natpmpc(home: Home, n: int, *args: str) -> str:
    r = home.client(n, "natpmpc", "-g", ROUTER_LAN, *args, check=False)
    return r.stdout + r.stderr


def upnpc(home: Home, n: int, *args: str) -> str:
    r = home.client(n, "timeout", "30", "upnpc", "-i", *args, check=False)
    return r.stdout + r.stderr


def pcp(home: Home, n: int, *args: str, server: str = ROUTER_LAN) -> dict[str, object]:
    out = home.client(n, sys.executable, PCPC, "map", server, *args).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def mappings(home: Home) -> list[dict[str, object]]:
    return home.lab.ctl_json("portmap", "list")["mappings"]  # type: ignore[no-any-return]


def test_natpmp_maps_expires_and_deletes(home: Home) -> None:
    wan = home.wan_address()
    out = natpmpc(home, 1)
    assert f"Public IP address : {wan}" in out
    home.lab.server(home.ns("c1"), "udp-echo", "0.0.0.0", 6000)
    out = natpmpc(home, 1, "-a", "7000", "6000", "udp", "3")
    assert "Mapped public port 7000 protocol UDP to local port 6000 liftime 3" in out, out
    assert send_from(home, ISP, wan, 7000).startswith(f"from {ISP}:")
    (m,) = [m for m in mappings(home) if m["external_port"] == 7000]
    assert m["via"] == "natpmp" and m["client"] == home.address(1)
    time.sleep(3.5)  # its lifetime is over: a new host gets no further
    assert send_from(home, OTHER, wan, 7000) == "timeout"
    assert natpmpc(home, 1, "-a", "7000", "6000", "udp", "60").count("Mapped public port 7000")
    assert natpmpc(home, 1, "-a", "7000", "6000", "udp", "0").count("SUCCESS")
    assert not [m for m in mappings(home) if m["external_port"] == 7000]
    assert send_from(home, ISP, wan, 7000, "again") == "timeout"


def test_pcp_maps_filters_and_refuses_other_hosts(home: Home) -> None:
    wan = home.wan_address()
    home.lab.server(home.ns("c1"), "udp-echo", "0.0.0.0", 6100)
    r = pcp(home, 1, "17", "6100", "7100", "60", "--filter", f"{ISP}/32:0")
    assert (r["result"], r["external"], r["external_port"]) == (0, wan, 7100), r
    # FILTER: only the named peer gets in.
    assert send_from(home, ISP, wan, 7100).startswith(f"from {ISP}:")
    assert send_from(home, OTHER, wan, 7100) == "timeout"
    # Another machine's address (THIRD_PARTY) is refused: NOT_AUTHORIZED.
    r = pcp(home, 1, "17", "6101", "7101", "60", "--third-party", home.address(2))
    assert r["result"] == 2
    # The shortest lifetime (2 s here) ends it; then nothing gets in.
    r = pcp(home, 1, "17", "6100", "7100", "1", "--nonce", str(r["nonce"]),
            "--filter", f"{ISP}/32:0")
    assert r["result"] == 2  # another nonce: not this client's mapping
    r = pcp(home, 1, "17", "6102", "7102", "1")
    assert r["result"] == 0 and r["lifetime"] == 2
    until(lambda: not [m for m in mappings(home) if m["external_port"] == 7102], 5,
          "the mapping did not expire")


def test_pcp_delete_and_peer(home: Home) -> None:
    wan = home.wan_address()
    r = pcp(home, 2, "6", "6200", "7200", "60")
    assert r["result"] == 0
    d = pcp(home, 2, "6", "6200", "0", "0", "--nonce", str(r["nonce"]))
    assert d["result"] == 0 and d["lifetime"] == 0
    assert not [m for m in mappings(home) if m["external_port"] == 7200]
    # PEER: the flow to one peer, with its port; only that peer gets in.
    r = pcp(home, 2, "17", "6201", "7201", "60", "--peer", f"{ISP}:5555")
    assert r["result"] == 0 and r["opcode"] == 2
    (m,) = [m for m in mappings(home) if m["internal_port"] == 6201]
    assert m["peer"] and m["filters"] == [f"{ISP}/32 port 5555"]
    assert r["external"] == wan


def test_upnp_igd_with_upnpc(home: Home) -> None:
    wan = home.wan_address()
    c1 = home.address(1)
    out = upnpc(home, 1, "-s")  # discovery by SSDP, then the status actions
    assert "desc: http://192.168.1.1:5000/rootDesc.xml" in out, out
    assert f"ExternalIPAddress = {wan}" in out and "Status : Connected" in out
    home.lab.server(home.ns("c1"), "http", "0.0.0.0", 6300)
    out = upnpc(home, 1, "-e", "game server", "-a", c1, "6300", "7300", "TCP", "3600")
    assert f"external {wan}:7300 TCP is redirected to internal {c1}:6300" in out, out
    assert fetch_from(home, ISP, wan, 7300).startswith(f"you are {ISP}:")
    out = upnpc(home, 1, "-l")
    assert re.search(rf"TCP\s+7300->{re.escape(c1)}:6300\s+'game server'", out), out
    # Another machine's address: action not authorized (606).
    out = upnpc(home, 1, "-a", home.address(2), "6301", "7301", "TCP", "3600")
    assert "606" in out, out
    # A port the router holds for another machine: conflict (718).
    out = upnpc(home, 2, "-a", home.address(2), "6302", "7300", "TCP", "3600")
    assert "718" in out, out
    out = upnpc(home, 1, "-d", "7300", "TCP")
    assert "UPNP_DeletePortMapping() returned : 0" in out, out
    assert fetch_from(home, OTHER, wan, 7300) == "refused"
    # A short lease ends by itself.
    upnpc(home, 1, "-a", c1, "6300", "7302", "TCP", "2")
    assert fetch_from(home, ISP, wan, 7302).startswith("you are")
    until(lambda: not [m for m in mappings(home) if m["external_port"] == 7302], 5,
          "the lease did not end")
    assert fetch_from(home, ISP, wan, 7302) == "refused"


def test_an_ipv6_pinhole_opens_one_port_of_one_machine_to_one_host(home: Home) -> None:
    c1, c2 = home.address(1, "-6"), home.address(2, "-6")
    for n, port in ((1, 8080), (1, 8081), (2, 8080)):
        home.lab.server(home.ns(f"c{n}"), "http", "::", port)
    home.client(1, "ping", "-6", "-c", "1", "-W", "2", ROUTER_LAN6)  # the router meets it
    # UPnP, over IPv4, for the machine's own IPv6 address, one remote host.
    out = upnpc(home, 1, "-A", ISP6, "0", c1, "8080", "TCP", "60")
    assert "Pinhole ID = " in out, out
    assert fetch_from(home, ISP6, c1, 8080).startswith(f"you are {ISP6}")
    assert fetch_from(home, OTHER6, c1, 8080) == "refused"   # not that host
    assert fetch_from(home, ISP6, c1, 8081) == "refused"     # not that port
    assert fetch_from(home, ISP6, c2, 8080) == "refused"     # not that machine
    # Not for another machine's address.
    out = upnpc(home, 1, "-A", "", "0", c2, "8080", "TCP", "60")
    assert "606" in out, out
    uid = re.search(r"Pinhole ID = (\d+)", upnpc(home, 1, "-A", ISP6, "0", c1, "8080", "TCP",
                                                   "60"))
    assert uid is not None
    upnpc(home, 1, "-D", uid.group(1))
    assert fetch_from(home, ISP6, c1, 8080) == "refused"
    # PCP, asked over IPv6: a MAP of an IPv6 address is a pinhole.
    r = pcp(home, 2, "6", "8080", "0", "60", "--filter", f"{OTHER6}/128:0", server=ROUTER_LAN6)
    assert (r["result"], r["external"], r["external_port"]) == (0, c2, 8080), r
    assert fetch_from(home, OTHER6, c2, 8080).startswith(f"you are {OTHER6}")
    assert fetch_from(home, ISP6, c2, 8080) == "refused"


def test_the_wan_reaches_no_port_mapping_service(home: Home) -> None:
    wan = home.wan_address()
    natpmp_address_request = "\x00\x00"
    assert send_from(home, ISP, wan, 5351, natpmp_address_request) == "timeout"
    assert fetch_from(home, ISP, wan, 5000) == "refused"
    # SSDP from the ISP's side finds nothing (the multicast stays on the LAN).
    r = home.lab.ns(home.ns("isp"), "timeout", "15", "upnpc", "-m", "isp0", "-s", check=False)
    assert "192.168.1.1" not in r.stdout + r.stderr


def test_listed_counted_and_evented(home: Home) -> None:
    r = pcp(home, 1, "17", "6400", "7400", "60")
    assert r["result"] == 0
    st = home.lab.ctl_json("portmap", "list")
    (m,) = [m for m in st["mappings"] if m["external_port"] == 7400]
    assert m["via"] == "pcp" and 50 <= int(m["lifetime_left"]) <= 60
    text = home.lab.ctl("portmap", "list").stdout
    assert re.search(rf"udp\s+7400\s+{re.escape(home.address(1))}:6400", text), text
    metrics = run("ip", "netns", "exec", home.ns("rtr"), "curl", "-sS", "-m", "5",
                  "http://127.0.0.1:9188/metrics").stdout
    assert re.search(r'router_portmap_mappings\{family="4",via="pcp"\} [1-9]', metrics), metrics
    assert re.search(r'router_portmap_refused_total\{via="upnp"\} [1-9]', metrics)
    granted = home.lab.events("portmap.granted")
    assert any(e["external_port"] == 7400 and e["via"] == "pcp" for e in granted)
    assert any(e["code"] == "not_authorized" for e in home.lab.events("portmap.refused"))
    home.lab.ctl("portmap", "delete", "udp", "7400")
    assert not [m for m in mappings(home) if m["external_port"] == 7400]


def test_a_new_wan_address_is_told_to_the_lan_and_the_mappings_follow(home: Home) -> None:
    """The ISP renumbers: NAT-PMP's announcement gives the LAN the new
    address, each PCP client hears its mapping's new address (RFC 6887
    14.2), and the mapped port works on the new address."""
    old = home.wan_address()
    home.lab.server(home.ns("c1"), "udp-echo", "0.0.0.0", 6700)
    r = pcp(home, 1, "17", "6700", "7700", "600")
    assert r["result"] == 0
    listen = home.lab.spawn(home.ns("c1"), sys.executable, PCPC, "listen", "25")
    assert listen.stdout is not None and "listening" in listen.stdout.readline()
    os.kill(home.pid("isp-dnsmasq"), 15)
    home.lab.spawn(home.ns("isp"), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                   "--pid-file=", "--no-hosts", "--no-resolv", "--interface=isp0",
                   "--bind-interfaces", "--dhcp-authoritative",
                   "--dhcp-range=198.51.100.200,198.51.100.209,255.255.255.0,2m",
                   "--dhcp-option=option:router,198.51.100.1",
                   f"--dhcp-leasefile={home.work}/isp2.leases")
    os.kill(int(home.lab.events("dhcp.client.started")[-1]["pid"]), 10)  # renew now
    until(lambda: home.wan_address() not in ("", old), 20, "no new WAN address")
    new = home.wan_address()
    heard: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 15
    while len(heard) < 2 and time.monotonic() < deadline:
        line = listen.stdout.readline()
        if not line:
            break
        e = json.loads(line)
        heard.setdefault(str(e["event"]), e)
    assert heard["natpmp"]["address"] == new, heard
    assert (heard["pcp"]["opcode"], heard["pcp"]["external"], heard["pcp"]["external_port"]) \
        == (1, new, 7700), heard
    assert send_from(home, ISP, new, 7700).startswith(f"from {ISP}:")


def test_mappings_survive_a_restart_and_a_lost_table_is_announced(home: Home) -> None:
    """Last: it restarts the router.  With its state file the router keeps
    its mappings and PCP epoch; without, the epoch starts again, an ANNOUNCE
    says so, and a PCP client that listens maps again (RFC 6887 8.5, 14.1.3)."""
    wan = home.wan_address()
    home.lab.server(home.ns("c2"), "udp-echo", "0.0.0.0", 6500)
    assert "Mapped public port 7500" in natpmpc(home, 2, "-a", "7500", "6500", "udp", "600")
    home.lab.ctl_json("portmap", "list")
    time.sleep(1.5)  # the state file is written within a second of a change
    # A machine listening for NAT-PMP's announcements of the external address.
    listen = home.lab.spawn(home.ns("c2"), sys.executable, PCPC, "listen", "20")
    assert listen.stdout is not None and "listening" in listen.stdout.readline()
    assert home.lab.stop_router() == 0
    home.lab.start_router(prefix=("ip", "netns", "exec", home.ns("rtr")))
    until(lambda: home.lab.events("portmap.serving"), 10, "not serving again")
    heard = json.loads(listen.stdout.readline())  # once the WAN has its lease again
    assert (heard["event"], heard["opcode"], heard["address"], heard["from"]) == \
        ("natpmp", 128, wan, ROUTER_LAN), heard
    assert any(m["external_port"] == 7500 for m in mappings(home))
    until(lambda: send_from(home, ISP, wan, 7500).startswith("from"), 10,
          "the mapping did not come back")
    # A client keeping a mapping, and a router that comes back without its table.
    keep = home.lab.spawn(home.ns("c1"), sys.executable, PCPC, "keep", ROUTER_LAN, "17",
                          "6600", "3600", "30")
    home.lab.server(home.ns("c1"), "udp-echo", "0.0.0.0", 6600)
    assert keep.stdout is not None
    first = json.loads(keep.stdout.readline())
    assert first["event"] == "mapped" and first["result"] == 0, first
    time.sleep(3)  # the epoch moves on
    assert home.lab.stop_router() == 0
    (home.work / "conntrack" / "portmap.state").unlink()
    home.lab.start_router(prefix=("ip", "netns", "exec", home.ns("rtr")))
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = keep.stdout.readline()
        if not line:
            break
        seen.append(json.loads(line))
        if seen[-1]["event"] == "mapped":
            break
    assert [e["event"] for e in seen[:1]] == ["announce"], seen
    assert seen[-1]["event"] == "mapped" and seen[-1]["why"] == "lost-state", seen
    assert seen[-1]["external_port"] == first["external_port"]
    assert send_from(home, ISP, wan, int(first["external_port"])).startswith("from")
