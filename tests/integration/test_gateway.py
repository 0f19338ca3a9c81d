"""End to end: the router process on real TUN devices between namespaces."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    LAN_HOST,
    PEERS,
    ROUTER_LAN,
    ROUTER_WAN,
    SERVER,
    NetLab,
    path_mtu_transfer,
    run,
)
from tests.packets import IP, TCP, UDP, Raw

pytestmark = pytest.mark.netns


@pytest.fixture(params=[{}, {"workers": False}, {"queues": 2}], ids=["worker", "loop", "2q"])
def dataplane(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every test here runs in each mode of the data path: one worker
    thread (the default), the event loop itself (workers = false), and two
    worker threads over two-queue devices (queues = 2)."""
    return dict(request.param)


def test_data_path_mode(netlab: NetLab, dataplane: dict[str, Any]) -> None:
    """The mode asked for is the mode that runs.  By default (one queue,
    workers, started as root) connection openers have a second queue and
    worker of their own (dataplane.syn_queue)."""
    syn = not dataplane
    want = 0 if dataplane.get("workers") is False else dataplane.get("queues", 1) + syn
    st = netlab.ctl_json("status")
    assert len(st["workers"]) == want and st["queues"] == dataplane.get("queues", 1)
    assert st["syn_queue"] is syn
    assert len(netlab.events("dp.workers_started")) == (1 if want else 0)
    r = netlab.ns(netlab.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)
    assert "2 received" in r.stdout
    for _ in range(20):  # a quiet moment (the hosts send IPv6 solicitations now and then)
        read = sum(w["packets"] for w in netlab.ctl_json("status")["workers"])
        rx = netlab.ctl_json("stats")["counters"]["rx_packets"]
        if read == sum(w["packets"] for w in netlab.ctl_json("status")["workers"]):
            break
    assert rx >= 4 and read == (rx if want else 0)  # every packet read by a worker, or none
    if syn:  # a SYN is read by worker 1; its answer (RST, with ACK) and the rest by worker 0
        before = [w["packets"] for w in netlab.ctl_json("status")["workers"]]
        r = netlab.ns(netlab.lan, sys.executable, "-c",
                      "import socket\n"
                      f"try: socket.create_connection(('{SERVER}', 9), timeout=3)\n"
                      "except ConnectionRefusedError: print('refused')\n")
        assert r.stdout.strip() == "refused"
        after = [w["packets"] for w in netlab.ctl_json("status")["workers"]]
        assert after[1] - before[1] == 1 and after[0] - before[0] >= 1


def test_ping_through_nat_and_to_router(netlab: NetLab) -> None:
    r = netlab.ns(netlab.lan, "ping", "-c", "3", "-i", "0.2", "-W", "2", SERVER)
    assert "3 received" in r.stdout
    assert "ttl=63" in r.stdout  # one hop: the router
    for addr in (ROUTER_LAN, ROUTER_WAN):
        r = netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", addr)
        assert "1 received" in r.stdout and "ttl=64" in r.stdout
    (e,) = netlab.ctl_json("conntrack", "list", "-p", "icmp")
    assert e["original"]["src"] == LAN_HOST and e["reply"]["dst"] == ROUTER_WAN
    assert e["original"]["packets"] == 3 and e["reply"]["packets"] == 3
    # --json after the command, as conntrack-tools users type options.
    after = json.loads(netlab.ctl("conntrack", "list", "-p", "icmp", "--json").stdout)
    assert [x["id"] for x in after] == [e["id"]]


def test_http_through_nat_server_sees_router(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "http", SERVER, 8080)
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "10", f"http://{SERVER}:8080/")
    assert r.stdout.startswith(f"you are {ROUTER_WAN}:"), r.stdout
    # A larger body crosses many segments in both directions.
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "20", "-o", "/dev/null", "-w",
                  "%{size_download}", f"http://{SERVER}:8080/big")
    assert int(r.stdout) > 1_000_000
    lines = netlab.ctl("conntrack", "list", "-p", "tcp").stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("tcp      6 ")
        assert f"src={LAN_HOST} dst={SERVER}" in line
        assert f"src={SERVER} dst={ROUTER_WAN} sport=8080" in line
        assert "[ASSURED]" in line and "[UNREPLIED]" not in line
        assert any(s in line for s in ("TIME_WAIT", "FIN_WAIT", "LAST_ACK", "CLOSE"))
    entries = netlab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "8080")
    big = max(entries, key=lambda e: e["reply"]["bytes"])
    assert big["reply"]["bytes"] > 1_000_000 and big["original"]["packets"] > 10


