"""The same flows through the router and through the kernel's own NAT, for
comparing ``routerctl conntrack`` with conntrack-tools field by field.

The kernel twin has the lab's addresses: a client namespace (192.168.77.2,
2001:db8:77::2), a gateway namespace masquerading to 203.0.113.1 with a port
forward of 8080 to the client's port 80 (nftables), and a server namespace
(203.0.113.10, 2001:db8:113::10).  Accounting is on (conntrack -L then
prints packets= and bytes=, as the router does); timestamps are off, as
Debian ships them.  ``open_flows`` opens in a pair of namespaces what the
tests look at:

- UDP 192.168.77.2:40000 -> 203.0.113.10:9000, answered;
- UDP 192.168.77.2:40001 -> 203.0.113.99:9000, never answered;
- TCP 192.168.77.2:40002 -> 203.0.113.10:9001, one line echoed, kept open;
- TCP 203.0.113.10:50000 -> 203.0.113.1:8080, forwarded to 192.168.77.2:80;
- ICMP echo to 203.0.113.10;
- UDP [2001:db8:77::2]:40006 -> [2001:db8:113::10]:9000, answered (routed).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.conftest import PEERS, run

NFT = """
table ip nat {
  chain pre {
    type nat hook prerouting priority -100;
    iifname "kg1" tcp dport 8080 dnat to 192.168.77.2:80
  }
  chain post {
    type nat hook postrouting priority 100;
    oifname "kg1" masquerade
  }
}
table ip6 tracked {
  chain through {
    type filter hook forward priority 0;
    ct state established accept
  }
}
"""

HOLD_TCP = ("import socket,sys,time\n"
            "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
            "s.bind((sys.argv[3],int(sys.argv[4])))\n"
            "s.connect((sys.argv[1],int(sys.argv[2])))\n"
            "s.sendall(b'hello\\n'); s.recv(100); print('ready',flush=True); time.sleep(120)\n")


@contextmanager
def kernel_twin(tag: str) -> Iterator[tuple[str, str, str]]:
    """(client, gateway, server) namespaces around a kernel NAT gateway."""
    names = (f"{tag}c", f"{tag}g", f"{tag}s")
    c, g, s = names
    for n in names:
        run("ip", "netns", "del", n, check=False)
        run("ip", "netns", "add", n)
        run("ip", "-n", n, "link", "set", "lo", "up")
    try:
        run("ip", "link", "add", "kc0", "netns", c, "type", "veth", "peer", "kg0", "netns", g)
        run("ip", "link", "add", "ks0", "netns", s, "type", "veth", "peer", "kg1", "netns", g)
        for ns, dev, a4, a6 in ((c, "kc0", "192.168.77.2/24", "2001:db8:77::2/64"),
                                (g, "kg0", "192.168.77.1/24", "2001:db8:77::1/64"),
                                (g, "kg1", "203.0.113.1/24", "2001:db8:113::1/64"),
                                (s, "ks0", "203.0.113.10/24", "2001:db8:113::10/64")):
            run("ip", "-n", ns, "addr", "add", a4, "dev", dev)
            run("ip", "-n", ns, "addr", "add", a6, "dev", dev, "nodad")
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", c, "route", "add", "default", "via", "192.168.77.1")
        run("ip", "-n", c, "-6", "route", "add", "default", "via", "2001:db8:77::1")
        run("ip", "-n", s, "-6", "route", "add", "2001:db8:77::/64", "via", "2001:db8:113::1")
        run("ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1")
        subprocess.run(["ip", "netns", "exec", g, "nft", "-f", "-"], input=NFT, text=True,
                       check=True, capture_output=True)
        # After nftables: the conntrack module (and its sysctls) is there now.
        run("ip", "netns", "exec", g, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
        yield names
    finally:
        for n in names:
            run("ip", "netns", "del", n, check=False)


class Flows:
    """The processes holding one side's flows open."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, ns: str, *cmd: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        return p

    def ready(self, ns: str, *cmd: str) -> None:
        p = self.spawn(ns, *cmd)
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.strip() == "ready", (cmd, line)

    def end(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)


def open_flows(client: str, server: str) -> Flows:
    f = Flows()
    py = sys.executable
    f.ready(server, py, PEERS, "udp-echo", "203.0.113.10", "9000", "120")
    f.ready(server, py, PEERS, "udp-echo", "2001:db8:113::10", "9000", "120")
    f.ready(server, py, PEERS, "tcp-echo", "203.0.113.10", "9001", "120")
    f.ready(client, py, PEERS, "tcp-echo", "192.168.77.2", "80", "120")
    run("ip", "netns", "exec", client, py, PEERS, "udp-send", "203.0.113.10", "9000", "q",
        "40000")
    run("ip", "netns", "exec", client, py, PEERS, "udp-send", "2001:db8:113::10", "9000",
        "q", "40006")
    run("ip", "netns", "exec", client, py, "-c",
        "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
        "s.bind(('192.168.77.2',40001));s.sendto(b'q',('203.0.113.99',9000))")
    f.ready(client, py, "-c", HOLD_TCP, "203.0.113.10", "9001", "192.168.77.2", "40002")
    f.ready(server, py, "-c", HOLD_TCP, "203.0.113.1", "8080", "203.0.113.10", "50000")
    run("ip", "netns", "exec", client, "ping", "-c1", "-W2", "203.0.113.10")
    time.sleep(0.3)  # the last delayed ACKs
    return f


def normalize(text: str) -> list[str]:
    """conntrack lines with what must differ taken out: the time left, the
    entry id and the ICMP identifier (both chosen at random), use=, the
    tool's name in its closing message; sorted."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("conntrack v", "routerctl:")):
            continue
        line = re.sub(r"^(\[[A-Z]+\] +)?(\S+\s+\d+ )?(\S+\s+\d+) \d+ ", r"\1\2\3 T ", line)
        line = re.sub(r"\bid=\d+", "id=*", line)
        line = re.sub(r"\buse=\d+", "use=*", line)
        out.append(re.sub(r"\s+", " ", line))
    return sorted(out)


def count_message(text: str) -> int:
    """N of '... N flow entries have been shown/updated/deleted.'"""
    m = re.search(r"(\d+) flow entries have been", text)
    assert m, text
    return int(m.group(1))
