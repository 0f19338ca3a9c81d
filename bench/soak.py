"""Soak: mixed traffic through the router with a reload every few seconds,
for a bounded time, sampling the router's RSS, open file descriptors and
table size.  They must stay flat.

    bash bench/soak [--duration SECONDS] [--reload-every SECONDS] [--queues N|loop]

Every fourth reload adds or removes a third interface (in a namespace of its
own), which stops and restarts the data plane's worker threads under traffic;
the number of threads is sampled too and must stay flat.

Root; builds its own lab (namespaces soak<pid>l / soak<pid>w) from
conf/router.toml (dual-stack: IPv4 and IPv6 traffic, fragments included)
and removes it afterwards.  Prints one line per sample and
a verdict, and writes every sample to bench/results/<time>-soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv/bin/python")
PEERS = str(ROOT / "tests/integration/peers.py")
SERVER = "203.0.113.10"
SERVER6 = "2001:db8:113::10"  # the lab is dual-stack


def sh(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def proc_sample(pid: int) -> tuple[int, int, int]:
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def _config_text(queues: str, lan: str, wan: str, sock: str) -> str:
    """The lab config with the soak's namespaces, socket and data path mode."""
    text = (ROOT / "conf/router.toml").read_text()
    text = text.replace('"rtlab-lan"', f'"{lan}"').replace('"rtlab-wan"', f'"{wan}"')
    text = text.replace('"/run/router/router.sock"', f'"{sock}"')
    text = text.replace('listen = "127.0.0.1:9188"', 'listen = ""')
    text = text.replace('"/var/lib/router/state/conntrack.json"', '""')
    if queues == "loop":
        text = text.replace("[dataplane]\n", "[dataplane]\nworkers = false\n", 1)
    elif queues != "1":
        text = text.replace("[dataplane]\n", f"[dataplane]\nqueues = {int(queues)}\n", 1)
    return text


