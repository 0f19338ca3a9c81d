"""An active/standby pair (tests/integration/ha_lab.py): keepalived moves
the addresses, the connection table travels in conntrackd's protocol.

- Loss on the sync link (an nftables random drop: this kernel has no
  netem) loses nothing with FTFW once the link is good again, and the
  resends are counted.
- The active router crashes (unplugged, SIGKILL): a TCP stream, a UDP flow
  and a port-forwarded connection go on through the other, with no reset,
  the UDP flow on the same external port, the longest silence of each
  measured; the crashed router comes back as standby, resyncs, and the
  same flows survive the failover back.
- A kernel NAT gateway with a real conntrackd hands its live connections
  to the router, and the router's show up in conntrackd's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ha_lab import CLIENT, ISP, SHARED, Pair, pair, until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

GAP_TARGET = 1.5  # seconds, VRRPv3 advert_int 0.2 (the target)


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with pair(tmp_path_factory.mktemp("ha")) as p:
        p.start("a")
        until(lambda: p.active() == "a", 15, "router a did not become active")
        p.start("b")
        until(lambda: p.ctl("b", "ha", "status")["ready"], 15, "router b never got ready")
        yield p


def flows(p: Pair, n: str) -> dict[tuple[Any, ...], Any]:
    """The peer's connections router ``n`` holds, by original tuple."""
    out = {}
    for e in p.ctl(n, "ha", "cache")["entries"]:
        o = e["original"]
        out[(e["proto"], o["src"], o["dst"], o.get("sport"), o.get("dport"))] = e
    return out


def table(p: Pair, n: str) -> set[tuple[Any, ...]]:
    return {(e["proto"], e["original"]["src"], e["original"]["dst"],
             e["original"].get("sport"), e["original"].get("dport"))
            for e in p.ctl(n, "conntrack", "list")}


def test_ftfw_recovers_from_loss_on_the_sync_link(ha: Pair) -> None:
    before_a = ha.ctl("a", "ha", "status")
    before_b = ha.ctl("b", "ha", "status")
    rules = ("table ip hatest {\n chain in {\n  type filter hook input priority 0;\n"
             "  udp dport 3780 numgen random mod 100 < 30 drop\n }\n}\n")
    subprocess.run(["ip", "netns", "exec", ha.ns("rb"), "nft", "-f", "-"], input=rules,
                   text=True, check=True)
    try:
        # 300 short UDP flows through router a while a third of the sync
        # datagrams towards b are dropped.
        ha.serve("isp", "udp-serve", ISP, "7000", "30")
        script = ("import socket\n"
                  "for i in range(300):\n"
                  "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "    s.bind(('', 40000 + i))\n"
                  f"    s.sendto(b'x', ('{ISP}', 7000))\n"
                  "    s.close()\n")
        ha.sh("c1", "python3", "-c", script)
        time.sleep(1.5)
    finally:
        ha.sh("rb", "nft", "delete", "table", "ip", "hatest")
    want = {k for k in table(ha, "a") if k[4] == 7000}
    assert len(want) == 300

    def caught_up() -> bool:
        have = {k for k in flows(ha, "b") if k[4] == 7000}
        return have == want
    until(caught_up, 15, "router b's cache did not catch up after the loss")
    a, b = ha.ctl("a", "ha", "status"), ha.ctl("b", "ha", "status")
    assert b["lost"] > before_b["lost"], b
    assert a["resent"] > before_a["resent"], a
    assert b["nacks_sent"] > before_b["nacks_sent"], b
    assert a["unacked"] == 0 or a["lag"] < 2, a


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, out
    return dict(json.loads(lines[-1]))


def test_failover_both_ways_keeps_tcp_udp_and_forwarded_flows(ha: Pair) -> None:
    srv_tcp = ha.serve("isp", "tcp-serve", ISP, "9000", "60")
    ha.serve("isp", "udp-serve", ISP, "9001", "60")
    srv_fwd = ha.serve("c1", "tcp-serve", CLIENT, "8080", "60")
    secs = "30"
    tcp = ha.spawn("c1", "tcp-watch", ISP, "9000", secs)
    udp = ha.spawn("c1", "udp-watch", ISP, "9001", secs)
    fwd = ha.spawn("isp", "tcp-watch", SHARED, "8080", secs)

    def synced(n: str) -> bool:
        f = flows(ha, n)
        return all(any(k[0] == proto and k[4] == port for k in f)
                   for proto, port in (("tcp", 9000), ("udp", 9001), ("tcp", 8080)))
    until(lambda: synced("b"), 10, "the flows did not reach router b")
    time.sleep(1)

    # One way: a crashes, b takes over.
    t0 = time.monotonic()
    ha.crash("a")
    until(lambda: ha.active() == "b", 10, "router b did not take over")
    took = time.monotonic() - t0
    commit = ha.ctl("b", "ha", "status")["last_commit"]
    assert commit["committed"] >= 3, commit
    time.sleep(2)

    # a comes back as standby and resyncs from b.
    ha.revive("a")
    until(lambda: ha.ctl("a", "ha", "status")["ready"], 15, "router a never got ready")
    until(lambda: synced("a"), 10, "the flows did not come back to router a")
    assert ha.ctl("a", "ha", "status")["role"] == "standby"
    time.sleep(1)

    # The other way: b crashes, a takes over.
    ha.crash("b")
    until(lambda: ha.active() == "a", 10, "router a did not take over")

    results = {name: _result(p, 60) for name, p in (("tcp", tcp), ("udp", udp),
                                                    ("forward", fwd))}
    print("failover:", json.dumps(results), f"first takeover {took:.2f} s")
    for name, r in results.items():
        assert r["gap"] < GAP_TARGET, (name, r)
        assert r.get("error") is None, (name, r)
    assert results["tcp"]["received"] > 0 and results["forward"]["received"] > 0
    assert len(results["udp"]["seen"]) == 1, results["udp"]  # one external port throughout
    for srv in (srv_tcp, srv_fwd):  # the servers' side saw no reset either
        assert srv.stdout is not None
        line = srv.stdout.readline()
        assert json.loads(line)["error"] is None, line
    drops = ha.ctl("a", "stats")["drops"]
    assert "ha_standby" in drops
