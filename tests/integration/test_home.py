"""The simulated home (scripts/home-lab.sh): the router as a real gateway.

A LAN switch with two machines running a real DHCP client (udhcpc) and
taking IPv6 by SLAAC; the router in its own namespace attached to the LAN
switch and the ISP's, once through veth and once through macvlan
interfaces; the ISP with dnsmasq as its DHCP and DNS server and a web
server.  The router runs conf/home.toml as the script gives it.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PEERS, run
from tests.integration.home import ROUTER_LAN, ROUTER_LAN6, WEB, Home, open_home, until

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", params=["veth", "macvlan", "service-user"])
def home(request: pytest.FixtureRequest) -> Iterator[Home]:
    """The home, through veth, through macvlan, and through veth with the
    router dropping to a service user (its root helper process runs the
    DHCP client and dnsmasq: helpers.py)."""
    mode = request.param
    user = request.getfixturevalue("service_user").pw_name if mode == "service-user" else None
    with open_home("veth" if user else mode, user) as h:
        yield h

def test_the_lan_gets_addresses_and_a_resolver_from_the_router(home: Home) -> None:
    for n in (1, 2):
        addr = home.address(n)
        assert 100 <= int(addr.split(".")[-1]) <= 199, addr  # from the configured pool
        assert home.address(n, "-6").startswith("2001:db8:1:0:")  # SLAAC in the LAN's /64
        resolv = Path(f"/etc/netns/{home.ns(f'c{n}')}/resolv.conf").read_text()
        assert resolv.split() == ["nameserver", ROUTER_LAN]
    leases = (home.work / "dhcp.leases").read_text()
    assert home.address(1) in leases and home.address(2) in leases
    # Router advertisements carry the router as DNS server (RDNSS): a
    # router solicitation (sent when the link comes up) gets one.
    cap = subprocess.Popen(["ip", "netns", "exec", home.ns("c2"), "tshark", "-i", "eth0", "-a",
                            "duration:6", "-f", "icmp6", "-Y", "icmpv6.type == 134", "-T",
                            "fields", "-e", "icmpv6.opt.rdnss"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    time.sleep(2)  # tshark is capturing
    run("ip", "-n", home.ns("c2"), "link", "set", "eth0", "down")
    run("ip", "-n", home.ns("c2"), "link", "set", "eth0", "up")
    out, _ = cap.communicate(timeout=30)
    assert ROUTER_LAN6 in out.split(), out
    # ... and the router answers there.
    until(lambda: home.client(2, sys.executable, PEERS, "dns", ROUTER_LAN6,
                              "www.isp.example").stdout.split() == [WEB], 10,
          "no DNS answer on the router's IPv6 address")
    # The machine is left as this test found it: its link bounced, it has its
    # default route back (from the router's advertisements) before the next
    # test reaches past the router over IPv6.
    until(lambda: "default via" in run("ip", "-n", home.ns("c2"), "-6", "route").stdout, 15,
          "c2 got no IPv6 default route back from the router's advertisements")


def uid(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


def test_the_helper_programs_keep_root_whoever_the_router_is(home: Home) -> None:
    """The DHCP client and dnsmasq need root as long as they run: with a
    service user, the router's root helper process runs them, and the
    router itself keeps nothing but CAP_NET_ADMIN."""
    assert home.lab.router is not None
    st = home.lab.ctl_json("status")
    router_pid = st["pid"]
    want = pwd.getpwnam(home.user).pw_uid if home.user else 0
    assert uid(router_pid) == want
    client = st["helpers"]["dhcp-wan0"]["pid"]
    assert uid(client) == 0  # udhcpc: root
    parent = int(Path(f"/proc/{client}/stat").read_text().rsplit(")", 1)[1].split()[1])
    if home.user:
        assert parent != router_pid and uid(parent) == 0  # the helper process's child
        assert "helpers" in Path(f"/proc/{parent}/cmdline").read_text()
        (dropped,) = home.lab.events("router.privileges_dropped")[-1:]
        assert dropped["CapEff"] == "0000000000001000"
    else:
        assert parent == router_pid


def test_names_resolve_through_the_router_and_pages_load_over_both_families(
        home: Home) -> None:
    r = home.client(1, "getent", "ahostsv4", "www.isp.example")
    assert r.stdout.split()[0] == WEB
    wan = home.wan_address()
    assert wan.startswith("198.51.100.1")  # from the ISP's DHCP pool .100-.149
    r = home.client(1, "curl", "-4", "-sS", "-m", "5", "http://www.isp.example/")
    assert r.stdout.strip() == f"you are {wan}"  # the web server sees the leased address
    r = home.client(2, "curl", "-6", "-sS", "-m", "5", "http://www.isp.example/", check=False)
    if r.returncode != 0:
        # An intermittent failure to connect over IPv6 was seen here: say
        # what each side had at that moment, then fail.
        raise AssertionError(f"curl -6: {r.stderr.strip()}\n" + _ipv6_state(home))
    assert r.stdout.strip() == f"you are {home.address(2, '-6')}"  # IPv6 is routed
    # The machines' DHCP names are in the local domain.
    r = home.client(1, "getent", "hosts", f"{home.ns('c2')}.home.arpa")
    assert r.stdout.split()[0] == home.address(2)
    # Everything crossed the router: the DNS queries as connections to its
    # services, the fetches as NAT.
    conns = home.lab.ctl_json("conntrack", "list")
    assert any(c["original"]["dst"] == ROUTER_LAN and c["original"].get("dport") == 53
               for c in conns)
    assert any(c["original"]["dst"] == WEB and c["reply"]["dst"] == wan for c in conns)


def test_a_machine_checking_its_router_keeps_it_as_default(home: Home) -> None:
    """A host that checks the router's reachability (neighbour solicitation
    to its link-local address) hears a router: the kernel of the router's
    namespace answers with the Router flag, so the host keeps its default
    route (RFC 4861 7.2.5: a "not a router" answer makes it drop it, and
    its IPv6 stopped until the next advertisement)."""
    c2 = home.ns("c2")
    route = run("ip", "-n", c2, "-6", "route", "show", "default").stdout
    m = re.search(r"default via (\S+)", route)
    assert m, route
    gateway = m.group(1)
    run("ip", "-n", c2, "-6", "neigh", "flush", "dev", "eth0")
    # Any packet to it makes the host solicit the router's address first
    # (the echo itself gets no answer: the data plane has the link, and the
    # router's own stack has no link-local address to answer from).
    home.client(2, "ping", "-6", "-c", "1", "-W", "1", f"{gateway}%eth0", check=False)
    neigh = run("ip", "-n", c2, "-6", "neigh", "show", gateway).stdout
    assert "router" in neigh, neigh
    assert "default via" in run("ip", "-n", c2, "-6", "route", "show", "default").stdout
    r = home.client(2, "curl", "-6", "-sS", "-m", "5", "http://www.isp.example/")
    assert r.stdout.strip() == f"you are {home.address(2, '-6')}"


def _ipv6_state(home: Home) -> str:
    out = []
    for part in ("c2", "isp", "rtr"):
        for what in (("-6", "addr"), ("-6", "route"), ("-6", "neigh")):
            r = run("ip", "-n", home.ns(part), *what, check=False)
            out.append(f"{part} ip {' '.join(what)}:\n{r.stdout}{r.stderr}")
    drops = {k: v for k, v in home.lab.ctl_json("stats")["drops"].items() if v}
    return "\n".join(out) + f"\nrouter drops: {drops}\n" + "\n".join(
        line for line in home.lab.log().splitlines()[-30:])


def test_the_wan_side_reaches_nothing(home: Home) -> None:
    isp = home.ns("isp")
    wan = home.wan_address()
    # No DNS from the router for the WAN, though the LAN gets it.
    r = home.lab.ns(isp, sys.executable, PEERS, "dns", wan, "www.isp.example")
    assert r.stdout.strip() == "timeout"
    # No connection to the router or through it to a LAN machine.
    home.lab.server(home.ns("c1"), "http", "0.0.0.0", 8080)
    r = home.lab.ns(isp, sys.executable, PEERS, "scan", wan, "22,53,80,8080", "2")
    assert r.stdout.split() == []
    # A DHCP client on the WAN side gets the ISP's lease, never the LAN's.
    stranger = home.ns("x")
    run("ip", "netns", "add", stranger)
    try:
        run("ip", "link", "add", "eth0", "netns", stranger, "type", "veth", "peer", "name",
            "x-isp", "netns", home.ns("sw"))
        run("ip", "-n", home.ns("sw"), "link", "set", "x-isp", "master", "isp", "up")
        run("ip", "-n", stranger, "link", "set", "eth0", "up")
        r = run("ip", "netns", "exec", stranger, "udhcpc", "-f", "-q", "-n", "-i", "eth0",
                "-s", "/bin/true", "-t", "3", "-T", "2", timeout=30, check=False)
        assert "obtained from 198.51.100.1," in r.stdout + r.stderr
        assert "192.168.1." not in r.stdout + r.stderr
    finally:
        run("ip", "netns", "del", stranger, check=False)
    # The query and the four connection attempts met the input chain.
    assert home.lab.drops()["firewall_drop"] >= 5


def test_a_new_wan_address_is_used_within_seconds(home: Home) -> None:
    first = home.wan_address()
    # The ISP renumbers: its DHCP server now leases .200-.209 only, and the
    # router's client renews (as at half the lease time).
    os.kill(home.pid("isp-dnsmasq"), 15)
    isp = home.lab.spawn(home.ns("isp"), "dnsmasq", "--keep-in-foreground",
                         "--conf-file=/dev/null", "--pid-file=", "--no-hosts", "--no-resolv",
                         "--interface=isp0", "--bind-interfaces", "--dhcp-authoritative",
                         "--dhcp-range=198.51.100.200,198.51.100.209,255.255.255.0,2m",
                         "--dhcp-option=option:router,198.51.100.1",
                         f"--address=/www.isp.example/{WEB}",
                         f"--dhcp-leasefile={home.work}/isp2.leases")
    assert isp.poll() is None
    client = home.lab.events("dhcp.client.started")[-1]["pid"]
    os.kill(int(client), 10)  # SIGUSR1: renew now
    until(lambda: home.wan_address() not in ("", first), 20, "no new WAN address")
    second = home.wan_address()
    assert second.startswith("198.51.100.20")
    r = home.client(1, "curl", "-4", "-sS", "-m", "5", f"http://{WEB}/")
    assert r.stdout.strip() == f"you are {second}"


def test_dnsmasq_dying_is_noticed_and_it_comes_back(home: Home) -> None:
    (started,) = home.lab.events("dnsmasq.started")[-1:]
    os.kill(int(started["pid"]), 9)
    until(lambda: len(home.lab.events("dnsmasq.started")) > 1 and
          home.lab.events("dnsmasq.started")[-1]["pid"] != started["pid"], 10,
          "dnsmasq was not started again")
    assert home.lab.events("dnsmasq.exited")[-1]["status"] == -9
    # routerctl status and the metrics tell it too (within a second: the
    # helper process reports once a second).
    until(lambda: home.lab.ctl_json("status")["helpers"]["dnsmasq"] | {"pid": 0} ==
          {"running": True, "pid": 0, "restarts": 1}, 5, "status does not tell")
    st = home.lab.ctl_json("status")
    assert st["helpers"]["dhcp-wan0"]["running"]
    assert st["wan"]["wan0"].split("/")[0] == home.wan_address()
    # The programs it runs hold nothing of the router's: no device, no program.
    for helper in ("dnsmasq", "dhcp-wan0"):
        fds = Path(f"/proc/{st['helpers'][helper]['pid']}/fd")
        held = [os.readlink(f) for f in fds.iterdir()]
        assert not [h for h in held if "tun" in h or "bpf" in h], (helper, held)
    metrics = run("ip", "netns", "exec", home.ns("rtr"), "curl", "-sS", "-m", "5",
                  "http://127.0.0.1:9188/metrics").stdout
    assert 'router_helper_running{helper="dnsmasq"} 1.0' in metrics
    restarts = re.search(r'router_helper_restarts_total\{helper="dnsmasq"\} (\S+)', metrics)
    assert restarts and float(restarts.group(1)) >= 1
    until(lambda: home.client(1, sys.executable, PEERS, "dns", ROUTER_LAN,
                              "www.isp.example").stdout.split() == [WEB], 10,
          "no DNS after dnsmasq's restart")


def test_a_reload_gives_a_machine_its_static_lease(home: Home) -> None:
    mac = run("ip", "-n", home.ns("c1"), "-o", "link", "show", "eth0").stdout.split(
        "link/ether ")[1].split()[0]
    text = home.lab.config.read_text()
    home.lab.config.write_text(text.replace(
        'static = [{ mac = "52:54:00:00:00:10", address = "192.168.1.10", name = "nas" }]',
        f'static = [{{ mac = "{mac}", address = "192.168.1.10", name = "nas" }}]'))
    try:
        r = home.lab.ctl_json("reload")
        assert r["applied"], r
        until(lambda: home.lab.events("dnsmasq.reconfigured"), 10, "dnsmasq not reconfigured")
        # The machine's next renewal is refused its old address, and it
        # takes the static one.
        os.kill(home.pid(f"dhcp-{home.ns('c1')}"), 10)
        until(lambda: home.address(1) == "192.168.1.10", 20,
              f"no static lease: {home.address(1)}")
        r = home.client(2, "getent", "hosts", "nas.home.arpa")
        assert r.stdout.split()[0] == "192.168.1.10"
    finally:
        home.lab.config.write_text(text)
        home.lab.ctl_json("reload")


def link_local(ns: str, dev: str) -> str:
    out = run("ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "scope", "link").stdout
    return out.split("inet6 ")[1].split("/")[0]


def test_multicast_listener_discovery_reaches_the_routers_kernel(home: Home) -> None:
    """An MLD querier on the LAN (a snooping switch's) gets the reports of
    the router's namespace, so that the groups its router solicitations
    and DHCPv6 requests go to keep reaching it; the data plane sees none."""
    rtr = link_local(home.ns("rtr"), "eth1")
    # (The capture filter "ip6": "icmp6" would miss MLD, which follows a
    # hop-by-hop header.)
    cap = subprocess.Popen(["ip", "netns", "exec", home.ns("c2"), "tshark", "-i", "eth0", "-a",
                            "duration:6", "-f", "ip6", "-Y", "icmpv6.type == 143", "-T",
                            "fields", "-e", "ipv6.src"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    time.sleep(2)  # tshark is capturing
    before = home.lab.drops()["not_unicast"]
    querier = link_local(home.ns("c1"), "eth0")
    query = ("from scapy.all import Ether, IPv6, IPv6ExtHdrHopByHop, RouterAlert, sendp\n"
             "from scapy.layers.inet6 import ICMPv6MLQuery2\n"
             f"sendp(Ether(dst='33:33:00:00:00:01') / IPv6(src='{querier}', dst='ff02::1',"
             " hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) /"
             " ICMPv6MLQuery2(mrd=1000), iface='eth0', verbose=False)\n")
    home.client(1, sys.executable, "-c", query)
    out, _ = cap.communicate(timeout=30)
    assert rtr in out.split(), out  # the router's namespace answered the query
    assert home.lab.drops()["not_unicast"] == before


def test_a_reload_takes_the_services_away_and_brings_them_back(home: Home) -> None:
    """Without [interface.lan] the LAN gets no answer from the router, and
    nothing of the services is left in the namespace; put back, they work
    again.  (Last in the module: it changes the running config.)"""
    text = home.lab.config.read_text()
    start = text.index("[interface.lan]")
    end = text.index("[[interface]]", start)
    pm_start = text.index("# Port mapping for the LAN")  # a LAN service too
    pm_end = text.index("[firewall]", pm_start)
    home.lab.config.write_text(text[:start] + text[end:pm_start] + text[pm_end:])
    rtr = home.ns("rtr")
    try:
        r = home.lab.ctl_json("reload")
        assert r["applied"] and r["interfaces_removed"] == ["rt-self"], r
        until(lambda: "dnsmasq" not in home.lab.ctl_json("status")["helpers"], 10,
              "dnsmasq still runs")
        assert "lookup 190" not in run("ip", "netns", "exec", rtr, "ip", "rule").stdout
        assert "rt-self" not in run("ip", "-n", rtr, "link").stdout
        r = home.client(1, sys.executable, PEERS, "dns", ROUTER_LAN, "www.isp.example")
        assert r.stdout.strip() == "timeout"
    finally:
        home.lab.config.write_text(text)
        back = home.lab.ctl("--json", "reload", check=False)
    if home.user:
        # As the service user the router cannot open the tun node to make
        # the host link again (docs/deployment.md): said, and nothing else
        # changes; the services come back at the next start.
        assert "cannot open /dev/net/tun" in back.stderr, back.stderr
        return
    r = json.loads(back.stdout)
    assert r["applied"] and r["interfaces_added"] == ["rt-self"], r
    assert "lookup 190" in run("ip", "netns", "exec", rtr, "ip", "rule").stdout
    until(lambda: home.client(1, sys.executable, PEERS, "dns", ROUTER_LAN,
                              "www.isp.example").stdout.split() == [WEB], 15,
          "no DNS after the services came back")
