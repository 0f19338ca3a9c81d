"""Bounded under attack: floods from the WAN with random sources and a LAN
host opening connections as fast as it can leave the table at its limit,
memory flat, an established connection working and routerctl answering; the
router recovers when the flood stops.  NAT port exhaustion fails new flows
cleanly, with a counter."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LAN_HOST, PEERS, ROUTER_WAN, SERVER, NetLab

pytestmark = pytest.mark.netns
MAX = 2048


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def restart_with(netlab: NetLab, extra: str, **replace: str) -> None:
    netlab.stop_router()
    text = netlab.config.read_text()
    for k, v in replace.items():
        text, n = re.subn(rf"(?m)^{k} = .*$", f"{k} = {v}", text)
        assert n == 1, k
    netlab.config.write_text(text + extra)
    netlab.start_router()


def ctl_time(netlab: NetLab) -> float:
    t0 = time.monotonic()
    netlab.ctl_json("status")
    return time.monotonic() - t0


def flood(netlab: NetLab, ns: str, iface: str, kind: str, dst: str, port: int,
          secs: float) -> subprocess.Popen[str]:
    return netlab.spawn(ns, sys.executable, PEERS, "flood", iface, kind, dst, str(port),
                        str(secs))


FORWARDS = f"""
[[nat.forward]]
interface = "wan0"
port = 8080
to = "{LAN_HOST}"

[[nat.forward]]
interface = "wan0"
protocol = "udp"
port = 5353
to = "{LAN_HOST}"
"""


def test_wan_floods_stay_bounded_and_the_router_recovers(netlab: NetLab) -> None:
    restart_with(netlab, FORWARDS, max=str(MAX), tcp_syn_sent="2", tcp_syn_recv="2",
                 udp="2")
    assert netlab.router is not None
    netlab.server(netlab.lan, "http", LAN_HOST, 8080)
    echo = netlab.echo(8060)
    echo.check("before")
    rss0 = rss_kb(netlab.router.pid)
    peaks = []
    for kind, port in (("syn", 8080), ("udp", 5353), ("syn", 8080)):
        f = flood(netlab, netlab.wan, "wan0", kind, ROUTER_WAN, port, 4)
        time.sleep(1.5)
        # In the middle of the flood: the table is at its limit, no more,
        # the control socket answers, the established connection works.
        count = netlab.ctl_json("conntrack", "count")["count"]
        assert MAX // 2 <= count <= MAX, count
        assert ctl_time(netlab) < 2.0
        echo.check(f"during-{kind}")
        out, _ = f.communicate(timeout=30)
        sent = int(out.strip())
        assert sent > 5 * MAX, sent  # a real flood: far more flows than room
        peaks.append(rss_kb(netlab.router.pid))
    stats = netlab.ctl_json("stats")
    assert stats["counters"]["early_drop"] > MAX
    # Memory: the table was preallocated; three floods leave it flat (the
    # second and third grow nothing noticeable over the first).
    assert peaks[2] - peaks[0] < 8 * 1024, (rss0, peaks)
    # After the flood: the half-open entries expire, new connections work.
    deadline = time.monotonic() + 15
    while netlab.ctl_json("conntrack", "count")["count"] > 50 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert netlab.ctl_json("conntrack", "count")["count"] <= 50
    r = netlab.ns(netlab.wan, "curl", "-sS", "-m", "5", f"http://{ROUTER_WAN}:8080/")
    assert r.stdout.startswith("you are ")
    echo.check("after")


def test_lan_host_opening_connections_as_fast_as_it_can(netlab: NetLab) -> None:
    restart_with(netlab, "", max=str(MAX), udp="2")
    assert netlab.router is not None
    echo = netlab.echo(8061)
    echo.check("before")
    burst = ("import socket,time,random\n"
             "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
             "n=0;end=time.monotonic()+4\n"
             "while time.monotonic()<end:\n"
             "  for _ in range(200):\n"
             f"    s.sendto(b'x',('{SERVER}',random.randrange(1,65536)));n+=1\n"
             "print(n)\n")
    p = netlab.spawn(netlab.lan, sys.executable, "-c", burst)
    time.sleep(1.5)
    # One host holds at most its share of the table (firewall.source_share,
    # half by default): the other half stays free for everyone else.
    assert netlab.ctl_json("conntrack", "count")["count"] <= MAX // 2
    assert ctl_time(netlab) < 2.0
    echo.check("during")
    out, _ = p.communicate(timeout=30)
    assert int(out.strip()) > 5 * MAX
    assert netlab.drops()["source_share"] > 0
    echo.check("after")  # ASSURED: never evicted for the newcomers
    (e,) = netlab.ctl_json("conntrack", "list", "-p", "tcp", "--dport", "8061")
    assert e["assured"]


def test_nat_port_exhaustion_fails_new_flows_cleanly(netlab: NetLab) -> None:
    restart_with(netlab, "", port_min="40000", port_max="40003", preserve_ports="false")
    netlab.server(netlab.wan, "udp-echo", SERVER, 5400)
    results = []
    for sport in range(30001, 30007):
        r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5400", "hi",
                      str(sport), check=False)
        results.append(r)
    ok = [r for r in results if r.returncode == 0]
    # Four external ports, four inside endpoints.
    assert len(ok) == 4, [(r.returncode, r.stdout, r.stderr[-200:]) for r in results]
    assert all(re.search(rf"from {ROUTER_WAN}:4000[0-3] hi", r.stdout) for r in ok)
    # The others are told at once (ICMP administratively prohibited), not
    # left waiting, and counted.
    failed = [r for r in results if r.returncode != 0]
    assert failed and all("Error" in r.stderr for r in failed)
    assert netlab.drops()["nat_no_port"] == len(failed)
    # Existing flows are untouched.
    r = netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "5400", "again",
                  "30001")
    assert "again" in r.stdout