def _judge(samples: list[dict[str, float]], duration: float, queues: str,
           ipv6_exchanges: list[int]) -> int:
    """Whether memory, descriptors and threads stayed flat; the summary
    printed and saved to bench/results."""
    if len(samples) < 3:
        print("soak: too short to judge")
        return 0
    warm = samples[len(samples) // 4:]  # after the table and caches warmed up
    rss_growth = warm[-1]["rss_kb"] - warm[0]["rss_kb"]
    failed = samples[-1]["reloads_failed"]
    # fds and threads vary by the third interface's device and the executor
    # thread that opens it: judged against the most seen after warm-up.
    fd_growth = warm[-1]["fds"] - max(s["fds"] for s in warm[:len(warm) // 2 + 1])
    thread_growth = warm[-1]["threads"] - max(s["threads"] for s in warm[:len(warm) // 2 + 1])
    flat = (rss_growth < 0.05 * warm[0]["rss_kb"] + 2048 and fd_growth <= 0
            and thread_growth <= 0 and failed == 0)
    summary = {"duration_s": duration, "reloads": samples[-1]["reloads_ok"],
               "reloads_failed": failed, "rss_kb_first": samples[0]["rss_kb"],
               "rss_kb_after_warmup": warm[0]["rss_kb"], "rss_kb_last": warm[-1]["rss_kb"],
               "rss_kb_max": max(s["rss_kb"] for s in samples),
               "fds_first": samples[0]["fds"], "fds_last": samples[-1]["fds"],
               "threads_first": samples[0]["threads"], "threads_last": samples[-1]["threads"],
               "threads_max": max(s["threads"] for s in samples), "queues": queues,
               "conns_max": max(s["conns"] for s in samples),
               "ipv6_fragmented_answered": ipv6_exchanges[1],
               "ipv6_fragmented_failed": ipv6_exchanges[0], "flat": flat}
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}-soak.json").write_text(json.dumps({"summary": summary,
                                                        "samples": samples}, indent=1))
    print(json.dumps(summary))
    print("soak: flat" if flat else "soak: NOT flat (see the samples)")
    return 0 if flat else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--reload-every", type=float, default=3)
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--queues", default="1",
                    help="dataplane.queues, or 'loop' for workers = false")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    tag = f"soak{os.getpid() % 100000}"
    lan, wan, dmz = f"{tag}l", f"{tag}w", f"{tag}d"
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    sock = str(work / "router.sock")
    text = _config_text(args.queues, lan, wan, sock)
    dmz_iface = (f'\n[[interface]]\nname = "dmz0"\naddress = "10.99.0.1/24"\nzone = "dmz"\n'
                 f'netns = "{dmz}"\nhost_address = "10.99.0.2/24"\n'
                 f'host_routes = ["0.0.0.0/0"]\n')
    # Short timeouts so that the table turns over during the soak.
    for k, v in (("udp", 5), ("udp_stream", 10), ("icmp", 5), ("tcp_time_wait", 5),
                 ("tcp_fin_wait", 5), ("tcp_close", 5)):
        text = re.sub(rf"(?m)^{k} = \d+", f"{k} = {v}", text)
    cfg = work / "router.toml"
    cfg.write_text(text)
    procs: list[subprocess.Popen[bytes]] = []
    ipv6_exchanges = [0, 0]  # fragmented IPv6 echoes: failed, answered
    router = None
    samples = []
    try:
        for ns in (lan, wan, dmz):
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        log = open(work / "router.log", "wb")  # noqa: SIM115
        router = subprocess.Popen([PY, "-m", "router", "run", "-c", str(cfg)],
                                  stdout=log, stderr=log)
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        else:
            raise SystemExit("soak: the router did not start")
        ctl = [PY, "-m", "router.ctl", "-S", sock]
        life = str(int(args.duration) + 60)
        for mode, addr, port in (("http", SERVER, "80"), ("udp-echo", SERVER, "53"),
                                 ("udp-echo", SERVER6, "53")):
            p = subprocess.Popen(["ip", "netns", "exec", wan, PY, PEERS, mode, addr, port,
                                  life], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            procs.append(p)
            assert p.stdout is not None
            p.stdout.readline()
        iperf = subprocess.Popen(["ip", "netns", "exec", wan, "iperf3", "-s", "-B", SERVER,
                                  "-p", "5201"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        procs.append(iperf)
        rnd = random.Random(1)
        t0 = time.monotonic()
        end = t0 + args.duration
        next_reload = t0 + args.reload_every
        next_sample = t0
        reloads = 0
        stream: subprocess.Popen[bytes] | None = None
        print(f"{'t(s)':>6} {'rss(KiB)':>9} {'fds':>4} {'thr':>4} {'conns':>6} {'reloads':>7}",
              flush=True)
        while time.monotonic() < end:
            now = time.monotonic()
            if stream is None or stream.poll() is not None:
                # A TCP stream always running, restarted every 20 s.
                stream = subprocess.Popen(["ip", "netns", "exec", lan, "iperf3", "-c", SERVER,
                                           "-p", "5201", "-t", "20", "-b", "200M"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(stream)
            # A burst of short flows: HTTP, UDP, ping.
            sh("ip", "netns", "exec", lan, "curl", "-s", "-m", "2", f"http://{SERVER}/",
               check=False)
            for _ in range(5):
                sh("ip", "netns", "exec", lan, PY, PEERS, "udp-send", SERVER, "53", "q",
                   str(rnd.randrange(20000, 60000)), check=False)
            sh("ip", "netns", "exec", lan, "ping", "-c", "1", "-W", "1", SERVER, check=False)
            # IPv6: a ping and a datagram the host fragments, both ways.
            sh("ip", "netns", "exec", lan, "ping", "-6", "-c", "1", "-W", "1", SERVER6,
               check=False)
            r6 = sh("ip", "netns", "exec", lan, PY, PEERS, "udp-send", SERVER6, "53",
                    "f" * 3000, str(rnd.randrange(20000, 60000)), check=False)
            ipv6_exchanges[r6.returncode == 0 and r6.stdout.rstrip().endswith("f" * 3000)] += 1
            if now >= next_reload:
                # Change a rule that touches nothing of the traffic, and reload;
                # every fourth time add (or then remove) the third interface.
                extra = dmz_iface if (reloads // 4) % 2 == 1 else ""
                cfg.write_text(text + extra +
                               f'\n[[firewall.rule]]\nfrom = "wan"\nprotocol = "udp"\n'
                               f'port = {7000 + reloads % 100}\naction = "drop"\n')
                router.send_signal(signal.SIGHUP)
                reloads += 1
                next_reload = now + args.reload_every
            if now >= next_sample:
                rss, fds, threads = proc_sample(router.pid)
                st = json.loads(sh(*ctl, "--json", "status").stdout)
                s = {"t": round(now - t0, 1), "rss_kb": rss, "fds": fds, "threads": threads,
                     "conns": st["conntrack"]["count"], "reloads_ok": st["reloads"]["ok"],
                     "reloads_failed": st["reloads"]["failed"]}
                samples.append(s)
                print(f"{s['t']:>6} {rss:>9} {fds:>4} {threads:>4} {s['conns']:>6} "
                      f"{s['reloads_ok']:>7}", flush=True)
                next_sample = now + args.sample_every
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if router is not None and router.poll() is None:
            router.send_signal(signal.SIGTERM)
            router.wait(timeout=15)
        for ns in (lan, wan, dmz):
            sh("ip", "netns", "del", ns, check=False)
    return _judge(samples, args.duration, args.queues, ipv6_exchanges)

if __name__ == "__main__":
    sys.exit(main())
