"""High availability, measured: the router pair against keepalived +
conntrackd on the kernel's own NAT, same topology (tests/integration/
ha_lab.py), same run; and the data plane with the sync on against off.

    python bench/ha_bench.py [--rounds 2] [--advert 1] [--secs 5]

failover  For each pair, per round: the active node crashes (unplugged,
          SIGKILL) under a TCP stream, a UDP flow and a port-forwarded TCP
          stream; each flow's longest silence is measured, and the time
          until the other node holds the gateway address.  Kernel pair:
          nftables NAT, conntrackd FTFW, keepalived's notify running
          conntrack-tools' primary-backup steps (commit, flush, resync,
          bulk; on standing by: shorten the timers, ask for a resync).
sync      One router active, its peer standby: iperf3 TCP through it, and
          new UDP flows per second (16 sockets sending to every port
          in turn for SECS seconds, counted by the router's conntrack inserts), with
          [ha] mode ftfw against mode off (both routers running either way).

Prints one JSON object.  Needs root, keepalived, conntrackd, nft, iperf3.
Every load is bounded in time; the namespaces and processes are removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.ha_lab import ISP, SHARED, Pair, pair, until  # noqa: E402

FLOW_SECS = 14


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=60)
    return dict(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))


def failover(kind: str, advert: str) -> dict[str, Any]:
    with pair(Path(tempfile.mkdtemp(prefix="ha-bench-")), advert=advert) as p:
        if kind == "router":
            p.start("a")
            until(lambda: p.active() == "a", 20, "a did not become active")
            p.start("b")
            until(lambda: p.ctl("b", "ha", "status")["ready"], 20, "b not ready")
        else:
            p.start_kernel("a", keepalived=True)
            until(lambda: p.holder() == "a", 20, "a did not take the addresses")
            p.start_kernel("b", keepalived=True)
            time.sleep(2)
        procs, _ = p.three_flows("40", str(FLOW_SECS))
        time.sleep(4)  # the flows are synced
        t0 = time.monotonic()
        p.crash("a")
        until(lambda: p.holds_gateway("b"), 20, "b never took the addresses")
        took = time.monotonic() - t0
        out: dict[str, Any] = {"takeover_s": round(took, 3)}
        for name, proc in procs.items():
            r = _result(proc)
            out[name] = {"gap_s": r["gap"], "error": r.get("error"),
                         **({"ports": len(r["seen"])} if name == "udp" else {})}
        return out


def _iperf(p: Pair) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", p.ns("isp"), "iperf3", "-s", "-1", "-B", ISP],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = p.sh("c1", "iperf3", "-c", ISP, "-t", "5", "-J", timeout=30).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait(timeout=10)


def _new_flows(p: Pair, secs: float) -> float:
    before = p.ctl("a", "stats")["counters"]["insert"]
    script = ("import socket, time\n"
              f"end = time.monotonic() + {secs}\n"
              "socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]\n"
              "port = 1\n"
              "while time.monotonic() < end:\n"
              "    for s in socks:\n"
              f"        s.sendto(b'n', ('{ISP}', port))\n"
              "    port = port % 65535 + 1\n")
    p.sh("c1", "python3", "-c", script, timeout=secs + 30)
    time.sleep(0.5)
    return (p.ctl("a", "stats")["counters"]["insert"] - before) / secs


def sync_cost(mode: str, secs: float) -> dict[str, Any]:
    with pair(Path(tempfile.mkdtemp(prefix="ha-bench-")), mode=mode) as p:
        p.firewall = "new_connections_per_source = 0"  # one client opens them all
        p.conntrack = "max = 1048576"
        if mode == "off":
            p.start("a", keepalived=False)
            p.start("b", keepalived=False)  # there too, idle: the same machine's load
            p.sh("ra", "ip", "addr", "add", "192.168.1.1/24", "dev", "eth1")
            p.sh("ra", "ip", "addr", "add", f"{SHARED}/24", "dev", "eth0")
        else:
            p.start("a")
            until(lambda: p.active() == "a", 20, "a did not become active")
            p.start("b")
            until(lambda: p.ctl("b", "ha", "status")["ready"], 20, "b not ready")
        out: dict[str, Any] = {"tcp_gbps": round(_iperf(p), 3),
                               "new_flows_per_s": round(_new_flows(p, secs))}
        if mode != "off":
            time.sleep(2)
            st = p.ctl("a", "ha", "status")
            out |= {"sync_sent": st["sent"], "sync_bytes": st["sent_bytes"],
                    "peer_cache": p.ctl("b", "ha", "status")["external"]}
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--advert", default="1")
    ap.add_argument("--secs", type=float, default=5.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    rounds: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        rounds.append({"router": failover("router", args.advert),
                       "kernel": failover("kernel", args.advert),
                       "sync_on": sync_cost("ftfw", args.secs),
                       "sync_off": sync_cost("off", args.secs)})

    def med(path: tuple[str, ...]) -> float:
        vals = []
        for r in rounds:
            v: Any = r
            for k in path:
                v = v[k]
            vals.append(float(v))
        return round(statistics.median(vals), 3)

    summary = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "date": time.strftime("%Y-%m-%d"), "advert_int": args.advert,
        "gap_s": {k: {f: med((k, f, "gap_s")) for f in ("tcp", "udp", "forward")}
                  for k in ("router", "kernel")},
        "takeover_s": {k: med((k, "takeover_s")) for k in ("router", "kernel")},
        "sync_on_vs_off": {
            "tcp_gbps": (med(("sync_on", "tcp_gbps")), med(("sync_off", "tcp_gbps"))),
            "new_flows_per_s": (med(("sync_on", "new_flows_per_s")),
                                med(("sync_off", "new_flows_per_s")))},
        "rounds": rounds,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