def test_established_state_shown_while_open(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "http", SERVER, 8081)
    code = f"import socket,time;s=socket.create_connection(('{SERVER}',8081));time.sleep(3)"
    p = netlab.spawn(netlab.lan, sys.executable, "-c", code)
    time.sleep(1)
    (e,) = netlab.ctl_json("conntrack", "list", "--state", "ESTABLISHED")
    assert e["assured"] and e["timeout"] > 400000
    text = netlab.ctl("conntrack", "list", "--state", "established").stdout
    assert "ESTABLISHED" in text and "[ASSURED]" in text
    p.wait(timeout=10)


def test_udp_exchange_and_expiry(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "udp-echo", SERVER, 5353)
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5353", "hello", "40000")
    assert r.stdout.strip() == f"from {ROUTER_WAN}:40000 hello"  # port preserved
    (e,) = netlab.ctl_json("conntrack", "list", "-p", "udp")
    assert e["original"]["sport"] == 40000 and not e["unreplied"]
    (m,) = netlab.ctl_json("nat", "list")
    assert (m["proto"], m["kind"], m["internal"], m["external"], m["connections"]) == (
        "udp", "snat", f"{LAN_HOST}:40000", f"{ROUTER_WAN}:40000", 1)
    assert e["timeout"] <= 3  # the test config's udp timeout
    line = netlab.ctl("conntrack", "list", "-p", "udp").stdout.strip()
    assert line.startswith("udp      17 ") and "[UNREPLIED]" not in line
    assert netlab.ctl("conntrack", "count").stdout.strip() == str(
        len(netlab.ctl_json("conntrack", "list")))
    time.sleep(4)
    assert netlab.ctl_json("conntrack", "list", "-p", "udp") == []
    # The GC removes it from the count too.
    deadline = time.monotonic() + 10
    while int(netlab.ctl("conntrack", "count").stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert int(netlab.ctl("conntrack", "count").stdout) == 0


def test_wan_cannot_reach_lan_without_connection(netlab: NetLab) -> None:
    netlab.server(netlab.lan, "http", LAN_HOST, 8082)
    netlab.ns(netlab.wan, "ip", "route", "add", "192.168.77.0/24", "via", ROUTER_WAN)
    r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "3", f"http://{LAN_HOST}:8082/", check=False)
    assert r.returncode != 0
    r = netlab.ns(netlab.wan, "ping", "-c", "2", "-i", "0.2", "-W", "1", LAN_HOST, check=False)
    assert "0 received" in r.stdout
    assert netlab.drops()["policy"] >= 3
    assert netlab.ctl_json("conntrack", "list") == []
    # Unsolicited traffic to the router's public address reaches nothing.
    r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "2", f"http://{ROUTER_WAN}:8082/",
                  check=False)
    assert r.returncode != 0


def test_ttl_expiry_answered_with_time_exceeded(netlab: NetLab) -> None:
    r = netlab.ns(netlab.lan, "ping", "-c", "1", "-t", "1", "-W", "2", SERVER, check=False)
    assert f"From {ROUTER_LAN}" in r.stdout and "Time to live exceeded" in r.stdout
    assert netlab.drops()["ttl_expired"] == 1


def test_udp_to_closed_port_gets_related_icmp(netlab: NetLab) -> None:
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "9", "x", check=False)
    assert "ConnectionRefusedError" in r.stderr  # port unreachable translated back
    assert netlab.ctl_json("stats")["counters"]["related"] == 1


