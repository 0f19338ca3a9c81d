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
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ha_lab import ISP, SHARED, Pair, pair, until

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
    watchers, servers = ha.three_flows("60", "30")

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

    results = {name: _result(p, 60) for name, p in watchers.items()}
    print("failover:", json.dumps(results), f"first takeover {took:.2f} s")
    for name, r in results.items():
        assert r["gap"] < GAP_TARGET, (name, r)
        assert r.get("error") is None, (name, r)
    assert results["tcp"]["received"] > 0 and results["forward"]["received"] > 0
    assert len(results["udp"]["seen"]) == 1, results["udp"]  # one external port throughout
    for srv in servers:  # the servers' side saw no reset either
        assert srv.stdout is not None
        line = srv.stdout.readline()
        assert json.loads(line)["error"] is None, line
    drops = ha.ctl("a", "stats")["drops"]
    assert "ha_standby" in drops


def test_a_kernel_gateway_hands_its_connections_to_the_router(tmp_path: Path) -> None:
    """Interop with a real conntrackd: the kernel's NAT gateway (nftables,
    conntrackd FTFW) holds the addresses and the flows; the router, its
    sync peer, caches them; the addresses move to the router, which commits
    them and carries the flows on; the router's table then shows in
    conntrackd's external cache."""
    with pair(tmp_path) as p:
        p.start_kernel("b")
        watchers, servers = p.three_flows("40", "14")
        time.sleep(1)
        kernel = p.sh("rb", "conntrack", "-L", "-p", "udp", "--dport", "9001").stdout
        port = kernel.split("dst=198.51.100.10 sport=9001 dport=")[1].split()[0]
        p.start("a", keepalived=False)

        def cached() -> bool:
            f = flows(p, "a")
            return all(any(k[0] == proto and k[4] == dport for k in f)
                       for proto, dport in (("tcp", 9000), ("udp", 9001), ("tcp", 8080)))
        until(cached, 15, "conntrackd's flows did not reach the router's cache")
        u = next(e for k, e in flows(p, "a").items() if k[:1] == ("udp",) and k[4] == 9001)
        assert u["reply"]["dst"] == SHARED and str(u["reply"]["dport"]) == port, u
        assert p.ctl("a", "ha", "status")["role"] == "standby"

        # The handover, as keepalived would do it: the kernel gateway leaves
        # (its LAN and WAN unplugged, the sync link kept), the addresses
        # come up on the router, the neighbours learn the new MAC.
        for sw_port in ("b-lan", "b-isp"):
            subprocess.run(["ip", "-n", p.ns("sw"), "link", "set", sw_port, "down"], check=True)
        p.sh("rb", "ip", "addr", "del", "192.168.1.1/24", "dev", "eth1")
        p.sh("rb", "ip", "addr", "del", f"{SHARED}/24", "dev", "eth0")
        p.sh("ra", "ip", "addr", "add", "192.168.1.1/24", "dev", "eth1")
        p.sh("ra", "ip", "addr", "add", f"{SHARED}/24", "dev", "eth0")
        for part in ("c1", "isp"):
            p.sh(part, "ip", "neigh", "flush", "all")
        until(lambda: p.ctl("a", "ha", "status")["role"] == "active", 5,
              "the router did not commit on the address")
        assert p.ctl("a", "ha", "status")["last_commit"]["committed"] >= 3

        results = {name: _result(proc, 40) for name, proc in watchers.items()}
        print("handover:", json.dumps(results))
        for name, r in results.items():
            assert r.get("error") is None, (name, r)
        assert results["udp"]["seen"] == [port], results["udp"]  # the kernel's port, kept
        for srv in servers:
            assert srv.stdout is not None
            assert json.loads(srv.stdout.readline())["error"] is None

        # The router's connections, in conntrackd's external cache.
        def in_conntrackd() -> bool:
            ext = p.conntrackd("b", "-e")
            return "dport=9000" in ext and "dport=9001" in ext and "sport=" in ext
        until(in_conntrackd, 10, "the router's table did not reach conntrackd")
        stats = p.conntrackd("b", "-s", "network")
        bad = re.findall(r"(Malformed messages|Wrong protocol version|Malformed payload):\s+(\d+)",
                         stats)
        assert bad and all(n == "0" for _, n in bad), stats  # conntrackd took every message


LB = """
[[loadbalancer]]
name = "web"
interface = "wan0"
address = "198.51.100.10"
protocol = "tcp"
port = 8081

[[loadbalancer.backend]]
address = "192.168.1.10"

[[loadbalancer.backend]]
address = "192.168.1.11"
"""


def test_load_balanced_flows_the_standby_never_heard_of_go_on(tmp_path: Path) -> None:
    """Load-balanced connections opened while the sync link drops
    everything: after the failover the new active knows none of them, and
    they go on anyway — each on the backend it started on, because both
    routers pick backends with one key, and a backend's segment that comes
    first is held back (lb_orphan_reply) for the client's, which reopens
    the connection."""
    with pair(tmp_path) as p:
        p.extra = LB
        p.sh("c1", "ip", "addr", "add", "192.168.1.11/24", "dev", "eth0")
        p.start("a")
        until(lambda: p.active() == "a", 15, "router a did not become active")
        p.start("b")
        until(lambda: p.ctl("b", "ha", "status")["ready"], 15, "router b never got ready")
        servers = [p.serve("c1", "tcp-serve", addr, "8081", "40")
                   for addr in ("192.168.1.10", "192.168.1.11")]
        subprocess.run(["ip", "netns", "exec", p.ns("rb"), "nft", "-f", "-"], check=True,
                       text=True, input="table ip hatest {\n chain in {\n"
                       "  type filter hook input priority 0;\n  udp dport 3780 drop\n }\n}\n")
        watchers = [p.spawn("isp", "tcp-watch", SHARED, "8081", "10") for _ in range(6)]
        time.sleep(2)
        assert not any(k[4] == 8081 for k in flows(p, "b"))  # nothing reached b
        p.crash("a")
        until(lambda: p.active() == "b", 10, "router b did not take over")
        results = [_result(w, 40) for w in watchers]
        print("load balanced:", json.dumps(results))
        for r in results:
            assert r["error"] is None and r["gap"] < 3, r
        # Each connection ended at the backend where it began: one line per
        # connection from the servers, none of them reset.
        ends = []
        for srv in servers:
            assert srv.stdout is not None
            srv.kill()
            out, _ = srv.communicate(timeout=10)
            ends += [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        assert all(e["error"] is None for e in ends), ends
        assert sorted(e["peer"].split(":")[1] for e in ends) == \
            sorted(r["local"].split(":")[1] for r in results)
