"""Router versus the Linux kernel's own NAT, on the same topology, same run.

    python bench/nat_bench.py [--rounds 3] [--secs 5] [--tests tcp1,tcp4,udp64,ping,crr1,crr4,flood]
                              [--baseline] [--busy-poll US] [--queues 1,loop,2] [--ipfix]

Topology (identical addresses for both):

    bn-lan 192.168.77.2 --- [router] --- 203.0.113.10 bn-wan
                      .1               .1

* kernel: a third namespace bn-rtr forwards between two veth pairs, with an
  nftables masquerade on its WAN side (conntrack active).  bn-wan has no
  route back to the LAN, so traffic only works through the NAT.
* router: this project's router runs with conf/router.toml; its two TUN
  devices are moved into bn-lan and bn-wan.
* fwd (with --baseline): bench/minfwd.c, the smallest TUN forwarder with a
  stateless SNAT (poll, read, write; no conntrack), on the same TUN
  topology: what any userspace forwarder pays in system calls and wakeups.
  --baseline-flags "-o" gives it offloads, "-q 2" two queues and threads.
* router-qN (with --queues 1,N): the router again with dataplane.queues = N
  (multi-queue devices, a worker thread per queue), compared with the
  kernel and with the first --queues value in the same rounds; router-qloop
  (--queues 1,loop): the event loop moving the packets (workers = false).
* router-ipfix (with --ipfix): the router again with the flow log on for
  every connection ([ipfix] events = "all", no rate limit) to a UDP socket
  of this script on loopback: what exporting costs the data path.

Each round runs every configuration once, interleaved, and the ratio
router/kernel is taken per round; the summary shows medians and ranges.  Every
load is bounded in time.  Namespaces and processes are removed at the end, and
only processes this script started are ended, by pid.  Needs root, iperf3,
nft, ping, gcc.

Tests: tcp1/tcp4 iperf3 TCP throughput with 1 or 4 streams; udp64 64-byte
UDP datagrams as fast as iperf3 sends them, counted as packets per second
arriving in the WAN namespace (what the router forwarded); ping 200 echoes
5 ms apart, average and p99; crr1/crr4 TCP connect-request-response-close
per second through NAT with 1 or 4 client processes (bench/crr.c); flood:
the LAN host floods SYNs (bench/synflood.c, as fast as it can send) while
its established connection exchanges a byte every 2 ms, and the longest gap
between answers is the stall (lower is better; the ratio is router/kernel);
flood100: the same at 100 kpps, a load both can be offered (the kernel's
path slows the sender itself to about that, the router's does not); calm:
the probe alone, no flood: the longest gap any exchange has anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAN, RTR, WAN = "bn-lan", "bn-rtr", "bn-wan"
LAN_HOST, SERVER, ROUTER_WAN = "192.168.77.2", "203.0.113.10", "203.0.113.1"


def sh(*cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def nsx(ns: str, *cmd: str, timeout: float = 60,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *cmd, timeout=timeout, check=check)


def cleanup_netns() -> None:
    for ns in (LAN, RTR, WAN):
        sh("ip", "netns", "del", ns, check=False)


def base_netns(with_rtr: bool) -> None:
    cleanup_netns()
    for ns in (LAN, WAN) + ((RTR,) if with_rtr else ()):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")


class Kernel:
    name = "kernel"

    def __enter__(self) -> Kernel:
        base_netns(with_rtr=True)
        sh("ip", "link", "add", "lan0", "netns", LAN, "type", "veth", "peer", "lr", "netns", RTR)
        sh("ip", "link", "add", "wan0", "netns", WAN, "type", "veth", "peer", "wr", "netns", RTR)
        for ns, dev, addr in ((LAN, "lan0", "192.168.77.2/24"), (RTR, "lr", "192.168.77.1/24"),
                              (RTR, "wr", "203.0.113.1/24"), (WAN, "wan0", "203.0.113.10/24")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", LAN, "route", "add", "default", "via", "192.168.77.1")
        nsx(RTR, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nsx(RTR, "nft", "add table ip nat; add chain ip nat post { type nat hook postrouting "
                 "priority 100; }; add rule ip nat post oifname wr masquerade")
        return self

    def __exit__(self, *a: object) -> None:
        cleanup_netns()


class MinFwd:
    """The baseline forwarder on the router's TUN topology."""

    name = "fwd"

    def __enter__(self) -> MinFwd:
        base_netns(with_rtr=False)
        self.proc = subprocess.Popen([MINFWD, *MINFWD_FLAGS, "lan0", "wan0", LAN_HOST,
                                      ROUTER_WAN, "3600"],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("minfwd did not start")
        for ns, dev, addr in ((LAN, "lan0", "192.168.77.2/24"), (WAN, "wan0", "203.0.113.10/24")):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "txqueuelen", "1000", "up")
        sh("ip", "-n", LAN, "route", "add", "default", "dev", "lan0")
        return self

    def __exit__(self, *a: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        cleanup_netns()


class Router:
    def __init__(self, workdir: Path, queues: str = "1", name: str = "router",
                 extra: str = "") -> None:
        self.name = name
        self.extra = extra
        self.queues = queues
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock = str(workdir / "bench.sock")

    def __enter__(self) -> Router:
        base_netns(with_rtr=False)
        text = (ROOT / "conf/router.toml").read_text()
        text = text.replace('"rtlab-lan"', f'"{LAN}"').replace('"rtlab-wan"', f'"{WAN}"')
        text = text.replace('"/run/router/router.sock"', f'"{self.sock}"')
        text = text.replace('listen = "127.0.0.1:9188"', 'listen = ""')
        text = text.replace('"/var/lib/router/state/conntrack.json"', '""')
        text = text.replace('level = "info"', 'level = "warning"')
        # As many entries as the kernel's table here: crr leaves many in TIME_WAIT.
        text = text.replace("max = 65536", "max = 262144")
        # crr measures the connection rate the data path sustains from one
        # client; the per-source rate limit (a policy, 2000/s by default)
        # would measure the limit instead.  flood() puts the default back.
        text = text.replace("[firewall]\n", f"[firewall]\n{NO_RATE_LIMIT}\n", 1)
        self.text = text
        if BUSY_POLL:
            text = text.replace("batch = 64", f"batch = 64\nbusy_poll = {BUSY_POLL}")
        if self.queues == "loop":  # the event loop moves the packets
            text = text.replace("batch = 64", "batch = 64\nworkers = false")
        elif int(self.queues) > 1:
            text = text.replace("batch = 64", f"batch = 64\nqueues = {self.queues}")
        cfg = self.workdir / "bench.toml"
        cfg.write_text(text + self.extra)
        log = open(self.workdir / "router.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "router", "run", "-c", str(cfg)],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("router did not start: "
                                   + (self.workdir / "router.log").read_text())
            time.sleep(0.05)
        return self

    def __exit__(self, *a: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        cleanup_netns()

    def reload(self, text: str) -> None:
        (self.workdir / "bench.toml").write_text(text)
        sh(sys.executable, "-m", "router.ctl", "-S", self.sock, "reload")


NO_RATE_LIMIT = "new_connections_per_source = 0"
CURRENT: Router | None = None  # the router under test, if it is one


def iperf3(client_args: list[str], secs: int) -> dict[str, Any]:
    """One iperf3 run, LAN client to WAN server; checks that the server saw
    the NAT address and returns the client's JSON report."""
    srv = subprocess.Popen(["ip", "netns", "exec", WAN, "iperf3", "-s", "-1", "-J", "-B", SERVER],
                           stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        cli = nsx(LAN, "iperf3", "-c", SERVER, "-t", str(secs), "-J", *client_args,
                  timeout=secs + 30)
        server_out, _ = srv.communicate(timeout=15)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    peer = json.loads(server_out)["start"]["connected"][0]["remote_host"]
    if peer != ROUTER_WAN:
        raise RuntimeError(f"the server saw {peer}, not the NAT address {ROUTER_WAN}")
    report: dict[str, Any] = json.loads(cli.stdout)
    return report


def tcp_streams(secs: int, streams: int) -> dict[str, Any]:
    end = iperf3(["-P", str(streams)], secs)["end"]
    return {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
            "retransmits": end["sum_sent"].get("retransmits", 0)}


def rx_packets(ns: str, dev: str) -> int:
    return int(nsx(ns, "cat", f"/sys/class/net/{dev}/statistics/rx_packets").stdout)


def udp64(secs: int) -> dict[str, Any]:
    before = rx_packets(WAN, "wan0")
    t0 = time.monotonic()
    report = iperf3(["-u", "-l", "64", "-b", "0"], secs)
    elapsed = time.monotonic() - t0 - 0.3  # less iperf3's start-up pause
    after = rx_packets(WAN, "wan0")
    sent = report["end"]["sum"]["packets"]
    return {"kpps": (after - before) / elapsed / 1e3, "offered_kpps": sent / secs / 1e3}


CRR: str = ""
MINFWD: str = ""
MINFWD_FLAGS: list[str] = []


def crr(secs: int, workers: int) -> dict[str, Any]:
    nsx(LAN, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535")
    # Its own session, so that its forked workers end with it.
    srv = subprocess.Popen(["ip", "netns", "exec", WAN, CRR, "server", SERVER, "7000",
                            str(secs), "2"], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "ready":
            raise RuntimeError("crr server did not start")
        out = nsx(LAN, CRR, "client", SERVER, "7000", str(secs), str(workers),
                  timeout=secs + 30).stdout.split()
    finally:
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()
    rate, errors = float(out[0]), int(out[1])
    return {"conn_per_s": rate, "errors": errors}


# An established TCP connection, LAN to WAN, exchanging one byte every 2 ms
# for SECS + 2 seconds: the longest time between two answers is the stall.
PROBE = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
end = time.monotonic() + float(sys.argv[3])
last = time.monotonic(); worst = 0.0; n = 0
while time.monotonic() < end:
    s.sendall(b"x")
    if s.recv(1) != b"x":
        break
    t = time.monotonic(); worst = max(worst, t - last); last = t; n += 1
    time.sleep(0.002)
print(worst * 1000, n, flush=True)
"""
ECHO = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(float(sys.argv[3]))
c, _ = srv.accept()
c.settimeout(float(sys.argv[3]))
while (b := c.recv(64)):
    c.sendall(b)
"""
SYNFLOOD: str = ""


def flood(secs: int, pps: int = 0) -> dict[str, Any]:
    """One LAN host floods SYNs (bench/synflood.c) at closed WAN ports while
    an established connection of the same host exchanges a byte every 2 ms:
    the longest gap between its answers (the stall), against the kernel's."""
    router = CURRENT
    if router is not None:  # its defaults, per-source rate limit included
        router.reload(router.text.replace(NO_RATE_LIMIT + "\n", "", 1))
    srv = subprocess.Popen(["ip", "netns", "exec", WAN, sys.executable, "-c", ECHO, SERVER,
                            "7100", str(secs + 30)])
    try:
        time.sleep(0.3)
        probe = subprocess.Popen(["ip", "netns", "exec", LAN, sys.executable, "-c", PROBE,
                                  SERVER, "7100", str(secs + 2)], stdout=subprocess.PIPE,
                                 text=True)
        time.sleep(1)
        if pps < 0:  # no flood: the probe's own longest gap, for reference
            time.sleep(secs)
            sent = 0
        else:
            sent = int(nsx(LAN, SYNFLOOD, LAN_HOST, SERVER, "20000", str(secs),
                           *([str(pps)] if pps else []), timeout=secs + 30).stdout)
        out, _ = probe.communicate(timeout=secs + 60)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        if router is not None:
            router.reload(router.text)
    stall_ms, answers = out.split()
    return {"stall_ms": float(stall_ms), "answers": int(answers),
            "flood_kpps": sent / secs / 1e3}


def ping(count: int = 200) -> dict[str, Any]:
    r = nsx(LAN, "ping", "-c", str(count), "-i", "0.005", "-W", "1", SERVER,
            timeout=count * 0.05 + 20)
    rtts = [float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    if len(rtts) < count * 0.9:
        raise RuntimeError(f"ping lost too much: {len(rtts)}/{count}")
    rtts.sort()
    return {"avg_us": statistics.fmean(rtts), "p99_us": rtts[int(len(rtts) * 0.99) - 1]}


TESTS = {
    "tcp1": lambda secs: tcp_streams(secs, 1),
    "tcp4": lambda secs: tcp_streams(secs, 4),
    "udp64": udp64,
    "ping": lambda secs: ping(),
    "crr1": lambda secs: crr(secs, 1),
    "crr4": lambda secs: crr(secs, 4),
    "flood": flood,
    "flood100": lambda secs: flood(secs, 100_000),
    "calm": lambda secs: flood(secs, -1),
}
METRIC = {"tcp1": "gbps", "tcp4": "gbps", "udp64": "kpps", "ping": "avg_us",
          "crr1": "conn_per_s", "crr4": "conn_per_s", "flood": "stall_ms",
          "flood100": "stall_ms", "calm": "stall_ms"}
UNIT = {"gbps": "Gbit/s", "kpps": "kpps", "avg_us": "us", "p99_us": "us", "conn_per_s": "/s",
        "stall_ms": "ms"}


def fmt_range(vals: list[float], digits: int) -> str:
    return (f"{statistics.median(vals):.{digits}f} "
            f"({min(vals):.{digits}f}-{max(vals):.{digits}f})")


BUSY_POLL = 0


def print_variants(results: list[dict[str, Any]], tests: list[str], names: list[str]) -> None:
    """Each extra configuration (router-qN, router-ipfix) against the kernel
    and the router, same rounds."""
    for name in names:
        print(f"\n{'test':<6} {name:>26} {name + '/kernel':>20} {name + '/router':>20}")
        for t in tests:
            for m in (METRIC[t], "p99_us") if t == "ping" else (METRIC[t],):
                k = [r[m] for r in results if r["test"] == t and r["config"] == "kernel"]
                u = [r[m] for r in results if r["test"] == t and r["config"] == "router"]
                v = [r[m] for r in results if r["test"] == t and r["config"] == name]
                d = 0 if m == "conn_per_s" else 2
                print(f"{t if m != 'p99_us' else 'p99':<6} {fmt_range(v, d) + ' ' + UNIT[m]:>26} "
                      f"{fmt_range([b / a for a, b in zip(k, v, strict=True)], 2):>20} "
                      f"{fmt_range([b / a for a, b in zip(u, v, strict=True)], 2):>20}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--tests", default="tcp1,tcp4,udp64,ping,crr1,crr4,flood")
    ap.add_argument("--out", type=Path, help="write raw results as JSON here")
    ap.add_argument("--busy-poll", type=int, default=0, metavar="US",
                    help="run the router with dataplane.busy_poll = US")
    ap.add_argument("--baseline", action="store_true",
                    help="also run bench/minfwd.c, a minimal TUN forwarder, each round")
    ap.add_argument("--baseline-flags", default="", metavar="FLAGS",
                    help='flags for minfwd: "-o" offloads, "-q N" queues and threads')
    ap.add_argument("--ipfix", action="store_true",
                    help="also run the router with the flow log on (router-ipfix)")
    ap.add_argument("--queues", default="1", metavar="N[,M...]",
                    help="dataplane.queues of the router; more values run it again with each "
                         "(router-qM), e.g. 1,2; 'loop': the event loop moves the packets")
    args = ap.parse_args()
    queues = args.queues.split(",")
    extra_names = [f"router-q{q}" for q in queues[1:]] + (["router-ipfix"] if args.ipfix else [])
    ipfix_cfg = ""
    if args.ipfix:  # the collector: a socket nobody reads (the kernel drops what overflows)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))  # kept open until the end (main() returns)
        ipfix_cfg = (f'\n[ipfix]\ncollector = "127.0.0.1:{sink.getsockname()[1]}"\n'
                     'events = "all"\nrate = 1000000\n')
    if any(q != "loop" and not (q.isdigit() and int(q) >= 1) for q in queues):
        ap.error("--queues: numbers of queues (1 or more) or 'loop'")
    MINFWD_FLAGS[:] = args.baseline_flags.split()
    global BUSY_POLL
    BUSY_POLL = args.busy_poll
    tests = args.tests.split(",")
    if os.geteuid() != 0:
        print("nat_bench: needs root (network namespaces)", file=sys.stderr)
        return 1

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="natbench.") as tmp:
        global CRR, MINFWD, SYNFLOOD
        CRR = str(Path(tmp) / "crr")
        MINFWD = str(Path(tmp) / "minfwd")
        SYNFLOOD = str(Path(tmp) / "synflood")
        sh("gcc", "-O2", "-Wall", "-Wextra", "-o", CRR, str(ROOT / "bench/crr.c"))
        sh("gcc", "-O2", "-Wall", "-Wextra", "-o", SYNFLOOD, str(ROOT / "bench/synflood.c"))
        sh("gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", MINFWD,
           str(ROOT / "bench/minfwd.c"))
        try:
            for rnd in range(args.rounds):
                cfgs: list[Kernel | Router | MinFwd] = [Kernel(), Router(Path(tmp), queues[0])]
                cfgs += [Router(Path(tmp), q, f"router-q{q}") for q in queues[1:]]
                if args.ipfix:
                    cfgs.append(Router(Path(tmp), queues[0], "router-ipfix", ipfix_cfg))
                if args.baseline:
                    cfgs.append(MinFwd())
                for cfg in cfgs:
                    global CURRENT
                    CURRENT = cfg if isinstance(cfg, Router) else None
                    with cfg:
                        nsx(LAN, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)  # warm up
                        for t in tests:
                            r = TESTS[t](args.secs)
                            results.append({"round": rnd, "config": cfg.name, "test": t, **r})
                            print(f"round {rnd + 1} {cfg.name:<7} {t:<5} "
                                  + " ".join(f"{k}={v:.3f}" if isinstance(v, float)
                                             else f"{k}={v}" for k, v in r.items()),
                                  flush=True)
        finally:
            cleanup_netns()

    print()
    print(f"{'test':<6} {'kernel NAT':>26} {'router':>26} {'router/kernel':>20}")
    for t in tests:
        m = METRIC[t]
        k = [r[m] for r in results if r["test"] == t and r["config"] == "kernel"]
        u = [r[m] for r in results if r["test"] == t and r["config"] == "router"]
        ratios = [b / a for a, b in zip(k, u, strict=True)]
        unit = UNIT[m]
        d = 0 if m == "conn_per_s" else 2
        print(f"{t:<6} {fmt_range(k, d) + ' ' + unit:>26} {fmt_range(u, d) + ' ' + unit:>26} "
              f"{fmt_range(ratios, 2):>20}")
        if t == "ping":
            kp = [r["p99_us"] for r in results if r["test"] == t and r["config"] == "kernel"]
            up = [r["p99_us"] for r in results if r["test"] == t and r["config"] == "router"]
            pr = [b / a for a, b in zip(kp, up, strict=True)]
            print(f"{'p99':<6} {fmt_range(kp, 1) + ' us':>26} {fmt_range(up, 1) + ' us':>26} "
                  f"{fmt_range(pr, 2):>20}")
    if args.baseline:
        print(f"\n{'test':<6} {'minimal forwarder':>26} {'fwd/kernel':>20} {'router/fwd':>20}")
        for t in tests:
            m = METRIC[t]
            k = [r[m] for r in results if r["test"] == t and r["config"] == "kernel"]
            u = [r[m] for r in results if r["test"] == t and r["config"] == "router"]
            f = [r[m] for r in results if r["test"] == t and r["config"] == "fwd"]
            d = 0 if m == "conn_per_s" else 2
            print(f"{t:<6} {fmt_range(f, d) + ' ' + UNIT[m]:>26} "
                  f"{fmt_range([b / a for a, b in zip(k, f, strict=True)], 2):>20} "
                  f"{fmt_range([b / a for a, b in zip(f, u, strict=True)], 2):>20}")
            if t == "ping":
                kp = [r["p99_us"] for r in results if r["test"] == t and r["config"] == "kernel"]
                up = [r["p99_us"] for r in results if r["test"] == t and r["config"] == "router"]
                fp = [r["p99_us"] for r in results if r["test"] == t and r["config"] == "fwd"]
                print(f"{'p99':<6} {fmt_range(fp, 1) + ' us':>26} "
                      f"{fmt_range([b / a for a, b in zip(kp, fp, strict=True)], 2):>20} "
                      f"{fmt_range([b / a for a, b in zip(fp, up, strict=True)], 2):>20}")
    print_variants(results, tests, extra_names)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus "
                       f"kernel {platform.release()}",
            "rounds": args.rounds, "secs": args.secs, "queues": queues}
    print(f"\n{meta['date']} {meta['machine']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