def test_survives_malformed_burst_and_keeps_forwarding(netlab: NetLab) -> None:
    good = bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=1, dport=2) / Raw(b"ok"))
    bad_csum = bytearray(good)
    bad_csum[10] ^= 0xFF
    short_udp = bytearray(good[:24])
    short_udp[2:4] = struct.pack("!H", 24)
    frames = [
        b"", b"\x45", b"\x60\x00", b"\x00" * 40, b"\xff" * 100,
        good[:10], bytes(bad_csum),
        bytes(IP(src=LAN_HOST, dst=SERVER) / TCP(sport=1, dport=2, flags="SF")),
        bytes(IP(src=LAN_HOST, dst=SERVER, ihl=15) / Raw(b"x" * 10)),
        bytes(IP(src="127.0.0.1", dst=SERVER) / UDP()),
        bytes(IP(src=LAN_HOST, dst=SERVER, flags="MF") / UDP()),
        bytes(IP(src=LAN_HOST, dst=SERVER, id=4321, frag=100, proto=17) / Raw(b"orphan")),
    ] * 30
    netlab.ns(netlab.lan, sys.executable, PEERS, "raw", "lan0",
              *[f.hex() for f in frames])
    time.sleep(0.5)
    assert netlab.router is not None and netlab.router.poll() is None
    drops = netlab.drops()
    for reason in ("short_packet", "bad_ip_checksum", "bad_tcp_flags", "martian_address",
                   "bad_ip_version"):
        assert drops.get(reason, 0) > 0, (reason, drops)
    # Orphan later fragments wait for a first one that never comes, in a
    # bounded pool; the rest are refused.
    assert netlab.ctl_json("stats")["counters"]["fragments_held"] > 0
    r = netlab.ns(netlab.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)
    assert "2 received" in r.stdout
    assert netlab.ctl_json("conntrack", "list", "-p", "tcp") == []


def test_interfaces_status_and_json(netlab: NetLab) -> None:
    netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", SERVER)
    ifs = {i["name"]: i for i in netlab.ctl_json("interfaces")}
    assert ifs["lan0"]["rx_packets"] >= 1 and ifs["wan0"]["tx_packets"] >= 1
    st = netlab.ctl_json("status")
    assert st["conntrack"]["max"] == 65536 and st["interfaces"] == 2
    assert len(st["config_sha256"]) == 64
    text = netlab.ctl("stats").stdout
    assert re.match(r"cpu=0 +\tfound=\d+ invalid=", text), text  # conntrack -S's line
    shown = netlab.ctl("config", "show").stdout
    assert shown.startswith(f"# running config, read from {netlab.config}")
    from router.config import parse
    assert parse(shown.encode()).interfaces == parse(netlab.config.read_bytes()).interfaces


def test_sighup_reload_bad_file_keeps_running_config(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "udp-echo", SERVER, 5354)
    netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5354", "a", "41000")
    good = netlab.config.read_text()
    netlab.config.write_text(good.replace("[[firewall.policy]]", "[[firewall.policy]]\nbogus = 1",
                                          1))
    assert netlab.router is not None
    netlab.router.send_signal(1)  # SIGHUP
    time.sleep(0.5)
    (ev,) = netlab.events("config.rejected")
    assert ev["key"] == "firewall.policy[0].bogus" and ev["line"] and "unknown key" in ev["reason"]
    r = netlab.ctl("reload", check=False)
    assert r.returncode == 1 and "firewall.policy[0].bogus" in r.stderr
    # Still forwarding, and the tracked connection is still there.
    assert len(netlab.ctl_json("conntrack", "list", "-p", "udp")) == 1
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5354", "b", "41001")
    assert r.stdout.strip() == f"from {ROUTER_WAN}:41001 b"
    # A good change applies.
    netlab.config.write_text(good.replace("udp = 3", "udp = 25"))
    r = netlab.ctl("--json", "reload")
    assert json.loads(r.stdout)["applied"] is True
    netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5354", "c", "41002")
    e = [x for x in netlab.ctl_json("conntrack", "list", "-p", "udp")
         if x["original"]["sport"] == 41002]
    assert e and 20 < e[0]["timeout"] <= 25
    assert len(netlab.events("config.reloaded")) == 1


