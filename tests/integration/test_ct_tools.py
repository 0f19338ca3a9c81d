"""routerctl conntrack against conntrack-tools: the same flows through the
router and through the kernel's own NAT (tests/integration/ctools_lab.py),
each option of conntrack 1.4.7 asked of both, the lines compared field by
field once the time left, ids and ICMP identifiers are taken out."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.conftest import ROOT, NetLab, make_config, namespaces, run
from tests.integration.ctools_lab import (
    Flows,
    count_message,
    kernel_twin,
    normalize,
    open_flows,
)

FORWARD = """
[[nat.forward]]
interface = "wan0"
protocol = "tcp"
port = 8080
to = "192.168.77.2"
to_port = 80
"""


@dataclass
class Twins:
    lab: NetLab
    gateway: str     # the kernel's gateway namespace
    client: str
    server: str

    def kernel(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.gateway, "conntrack", *args, check=False)

    def router(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.lab.ctl("conntrack", *args, check=False)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (network namespaces, /dev/net/tun)")
    tmp = tmp_path_factory.mktemp("ctools")
    tag = f"ct{os.getpid() % 100000}"
    lan, wan = f"{tag}l", f"{tag}w"
    sock = str(tmp / "router.sock")
    cfg = tmp / "router.toml"
    # The default timeouts on both: nothing expires while the lists are compared.
    cfg.write_text(make_config((ROOT / "conf/router.toml").read_text(), lan, wan, sock)
                   + FORWARD)
    lab = NetLab(lan=lan, wan=wan, workdir=tmp, config=cfg, socket=sock)
    flows: list[Flows] = []
    with namespaces(lan, wan):
        try:
            lab.start_router()
            with kernel_twin(f"k{tag}") as (c, g, s):
                flows.append(open_flows(lan, wan))
                flows.append(open_flows(c, s))
                yield Twins(lab, g, c, s)
        finally:
            for f in flows:
                f.end()
            if lab.router is not None:
                lab.stop_router()

LIST_OPTIONS = [
    (), ("-f", "ipv4"), ("-f", "ipv6"), ("-o", "extended"), ("-o", "id"),
    ("-o", "extended,id"), ("-p", "tcp"), ("-p", "udp"), ("-p", "icmp"),
    ("-s", "192.168.77.2"), ("-d", "203.0.113.10"), ("-r", "203.0.113.10"),
    ("-q", "203.0.113.1"), ("-p", "udp", "--dport", "9000"),
    ("-p", "tcp", "--state", "ESTABLISHED"),
    ("-u", "ASSURED"), ("-u", "SEEN_REPLY"), ("-u", "UNREPLIED"), ("-u", "EXPECTED"),
    ("--src-nat",), ("--dst-nat",), ("--any-nat",), ("--src-nat", "203.0.113.1"),
    ("--dst-nat", "192.168.77.2"), ("--dst-nat", "192.168.77.2:80"),
    ("--any-nat", "203.0.113.1"), ("-n", "-g"), ("-m", "0"), ("-m", "1"), ("-m", "0/0xff"),
    ("-w", "0"), ("-w", "3"), ("-f", "ipv6", "-p", "udp"), ("-s", "2001:db8:77::2"),
]


@pytest.mark.parametrize("opts", LIST_OPTIONS, ids=lambda o: " ".join(o) or "plain")
def test_list_matches_conntrack_L(twins: Twins, opts: tuple[str, ...]) -> None:
    k = twins.kernel("-L", *opts)
    r = twins.router("-L", *opts)
    assert k.returncode == 0 and r.returncode == 0, (k.stderr, r.stderr)
    assert normalize(r.stdout) == normalize(k.stdout)
    assert count_message(r.stderr) == count_message(k.stderr)


def test_the_lists_are_not_empty(twins: Twins) -> None:
    """The comparisons above compare something: every kind of flow is there."""
    text = twins.router("-L").stdout + twins.router("-L", "-f", "ipv6").stdout
    for needle in ("dport=9000 packets=1", "[UNREPLIED]", "ESTABLISHED", "dport=8080",
                   "type=8 code=0", "2001:db8:77::2", "[ASSURED]"):
        assert needle in text, needle


def test_get_matches_conntrack_G(twins: Twins) -> None:
    tup = ("-p", "udp", "-s", "192.168.77.2", "-d", "203.0.113.10", "--sport", "40000",
           "--dport", "9000")
    k, r = twins.kernel("-G", *tup), twins.router("-G", *tup)
    assert normalize(r.stdout) == normalize(k.stdout) and len(normalize(k.stdout)) == 1


def test_stats_line_has_conntrack_S_fields(twins: Twins) -> None:
    def fields(text: str) -> list[str]:
        line = text.splitlines()[0]
        assert re.match(r"^cpu=\d+ *\t", line), line
        return re.findall(r"(\w+)=", line.split("\t", 1)[1])
    assert fields(twins.router("-S").stdout) == fields(twins.kernel("-S").stdout)


def test_update_sets_the_timeout_like_conntrack_U(twins: Twins) -> None:
    opts = ("-p", "udp", "-s", "192.168.77.2", "-d", "203.0.113.10", "--dport", "9000",
            "-t", "100")
    k, r = twins.kernel("-U", *opts), twins.router("-U", *opts)
    assert k.returncode == 0 and r.returncode == 0, (k.stderr, r.stderr)
    assert count_message(r.stderr) == count_message(k.stderr) == 1
    assert normalize(r.stdout) == normalize(k.stdout)
    (line,) = twins.router("-L", "-p", "udp", "-d", "203.0.113.10").stdout.splitlines()
    assert int(line.split()[2]) in (99, 100), line
    assert "--timeout" in twins.router("-U", "-p", "udp", "-t", "-1").stderr


def test_options_after_the_subcommand_and_errors_name_the_option(twins: Twins) -> None:
    r = twins.lab.ctl("conntrack", "list", "--json", "-p", "icmp")
    assert r.returncode == 0 and '"proto": "icmp"' in r.stdout
    for opts, word in ((("-u", "BOGUS"), "--status"), (("-w", "lan"), "--fw-zone"),
                       (("--src-nat", "300.1.1.1"), "--src-nat"),
                       (("-o", "xml"), "-o xml"), (("--fw-zone", "dmz"), "--fw-zone")):
        r = twins.router("-L", *opts)
        assert r.returncode != 0 and word in r.stderr, (opts, r.stderr)
    assert len(twins.lab.ctl_json("conntrack", "list", "--fw-zone", "lan")) >= 3
    assert twins.lab.ctl_json("conntrack", "list", "--fw-zone", "wan", "-p", "udp") == []


def _listen(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_events_match_conntrack_E(twins: Twins) -> None:
    """A UDP exchange, then its end: NEW, UPDATE and DESTROY lines as
    conntrack -E -o timestamp,extended,id prints them.  Both are given 2 s
    to live with -U (the kernel reports that as an UPDATE of its own,
    marked [USERSPACE]: left out), and a listing makes the kernel reap it
    at once (its collector would take up to a minute)."""
    opts = ["-o", "timestamp,extended,id", "-p", "udp", "--sport", "40010"]
    kern = _listen(["ip", "netns", "exec", twins.gateway, "timeout", "10", "conntrack", "-E",
                    *opts])
    rout = _listen([sys.executable, "-m", "router.ctl", "-S", twins.lab.socket, "conntrack",
                    "-E", *opts, "-c", "3", "--duration", "10"])
    time.sleep(1.0)
    for ns in (twins.client, twins.lab.lan):
        run("ip", "netns", "exec", ns, sys.executable, str(ROOT / "tests/integration/peers.py"),
            "udp-send", "203.0.113.10", "9000", "x", "40010")
    for side in (twins.kernel, twins.router):
        assert count_message(side("-U", "-f", "ipv4", "-p", "udp", "--sport", "40010", "-t",
                                  "2").stderr) == 1
    time.sleep(2.5)
    twins.kernel("-L")
    r_out, _ = rout.communicate(timeout=20)   # its three events, then it ends
    time.sleep(0.3)
    kern.send_signal(signal.SIGINT)           # conntrack -E ends on ^C
    k_out, _ = kern.communicate(timeout=20)

    def lines(text: str) -> list[str]:
        out = []
        for line in text.splitlines():
            assert re.match(r"^\[\d{10}\.\d{6}\]\t", line), line
            if "[USERSPACE]" not in line:
                out.append(re.sub(r"^\[[0-9.]+\]\t", "", line))
        return normalize("\n".join(out))
    assert lines(r_out) == lines(k_out)
    assert [x.split()[0] for x in lines(r_out)] == ["[DESTROY]", "[NEW]", "[UPDATE]"]


def test_event_masks(twins: Twins) -> None:
    rout = _listen([sys.executable, "-m", "router.ctl", "-S", twins.lab.socket, "conntrack",
                    "-E", "-e", "new,DESTROY", "-p", "udp", "--sport", "40011",
                    "-c", "2", "--duration", "6"])
    time.sleep(1.0)
    run("ip", "netns", "exec", twins.lab.lan, sys.executable,
        str(ROOT / "tests/integration/peers.py"), "udp-send", "203.0.113.10", "9000", "x",
        "40011")
    twins.router("-U", "-p", "udp", "--sport", "40011", "-t", "1")
    out, _ = rout.communicate(timeout=20)
    assert [x.split()[0] for x in out.splitlines()] == ["[NEW]", "[DESTROY]"], out
    bad = twins.router("-E", "-e", "NEW,SOMETIMES", "--duration", "1")
    assert bad.returncode != 0 and "SOMETIMES" in bad.stderr


def test_delete_prints_what_it_deleted_like_conntrack_D(twins: Twins) -> None:
    opts = ("-p", "udp", "-d", "203.0.113.99")
    k, r = twins.kernel("-D", *opts), twins.router("-D", *opts)
    assert count_message(r.stderr) == count_message(k.stderr) == 1
    assert normalize(r.stdout) == normalize(k.stdout)
    assert twins.router("-L", *opts).stdout == ""
