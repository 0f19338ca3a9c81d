"""The firewall end to end: crafted packets from the namespaces."""

from __future__ import annotations

import sys
import time

import pytest

from tests.integration.conftest import LAN_HOST, PEERS, ROUTER_WAN, SERVER, NetLab
from tests.packets import IP, TCP, UDP, Raw

pytestmark = pytest.mark.netns

RULES = """
[[firewall.rule]]
from = "lan"
protocol = "tcp"
port = 8025
action = "reject"

[[firewall.rule]]
from = "lan"
protocol = "udp"
port = 8026
action = "reject"

[[firewall.rule]]
chain = "input"
from = "wan"
action = "drop"
"""


def test_reject_drop_input_and_spoofing(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text() + RULES)
    netlab.ctl("reload")
    netlab.server(netlab.wan, "http", SERVER, 8025)
    # Rejected: the client is told at once (RST), not left to time out.
    t0 = time.monotonic()
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://{SERVER}:8025/", check=False)
    assert r.returncode == 7, r.stderr  # connection refused; a timeout would be 28
    assert time.monotonic() - t0 < 2
    # For UDP, ICMP "communication administratively prohibited" (3/13),
    # which the client's kernel reports as EHOSTUNREACH at once.
    netlab.server(netlab.wan, "udp-echo", SERVER, 8026)
    t0 = time.monotonic()
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "8026", "x",
                  check=False)
    assert "No route to host" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 2
    # The WAN may not ping the router; the LAN may.
    r = netlab.ns(netlab.wan, "ping", "-c", "1", "-W", "1", ROUTER_WAN, check=False)
    assert "0 received" in r.stdout
    r = netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", ROUTER_WAN)
    assert "1 received" in r.stdout
    # A LAN host forging a WAN source address gets nowhere.
    forged = bytes(IP(src="198.51.100.9", dst=SERVER) / UDP(sport=9, dport=9) / Raw(b"x"))
    netlab.ns(netlab.lan, sys.executable, PEERS, "raw", "lan0", *[forged.hex()] * 5)
    time.sleep(0.3)
    drops = netlab.drops()
    assert drops["spoofed_source"] >= 5 and drops["firewall_reject"] >= 1
    assert drops["firewall_drop"] >= 1
    listing = netlab.ctl_json("firewall", "list")
    assert [r["packets"] >= 1 for r in listing["rules"]] == [True, True, True]
    assert "reject" in netlab.ctl("firewall", "list").stdout
    # Unsolicited connections from the WAN to the LAN host still get nothing.
    netlab.ns(netlab.wan, "ip", "route", "add", "192.168.77.0/24", "via", ROUTER_WAN)
    r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "2", f"http://{LAN_HOST}:8025/",
                  check=False)
    assert r.returncode != 0


def test_connection_cap_per_source(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text().replace(
        '[firewall]\n', '[firewall]\nmax_connections_per_source = 3\n', 1))
    netlab.ctl("reload")
    netlab.server(netlab.wan, "http", SERVER, 8030)
    netlab.ns(netlab.lan, "ip", "addr", "add", "192.168.77.3/24", "dev", "lan0")
    hold = ("import socket,time\n"
            f"s=[socket.create_connection(('{SERVER}',8030)) for _ in range(3)]\n"
            "print('held',flush=True)\n"
            "time.sleep(15)\n")
    holder = netlab.spawn(netlab.lan, sys.executable, "-c", hold)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    # The host at its cap cannot open a fourth connection ...
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "2", "--interface", LAN_HOST,
                  f"http://{SERVER}:8030/", check=False)
    assert r.returncode != 0
    # ... while another host still can.
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", "--interface", "192.168.77.3",
                  f"http://{SERVER}:8030/")
    assert r.stdout.startswith(f"you are {ROUTER_WAN}:")
    assert netlab.drops()["source_conn_limit"] >= 1


FORWARD = """
[[nat.forward]]
interface = "wan0"
port = 8080
to = "192.168.77.2"
"""


def test_wan_port_scan_finds_only_forwarded_ports(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text() + FORWARD)
    netlab.ctl("reload")
    netlab.server(netlab.lan, "http", LAN_HOST, 8080)
    netlab.server(netlab.lan, "http", LAN_HOST, 22)  # listening, not forwarded
    r = netlab.ns(netlab.wan, sys.executable, PEERS, "scan", ROUTER_WAN, "1-1100,8000-8100", "3")
    assert r.stdout.split() == ["8080"]
    # Straight at the LAN host (a WAN neighbour routing to it): nothing at
    # all, not even the port that is forwarded on the router's address.
    netlab.ns(netlab.wan, "ip", "route", "add", "192.168.77.0/24", "via", ROUTER_WAN)
    r = netlab.ns(netlab.wan, sys.executable, PEERS, "scan", LAN_HOST, "1-100,8080", "2")
    assert r.stdout.split() == []
    drops = netlab.drops()
    assert drops["policy"] >= 101  # the unsolicited SYNs to the LAN host


def test_out_of_window_segments_and_blind_rst_are_dropped(netlab: NetLab) -> None:
    echo = netlab.echo(8050, lifetime=20)
    echo.check("one")
    (e,) = netlab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "8050")
    nat_port = e["reply"]["dport"]
    # Forge the server's side: data far beyond the window, and a RST with a
    # wrong sequence number, as a blind attacker would.
    far = bytes(IP(src=SERVER, dst=ROUTER_WAN) /
                TCP(sport=8050, dport=nat_port, flags="PA", seq=12345, ack=1) / Raw(b"evil"))
    rst = bytes(IP(src=SERVER, dst=ROUTER_WAN) /
                TCP(sport=8050, dport=nat_port, flags="R", seq=54321))
    netlab.ns(netlab.wan, sys.executable, PEERS, "raw", "wan0", far.hex(), rst.hex())
    time.sleep(0.3)
    drops = netlab.drops()
    assert drops["tcp_out_of_window"] >= 1 and drops["tcp_invalid_rst"] >= 1
    # The connection is untouched.
    echo.check("two")
    (e,) = netlab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "8050")
    assert e["state"] == "ESTABLISHED"
    echo.close()