def test_routerctl_without_router_says_so(netlab: NetLab) -> None:
    netlab.stop_router()
    r = netlab.ctl("conntrack", "list", check=False)
    assert r.returncode == 1 and "is the router running?" in r.stderr


FORWARD = """
[[nat.forward]]
interface = "wan0"
protocol = "tcp"
port = 8081
to = "192.168.77.2"
to_port = 8080
"""


def test_port_forward_and_hairpin(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text() + FORWARD)
    netlab.ctl("reload")
    netlab.server(netlab.lan, "http", LAN_HOST, 8080)
    # From the WAN: the LAN server sees the real client.
    r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "5", f"http://{ROUTER_WAN}:8081/")
    assert r.stdout.startswith(f"you are {SERVER}:"), r.stdout
    # From the LAN, to the public address (hairpin): it sees the external address.
    r = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://{ROUTER_WAN}:8081/")
    assert r.stdout.startswith(f"you are {ROUTER_WAN}:"), r.stdout
    maps = netlab.ctl_json("nat", "list")
    fwd = [m for m in maps if m["kind"] == "forward"]
    assert fwd and all(m["internal"] == f"{LAN_HOST}:8080" and
                       m["external"] == f"{ROUTER_WAN}:8081" for m in fwd)
    assert "forward" in netlab.ctl("nat", "list").stdout
    entries = netlab.ctl_json("conntrack", "list", "--dport", "8081")
    assert {e["original"]["src"] for e in entries} == {SERVER, LAN_HOST}
    assert all(e["reply"]["src"] == LAN_HOST and e["reply"]["sport"] == 8080 for e in entries)
    # Other ports stay closed.
    r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "2", f"http://{ROUTER_WAN}:8080/",
                  check=False)
    assert r.returncode != 0


def test_fragmented_datagrams_cross_the_nat(netlab: NetLab) -> None:
    r = netlab.ns(netlab.lan, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "4000", SERVER)
    assert "3 received" in r.stdout, r.stdout
    netlab.server(netlab.wan, "udp-echo", SERVER, 5355)
    big = "b" * 6000
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5355", big, "42000")
    assert r.stdout.strip() == f"from {ROUTER_WAN}:42000 {big}"
    c = netlab.ctl_json("stats")["counters"]
    assert c["fragments"] >= 2 * (3 * 3 + 5), c


LOADBALANCER = """
[[loadbalancer]]
name = "web"
interface = "wan0"
protocol = "tcp"
port = 8088
[[loadbalancer.backend]]
address = "192.168.77.2"
port = 8090
[[loadbalancer.backend]]
address = "192.168.77.2"
port = 8091
"""


def test_load_balancer_spreads_connections(netlab: NetLab) -> None:
    netlab.config.write_text(netlab.config.read_text() + LOADBALANCER)
    netlab.ctl("reload")
    netlab.server(netlab.lan, "http", LAN_HOST, 8090)
    netlab.server(netlab.lan, "http", LAN_HOST, 8091)
    for _ in range(30):
        r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "5", f"http://{ROUTER_WAN}:8088/")
        assert r.stdout.startswith(f"you are {SERVER}:")
    ports = {e["reply"]["sport"] for e in netlab.ctl_json("conntrack", "list", "--dport", "8088")}
    assert ports == {8090, 8091}
    (lb,) = netlab.ctl_json("lb", "list")
    counts = [b["connections"] for b in lb["backends"]]
    assert sum(counts) == 30 and min(counts) > 0
    assert "weight 1" in netlab.ctl("lb", "list").stdout


def test_path_mtu_discovery_through_a_smaller_wan_mtu(netlab: NetLab) -> None:
    netlab.stop_router()
    text = netlab.config.read_text()
    at = text.index("mtu = 1500", text.index('name = "wan0"'))
    netlab.config.write_text(text[:at] + "mtu = 1400" + text[at + len("mtu = 1500"):])
    netlab.start_router()
    # "Fragmentation needed" makes the LAN host lower its segments.
    path_mtu_transfer(netlab, (), "203.0.113.0/24", "1460", SERVER, "9100", ROUTER_WAN, 1400)


