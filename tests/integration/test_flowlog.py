"""The flow and NAT log, received by a real collector: nfcapd (nfdump's
IPFIX collector, from Debian) in the router's own namespace takes the
records of a short session (ping, HTTP, UDP), and nfdump prints each
mapping's inside and outside address and port, its start and its end.
With the collector gone the router goes on forwarding and counts the
records it could not send; over the rate, records are counted and dropped."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import LAN_HOST, PEERS, ROUTER_WAN, SERVER, NetLab, run

pytestmark = pytest.mark.netns

PORT = 47390
FMT = "fmt:%ts|%te|%pr|%sap|%dap|%xsap|%xdap|%nevt"


@pytest.fixture
def collector(netlab: NetLab) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """The router restarted in a namespace of its own, with nfcapd there on
    its loopback and the config's [ipfix] pointing at it."""
    ns = f"{netlab.lan[:-1]}x"
    run("ip", "netns", "del", ns, check=False)
    run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")
    flows = netlab.workdir / "flows"
    flows.mkdir()
    nfcapd = subprocess.Popen(["ip", "netns", "exec", ns, "nfcapd", "-w", str(flows), "-p",
                               str(PORT), "-b", "127.0.0.1", "-t", "3600"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        netlab.stop_router()
        netlab.config.write_text(netlab.config.read_text() +
                                 f'\n[ipfix]\ncollector = "127.0.0.1:{PORT}"\n')
        netlab.start_router(prefix=("ip", "netns", "exec", ns))
        yield ns, flows, nfcapd
    finally:
        if nfcapd.poll() is None:
            nfcapd.kill()
        nfcapd.wait(timeout=10)
        if netlab.router is not None:
            netlab.stop_router()
        run("ip", "netns", "del", ns, check=False)


def _when(text: str) -> float:
    """nfdump's '2026-12-01 02:20:26.030' as seconds since the epoch."""
    day, frac = text.split(".")
    return time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(frac) / 1000


def _records(netlab: NetLab) -> dict[str, int]:
    st = netlab.ctl_json("status")["ipfix"]
    assert st is not None
    return dict(st["records"])


def _wait(pred: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_nfdump_shows_who_used_which_outside_port_when(
        netlab: NetLab, collector: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    _ns, flows, nfcapd = collector
    netlab.server(netlab.wan, "http", SERVER, 8070)
    netlab.server(netlab.wan, "udp-echo", SERVER, 9070)
    t0 = time.time()
    netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", SERVER)
    netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", "--local-port", "41070",
              f"http://{SERVER}:8070/")
    netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "9070", "x", "41071")
    # Each ends (the lab's short timeouts): a create and a delete record each.
    _wait(lambda: _records(netlab)["sent"] >= 6, "six records sent")
    time.sleep(0.3)
    nfcapd.send_signal(signal.SIGTERM)   # nfcapd writes its file as it ends
    nfcapd.wait(timeout=10)
    (path,) = [p for p in flows.iterdir() if p.name.startswith("nfcapd.")]
    out = run("nfdump", "-r", str(path), "-q", "-N", "-o", FMT).stdout
    rows = [[f.strip() for f in line.split("|")] for line in out.splitlines() if "|" in line]
    names = {"1": "ICMP", "6": "TCP", "17": "UDP"}   # -N prints protocol numbers
    by = {(names.get(r[2], r[2]), r[7]): r for r in rows}
    assert {(p, e) for p, e in by} == {(p, e) for p in ("ICMP", "TCP", "UDP")
                                       for e in ("ADD", "DELETE")}, out
    for proto, inside, outside, dst in (
            ("TCP", f"{LAN_HOST}:41070", f"{ROUTER_WAN}:41070", f"{SERVER}:8070"),
            ("UDP", f"{LAN_HOST}:41071", f"{ROUTER_WAN}:41071", f"{SERVER}:9070")):
        for ev in ("ADD", "DELETE"):
            r = by[(proto, ev)]
            assert (r[3], r[4], r[5], r[6]) == (inside, dst, outside, dst), r
    icmp = by[("ICMP", "DELETE")]
    assert icmp[3].startswith(LAN_HOST) and icmp[5].startswith(ROUTER_WAN), icmp
    assert icmp[4] == f"{SERVER}:8.0", icmp   # echo request: type 8, code 0
    # Start and end: the delete record spans the connection's life.
    for proto in ("ICMP", "TCP", "UDP"):
        add, delete = by[(proto, "ADD")], by[(proto, "DELETE")]
        start, end = _when(add[0]), _when(delete[1])
        # The delete's start is the add's (to the table's 64 ms steps).
        assert abs(_when(delete[0]) - start) < 0.1 and add[1] == add[0], (add, delete)
        assert t0 - 2 <= start <= end <= time.time() + 1, (add, delete)
        assert end - start >= 2    # the short timeouts: at least 2 s of life
    assert _records(netlab)["send_error"] == 0

    # The collector is gone: forwarding goes on, the records are counted.
    for port in range(41080, 41090):
        netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "9070", "x",
                  str(port))
    _wait(lambda: _records(netlab)["send_error"] > 0, "send errors counted")
    page = netlab.ns(netlab.lan, "curl", "-sS", "-m", "5", f"http://{SERVER}:8070/")
    assert page.stdout.startswith(f"you are {ROUTER_WAN}:")
    metrics = netlab.ctl_json("status")["metrics"]
    body = run("ip", "netns", "exec", _ns, "curl", "-sS", f"http://{metrics}/metrics").stdout
    m = re.search(r'router_ipfix_records_total\{outcome="send_error"\} (\d+)', body)
    assert m and int(m.group(1)) > 0, body[-2000:]
    assert "router_ipfix_collector_up 0.0" in body


def test_records_over_the_rate_are_counted(
        netlab: NetLab, collector: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    netlab.config.write_text(netlab.config.read_text().replace(
        f'collector = "127.0.0.1:{PORT}"', f'collector = "127.0.0.1:{PORT}"\nrate = 2'))
    assert netlab.ctl_json("reload")["applied"]
    netlab.server(netlab.wan, "udp-echo", SERVER, 9071)
    sender = ("import socket\n"
              "for p in range(42000, 42020):\n"
              "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              f"  s.bind(('',p)); s.sendto(b'x',('{SERVER}',9071)); s.close()\n")
    netlab.ns(netlab.lan, sys.executable, "-c", sender)
    _wait(lambda: _records(netlab)["rate_limited"] >= 15, "records over the rate")
    assert _records(netlab)["sent"] <= 5
    assert netlab.ctl_json("conntrack", "count")["count"] >= 20   # forwarded all the same
