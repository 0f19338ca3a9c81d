"""Operating the router: events, capture, routes, reloads under traffic."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import LAN_HOST, ROUTER_WAN, SERVER, NetLab, run

pytestmark = pytest.mark.netns


def ctl_proc(netlab: NetLab, *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "router.ctl", "-S", netlab.socket, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    netlab.procs.append(p)
    return p


def wait_for_log(netlab: NetLab, event: str, n: int = 1, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(netlab.events(event)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {event} in the log")


def test_conntrack_events_show_new_and_destroy(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "http", SERVER, 8061)
    text = ctl_proc(netlab, "conntrack", "events", "-p", "tcp", "--dport", "8061",
                    "-e", "NEW,DESTROY", "-c", "2", "--duration", "30")
    js = ctl_proc(netlab, "--json", "conntrack", "events", "--dport", "8061", "--duration",
                  "30", "-c", "4")
    wait_for_log(netlab, "events.listener_joined", 2)
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://{SERVER}:8061/")
    assert r.stdout.startswith(f"you are {ROUTER_WAN}:")
    out, err = text.communicate(timeout=30)  # DESTROY once TIME_WAIT (3 s) is over
    lines = out.splitlines()
    assert len(lines) == 2, (out, err)
    assert re.match(rf"^    \[NEW\] tcp      6 \d+ SYN_SENT src={LAN_HOST} dst={SERVER} "
                    rf"sport=\d+ dport=8061 \[UNREPLIED\] src={SERVER} dst={ROUTER_WAN} "
                    r"sport=8061 dport=\d+$", lines[0]), lines[0]
    # An expiry's DESTROY: the state, no time left (as Linux reports it).
    assert re.match(rf"^\[DESTROY\] tcp      6 TIME_WAIT src={LAN_HOST} dst={SERVER} sport=\d+ "
                    r"dport=8061 packets=\d+ bytes=\d+ src=", lines[1]), lines[1]
    assert lines[1].endswith("[ASSURED]")
    assert "2 flow events have been shown" in err
    out, _ = js.communicate(timeout=30)
    types = [json.loads(x)["type"] for x in out.splitlines()]
    assert types == ["NEW", "UPDATE", "UPDATE", "UPDATE"]  # SYN_RECV, ESTABLISHED, FIN_WAIT
    # Both readers are gone: connection events are off again.
    wait_for_log(netlab, "events.listener_left", 2)


def test_a_stuck_events_reader_slows_nobody(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "udp-echo", SERVER, 5400)
    # A client that asks for events and then never reads.
    stuck = socket.socket(socket.AF_UNIX)
    stuck.connect(netlab.socket)
    stuck.sendall(b'{"cmd":"conntrack.events","args":{}}\n')
    good = ctl_proc(netlab, "--json", "conntrack", "events", "-e", "NEW", "-p", "udp",
                    "-c", "1500", "--duration", "40")
    wait_for_log(netlab, "events.listener_joined", 2)
    sender = ("import socket\n"
              "for p in range(20000, 21500):\n"
              "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"  s.bind(('',p)); s.sendto(b'x',('{SERVER}',5400)); s.close()\n")
    t0 = time.monotonic()
    netlab.ns(netlab.lan, sys.executable, "-c", sender)
    # The control socket answers at once while one reader is stuck.
    assert netlab.ctl_json("status")["conntrack"]["count"] >= 1
    out, _ = good.communicate(timeout=40)
    assert len(out.splitlines()) == 1500
    assert time.monotonic() - t0 < 30
    stuck.close()


def test_capture_opens_in_tshark(netlab: NetLab) -> None:
    pcap = netlab.workdir / "wan.pcap"
    cap = ctl_proc(netlab, "capture", "wan0", "-w", str(pcap), "-c", "6", "-t", "20")
    wait_for_log(netlab, "capture.started")
    netlab.ns(netlab.lan, "ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER)
    _, err = cap.communicate(timeout=30)
    assert "6 packets captured on wan0" in err
    r = run("tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
            "-e", "icmp.type")
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows.count([ROUTER_WAN, SERVER, "8"]) == 3  # requests, after NAT
    assert rows.count([SERVER, ROUTER_WAN, "0"]) == 3  # replies, before it
    # A second capture at the same time is refused with a clear message.
    first = ctl_proc(netlab, "capture", "lan0", "-w", str(netlab.workdir / "lan.pcap"),
                     "-t", "3")
    wait_for_log(netlab, "capture.started", 2)
    r = netlab.ctl("capture", "lan0", "-w", str(pcap), "-t", "1", check=False)
    assert r.returncode == 1 and "one at a time" in r.stderr
    first.communicate(timeout=15)
    r = netlab.ctl("capture", "nope0", "-w", str(pcap), check=False)
    assert r.returncode == 1 and "no interface 'nope0'" in r.stderr


def test_routes_and_zone_filter(netlab: NetLab) -> None:
    out = netlab.ctl("routes").stdout.splitlines()
    assert "192.168.77.0/24 dev lan0 proto kernel scope link src 192.168.77.1" in out
    assert "default dev wan0 proto static" in out
    netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", SERVER)
    assert len(netlab.ctl_json("conntrack", "list", "--fw-zone", "lan")) == 1
    assert netlab.ctl_json("conntrack", "list", "--fw-zone", "wan") == []
    r = netlab.ctl("conntrack", "list", "--fw-zone", "dmz", check=False)
    assert r.returncode == 1 and "no zone 'dmz'" in r.stderr


def test_tcp_stream_survives_ten_reloads(netlab: NetLab) -> None:
    netlab.spawn(netlab.wan, "iperf3", "-s", "-1", "-B", SERVER, "-p", "5210")
    time.sleep(0.5)
    client = netlab.spawn(netlab.lan, "iperf3", "-c", SERVER, "-p", "5210", "-t", "8",
                          "-b", "50M", "-J")
    time.sleep(1.0)
    (e,) = netlab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "5210",
                           "--state", "ESTABLISHED")[-1:]
    base = netlab.config.read_text()
    for i in range(10):
        rule = (f'\n[[firewall.rule]]\nfrom = "wan"\nprotocol = "udp"\nport = {7000 + i}\n'
                f'action = "drop"\ncomment = "reload {i}"\n')
        netlab.config.write_text(base + rule)
        r = netlab.ctl_json("reload")
        assert r["applied"] is True
        if i == 4:  # a broken file in between changes nothing
            netlab.config.write_text(base + "\n[[firewall.rule]]\naction = 'maybe'\n")
            r2 = netlab.ctl("reload", check=False)
            assert r2.returncode == 1 and "firewall.rule" in r2.stderr
        time.sleep(0.5)
    out, _ = client.communicate(timeout=30)
    result = json.loads(out)
    assert "error" not in result, result.get("error")
    sent = result["end"]["sum_sent"]
    assert sent["bytes"] > 10_000_000 and result["end"]["sum_received"]["bytes"] > 10_000_000
    assert netlab.ctl_json("status")["reloads"] == {"ok": 10, "failed": 1}
    after = [x for x in netlab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "5210")
             if x["original"]["sport"] == e["original"]["sport"]]
    assert after and after[0]["reply"]["dport"] == e["reply"]["dport"]  # same NAT binding
    rules = netlab.ctl_json("firewall", "list")["rules"]
    assert rules[-1]["comment"] == "reload 9"


def test_drop_log_names_rule_and_reason(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text().replace(
        "[firewall]\n", "[firewall]\nlog = true\nlog_rate = 5\n", 1) +
        '\n[[firewall.rule]]\nfrom = "lan"\nprotocol = "tcp"\nport = 8099\n'
        'action = "reject"\ncomment = "no smtp-ish"\n')
    netlab.ctl("reload")
    netlab.ns(netlab.lan, "curl", "-sS", "-m", "2", f"http://{SERVER}:8099/", check=False)
    wait_for_log(netlab, "packet.dropped")
    (ev,) = [e for e in netlab.events("packet.dropped") if e.get("dport") == 8099][:1]
    assert ev["reason"] == "firewall_reject" and ev["interface"] == "lan0"
    assert ev["src"] == LAN_HOST and ev["dst"] == SERVER and ev["flags"] == "S"
    assert "port=8099" in ev["rule_text"] and ev["rule"] >= 0
    # A flood is logged at the configured rate, the rest counted.
    sender = ("import socket\n"
              "for p in range(200):\n"
              "  s=socket.socket(); s.setblocking(False)\n"
              f"  s.connect_ex(('{SERVER}',8099)); s.close()\n")
    netlab.ns(netlab.lan, sys.executable, "-c", sender)
    wait_for_log(netlab, "packet.drop_log_suppressed")
    assert len(netlab.events("packet.dropped")) < 40


def test_reload_adds_and_removes_an_interface(netlab: NetLab) -> None:
    dmz = f"{netlab.lan[:-1]}d"
    run("ip", "netns", "del", dmz, check=False)
    run("ip", "netns", "add", dmz)
    try:
        echo = netlab.echo(8070, lifetime=30)
        echo_ok = echo.check
        echo_ok("before")
        base = netlab.config.read_text()
        netlab.config.write_text(base + f'''
[[interface]]
name = "dmz0"
address = "10.99.0.1/24"
zone = "dmz"
netns = "{dmz}"
host_address = "10.99.0.2/24"
host_routes = ["0.0.0.0/0"]

[[firewall.policy]]
from = "lan"
to = "dmz"
action = "accept"
''')
        r = netlab.ctl_json("reload")
        assert r["applied"] and r["interfaces_added"] == ["dmz0"]
        assert [i["name"] for i in netlab.ctl_json("interfaces")] == ["lan0", "wan0", "dmz0"]
        out = netlab.ns(netlab.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.99.0.2")
        assert "2 received" in out.stdout
        echo_ok("during")
        # The LAN interface kept its counters through the change.
        lan = netlab.ctl_json("interfaces")[0]
        assert lan["rx_packets"] > 4
        netlab.config.write_text(base)
        r = netlab.ctl_json("reload")
        assert r["applied"] and r["interfaces_removed"] == ["dmz0"]
        assert [i["name"] for i in netlab.ctl_json("interfaces")] == ["lan0", "wan0"]
        assert netlab.ctl_json("interfaces")[0]["rx_packets"] >= lan["rx_packets"]
        out = netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "1", "10.99.0.2", check=False)
        assert "0 received" in out.stdout
        r2 = run("ip", "-n", dmz, "link", "show", "dmz0", check=False)
        assert r2.returncode != 0  # the device is gone with its descriptor
        echo_ok("after")
        # A namespace that does not exist: refused, nothing changes.
        netlab.config.write_text(base + '\n[[interface]]\nname = "x0"\naddress = '
                                 '"10.98.0.1/24"\nzone = "lan"\nnetns = "no-such-ns"\n')
        r3 = netlab.ctl("reload", check=False)
        assert r3.returncode == 1 and "no-such-ns" in r3.stderr
        assert [i["name"] for i in netlab.ctl_json("interfaces")] == ["lan0", "wan0"]
        echo_ok("still")
        echo.close()
    finally:
        run("ip", "netns", "del", dmz, check=False)