def test_prometheus_metrics(netlab: NetLab) -> None:
    netlab.ns(netlab.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)
    addr = netlab.ctl_json("status")["metrics"]
    host, port = addr.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0  # loopback by default
    import urllib.request
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["node_nf_conntrack_entries"] == 1
    assert values["node_nf_conntrack_entries_limit"] == 65536
    assert values["node_nf_conntrack_stat_insert"] >= 1
    assert values['router_interface_tx_packets_total{interface="wan0"}'] >= 2
    assert "router_drops_total" in text and "router_loop_lag_seconds" in text
    assert 'router_reloads_total{result="ok"}' in text
    assert values["router_event_listeners"] == 0
    assert values['router_events_lost_total{type="NEW"}'] == 0
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://{addr}/other", timeout=5)


def test_connections_survive_a_restart(netlab: NetLab) -> None:
    sink = netlab.spawn(netlab.wan, sys.executable, "-c",
                        "import socket\n"
                        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                        f"s.bind(('{SERVER}',9200));s.listen();s.settimeout(40)\n"
                        "print('ready',flush=True)\n"
                        "c,a=s.accept();c.settimeout(40);f=c.makefile()\n"
                        "for line in f:\n"
                        "  print(a[0],a[1],line.strip(),flush=True)\n")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    client = subprocess.Popen(
        ["ip", "netns", "exec", netlab.lan, sys.executable, "-c",
         "import socket,sys\n"
         f"s=socket.create_connection(('{SERVER}',9200),timeout=30)\n"
         "for line in sys.stdin:\n"
         "  s.sendall(line.encode())\n"],
        stdin=subprocess.PIPE, text=True)
    netlab.procs.append(client)
    assert client.stdin is not None
    client.stdin.write("before\n")
    client.stdin.flush()
    first = sink.stdout.readline().split()
    assert first[0] == ROUTER_WAN and first[2] == "before"

    netlab.stop_router()  # SIGTERM: the table goes to the state file
    assert netlab.events("ct.saved")[0]["entries"] >= 1
    netlab.start_router()  # new TUN devices, the table comes back
    (restored,) = netlab.events("ct.restored")
    assert restored["restored"] >= 1 and restored["failed"] == 0

    client.stdin.write("after\n")
    client.stdin.flush()
    second = sink.stdout.readline().split()
    assert second == [first[0], first[1], "after"]  # same connection, same NAT port
    (e,) = netlab.ctl_json("conntrack", "list", "--dport", "9200")
    assert e["state"] == "ESTABLISHED" and e["assured"]


def test_damaged_state_file_is_refused(netlab: NetLab) -> None:
    netlab.stop_router()
    state_file = netlab.workdir / "state" / "conntrack.json"
    state_file.write_text('{"format": "tun-router-conntrack", "version": 99, "entries": []}')
    netlab.start_router()
    (ev,) = netlab.events("ct.state_refused")
    assert "authentication" in ev["reason"]
    assert state_file.with_name("conntrack.json.refused").exists()
    assert netlab.ctl_json("conntrack", "list") == []
    r = netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", SERVER)
    assert "1 received" in r.stdout


def test_sigterm_right_after_start_stops_cleanly(netlab: NetLab) -> None:
    for _ in range(3):
        assert netlab.stop_router() == 0
        netlab.start_router()
    assert netlab.stop_router() == 0
    assert len(netlab.events("router.stopped")) == 4
    assert len(netlab.events("ct.saved")) == 4
    assert not os.path.exists(netlab.socket)


def test_sigterm_while_devices_open_stops_cleanly(netlab: NetLab) -> None:
    """A SIGTERM after the first device is open, while the second is being
    set up (before the event loop runs), is remembered and honoured as a
    clean stop, not the default death by signal."""
    netlab.stop_router()
    before = len(netlab.events("tun.opened"))
    log = open(netlab.workdir / "router.log", "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "router", "run", "-c", str(netlab.config)],
                         stdout=log, stderr=log)
    deadline = time.monotonic() + 20
    while len(netlab.events("tun.opened")) == before and time.monotonic() < deadline:
        time.sleep(0.002)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=15) == 0
    assert netlab.events("router.stopped")[-1:] and netlab.events("router.signal")[-1][
        "signal"] == "SIGTERM"
    assert not os.path.exists(netlab.socket)
    netlab.start_router()  # for the fixture's own stop


