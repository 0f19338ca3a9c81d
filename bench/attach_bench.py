"""The router on attached kernel interfaces versus the kernel's own NAT on the
same veth topology, same run.

    python bench/attach_bench.py [--rounds 3] [--secs 5]

Topology (identical for both): a router namespace holding two veth
interfaces, a LAN host and a WAN server at their other ends.

    ab-lan 192.168.88.2 --- r-lan [ab-rtr] r-wan --- 198.51.100.1 ab-wan

* kernel: ab-rtr forwards (ip_forward) with an nftables masquerade on r-wan.
* router: this project's router in ab-rtr with ``attach`` on both veths (the
  kernel keeps ARP; every IP packet passes the router, see
  docs/deployment.md).

Each round runs both, interleaved; the ratio router/kernel is taken per
round.  Tests: tcp1, tcp4 (iperf3 TCP, receiver Gbit/s) and ping (200 echoes
5 ms apart, average).  Every load is bounded in time; the namespaces and the
processes this script started are removed at the end, by pid.  Needs root,
iperf3, nft, ping.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RTR, LAN, WAN = "ab-rtr", "ab-lan", "ab-wan"
SERVER = "198.51.100.1"
CONFIG = """
[[interface]]
name = "lan0"
attach = "r-lan"
address = "192.168.88.1/24"
zone = "lan"

[[interface]]
name = "wan0"
attach = "r-wan"
address = "198.51.100.2/24"
zone = "wan"

[[nat.masquerade]]
interface = "wan0"

[[firewall.policy]]
from = "lan"
to = "wan"
action = "accept"

[conntrack]
max = 262144
state_file = ""
state_key = "{work}/state.key"

[control]
socket = "{work}/router.sock"

[metrics]
listen = ""
"""


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def ns(name: str, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", name, *cmd, **kw)  # type: ignore[arg-type]


def topology() -> None:
    for n in (RTR, LAN, WAN):
        sh("ip", "netns", "del", n, check=False)
        sh("ip", "netns", "add", n)
        sh("ip", "-n", n, "link", "set", "lo", "up")
    for side, peer in (("r-lan", LAN), ("r-wan", WAN)):
        sh("ip", "link", "add", side, "netns", RTR, "type", "veth", "peer", "name", "eth0",
           "netns", peer)
        sh("ip", "-n", RTR, "link", "set", side, "up")
        sh("ip", "-n", peer, "link", "set", "eth0", "up")
    sh("ip", "-n", LAN, "addr", "add", "192.168.88.2/24", "dev", "eth0")
    sh("ip", "-n", LAN, "route", "add", "default", "via", "192.168.88.1")
    sh("ip", "-n", WAN, "addr", "add", f"{SERVER}/24", "dev", "eth0")


def kernel_on() -> None:
    sh("ip", "-n", RTR, "addr", "add", "192.168.88.1/24", "dev", "r-lan")
    sh("ip", "-n", RTR, "addr", "add", "198.51.100.2/24", "dev", "r-wan")
    ns(RTR, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    ns(RTR, "nft", "add table ip nat; add chain ip nat post { type nat hook postrouting "
                   "priority 100; }; add rule ip nat post oifname r-wan masquerade")


def kernel_off() -> None:
    ns(RTR, "nft", "flush", "ruleset")
    ns(RTR, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    sh("ip", "-n", RTR, "addr", "flush", "dev", "r-lan", "scope", "global")
    sh("ip", "-n", RTR, "addr", "flush", "dev", "r-wan", "scope", "global")


def router_on(work: Path) -> subprocess.Popen[bytes]:
    cfg = work / "router.toml"
    cfg.write_text(CONFIG.replace("{work}", str(work)))
    sock = work / "router.sock"
    sock.unlink(missing_ok=True)
    log = open(work / "router.log", "ab")  # noqa: SIM115
    p = subprocess.Popen(["ip", "netns", "exec", RTR, sys.executable, "-m", "router", "run",
                          "-c", str(cfg)], stdout=log, stderr=log)
    for _ in range(200):
        if sock.exists():
            return p
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"the router did not start: {(work / 'router.log').read_text()[-2000:]}")


def iperf(streams: int, secs: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", WAN, "iperf3", "-s", "-1", "-B", SERVER],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = ns(LAN, "iperf3", "-c", SERVER, "-J", "-t", str(secs), "-P", str(streams),
                 timeout=secs + 30).stdout
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        srv.kill()
        srv.wait()


def ping() -> float:
    out = ns(LAN, "ping", "-q", "-c", "200", "-i", "0.005", SERVER, timeout=30).stdout
    return float(out.rsplit("=", 1)[1].split("/")[1]) * 1000  # avg, µs


def measure(secs: int) -> dict[str, float]:
    ns(LAN, "ping", "-c", "1", "-W", "2", SERVER)  # ARP on both sides
    return {"tcp1": iperf(1, secs), "tcp4": iperf(4, secs), "ping": ping()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="attach-bench-"))
    results: dict[str, list[dict[str, float]]] = {"kernel": [], "router": []}
    try:
        topology()
        for rnd in range(args.rounds):
            kernel_on()
            results["kernel"].append(measure(args.secs))
            kernel_off()
            p = router_on(work)
            try:
                results["router"].append(measure(args.secs))
            finally:
                p.terminate()
                p.wait(timeout=15)
            print(f"round {rnd + 1}: kernel {results['kernel'][-1]} "
                  f"router {results['router'][-1]}", flush=True)
    finally:
        for n in (RTR, LAN, WAN):
            sh("ip", "netns", "del", n, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'test':<6} {'kernel':>16} {'router':>16} {'router/kernel':>22}")
    for t, unit in (("tcp1", "Gbit/s"), ("tcp4", "Gbit/s"), ("ping", "us")):
        k = [r[t] for r in results["kernel"]]
        u = [r[t] for r in results["router"]]
        ratios = [b / a for a, b in zip(k, u, strict=True)]
        print(f"{t:<6} {statistics.median(k):>9.2f} {unit:<6} {statistics.median(u):>9.2f} "
              f"{unit:<6} {statistics.median(ratios):>8.2f} ({min(ratios):.2f}-"
              f"{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