def test_conntrack_get_and_delete(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "udp-echo", SERVER, 5356)
    for sport in (43000, 43001):
        netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5356", "x", str(sport))
    e = netlab.ctl_json("conntrack", "get", "-p", "udp", "-s", LAN_HOST, "-d", SERVER,
                        "--sport", "43001", "--dport", "5356")
    assert e["original"]["sport"] == 43001 and e["reply"]["dst"] == ROUTER_WAN
    line = netlab.ctl("conntrack", "get", "-p", "udp", "-s", LAN_HOST, "-d", SERVER,
                      "--sport", "43001", "--dport", "5356").stdout
    assert line.startswith("udp      17 ") and "sport=43001" in line
    r = netlab.ctl("conntrack", "get", "-p", "udp", "-s", LAN_HOST, check=False)
    assert r.returncode == 1 and "missing: dst, sport, dport" in r.stderr
    r = netlab.ctl("conntrack", "delete", check=False)
    assert r.returncode == 1 and "at least one filter" in r.stderr
    r = netlab.ctl("conntrack", "delete", "-p", "udp", "--sport", "43000")
    assert "1 flow entries have been deleted" in r.stderr
    left = netlab.ctl_json("conntrack", "list", "-p", "udp")
    assert [x["original"]["sport"] for x in left] == [43001]
    r = netlab.ctl("conntrack", "get", "-p", "udp", "-s", LAN_HOST, "-d", SERVER,
                   "--sport", "43000", "--dport", "5356", check=False)
    assert r.returncode == 1 and "0 flow entries" in r.stderr


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_busy_poll_spins_only_while_traffic_flows(netlab: NetLab) -> None:
    assert netlab.router is not None
    netlab.config.write_text(netlab.config.read_text().replace(
        "[dataplane]\n", "[dataplane]\nbusy_poll = 300000\n", 1))
    assert netlab.ctl_json("reload")["applied"]
    pid = netlab.router.pid
    c0 = cpu_seconds(pid)
    time.sleep(1.0)
    assert cpu_seconds(pid) - c0 < 0.3  # idle: asleep, as without busy polling
    r = netlab.ns(netlab.lan, "ping", "-c", "20", "-i", "0.05", "-W", "2", SERVER)
    assert "20 received" in r.stdout
    c1 = cpu_seconds(pid)
    # Pings 50 ms apart within a 300 ms window: the loop never slept.
    assert c1 - c0 > 0.5, c1 - c0
    time.sleep(0.5)  # the window closes
    c2 = cpu_seconds(pid)
    time.sleep(1.0)
    assert cpu_seconds(pid) - c2 < 0.3  # asleep again


def test_a_device_deleted_from_outside_is_given_up(netlab: NetLab,
                                                   dataplane: dict[str, Any]) -> None:
    """Someone deletes the LAN device under the router: its reads fail; the
    failure is reported, the router does not spin on it, and the WAN side
    keeps working."""
    assert netlab.router is not None
    run("ip", "-n", netlab.lan, "link", "del", "lan0")
    time.sleep(0.5)
    c0 = cpu_seconds(netlab.router.pid)
    time.sleep(1.0)
    assert cpu_seconds(netlab.router.pid) - c0 < 0.3
    r = netlab.ns(netlab.wan, "ping", "-c", "2", "-i", "0.2", "-W", "2", ROUTER_WAN)
    assert "2 received" in r.stdout
    workers = netlab.ctl_json("status")["workers"]
    if workers:  # each worker gave its lan0 queue up
        assert [w["errors"] for w in workers] == [1] * len(workers)
    else:
        (ev,) = netlab.events("dp.poll_failed")
        assert ev["interface"] == "lan0" and ev["error"] == "File descriptor in bad state"
