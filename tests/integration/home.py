"""The simulated home (scripts/home-lab.sh) as the integration tests use
it: built, the router started on it with conf/home.toml, the LAN machines
given their addresses; then everything taken down, the router's namespace
checked to be as it was.  test_home.py and test_portmap.py share it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.conftest import NetLab, run

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "scripts" / "home-lab.sh")
ROUTER_LAN, ROUTER_LAN6, WEB, WEB6 = "192.168.1.1", "2001:db8:1::1", "198.51.100.80", \
    "2001:db8:100::80"


@dataclass
class Home:
    lab: NetLab
    name: str
    work: Path
    mode: str
    user: str | None  # the router's service user, if it drops to one

    def ns(self, part: str) -> str:
        return f"{self.name}-{part}"

    def script(self, *args: str) -> None:
        run(SCRIPT, "--name", self.name, "--work", str(self.work),
            *(["--macvlan"] if self.mode == "macvlan" else []), *args, timeout=60)

    def client(self, n: int, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lab.ns(self.ns(f"c{n}"), *cmd, check=check)

    def address(self, n: int, family: str = "-4") -> str:
        out = run("ip", "-n", self.ns(f"c{n}"), family, "-o", "addr", "show", "dev", "eth0",
                  "scope", "global").stdout
        m = re.search(r"inet6? ([0-9a-f.:]+)/", out)
        return m.group(1) if m else ""

    def wan_address(self) -> str:
        seen = [str(e["address"]).split("/")[0] for e in self.lab.events("wan.address")
                if e.get("address")]
        return seen[-1] if seen else ""

    def pid(self, tag: str) -> int:
        return int((self.work / f"{tag}.pid").read_text())


def until(what: Callable[[], object], timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(why)
        time.sleep(0.2)


def kernel_state(ns: str) -> dict[str, str]:
    """What the router may change in its namespace besides its own TUN
    devices: rules, routes of every table, addresses, hooks, sysctls."""
    def ip(*cmd: str) -> str:
        return run("ip", "netns", "exec", ns, *cmd).stdout

    def without_tuns(text: str) -> str:
        return "\n".join(line for line in text.splitlines()
                         if not re.search(r"\b(lan0|wan0|rt-self)\b", line))

    return {"rules": ip("ip", "rule") + ip("ip", "-6", "rule"),
            "routes": without_tuns(ip("ip", "route", "show", "table", "all") +
                                   ip("ip", "-6", "route", "show", "table", "all")),
            "addresses": without_tuns(ip("ip", "-br", "addr")),
            # (A macvlan's "noqueue" is listed once any qdisc was set on it.)
            "hooks": "\n".join(q for q in ip("tc", "qdisc").splitlines() if "noqueue" not in q),
            "sysctls": ip("sysctl", "-n", "net.ipv6.conf.eth1.accept_ra",
                          "net.ipv6.conf.eth1.forwarding", "net.ipv6.conf.all.forwarding")}


def _ipv6_ready(ns: str) -> bool:
    routes = run("ip", "-n", ns, "-6", "route").stdout
    addrs = run("ip", "-n", ns, "-6", "addr", "show", "dev", "eth0").stdout
    return "default via" in routes and "tentative" not in addrs


@contextlib.contextmanager
def open_home(mode: str, user: str | None = None,
              edit: Callable[[str], str] = lambda text: text, prefix: str = "hm"
              ) -> Iterator[Home]:
    """The home through ``mode`` ("veth" or "macvlan"), the router dropping
    to ``user`` if given, its config passed through ``edit``; its
    namespaces are named after ``prefix``."""
    # A work directory the service user may reach (it reads the config on
    # reload) in a directory only root may write, as /var/lib/router and
    # /run/router are (the router refuses a socket or state directory in a
    # sticky one such as /tmp); the state directory inside becomes the user's.
    tag = "user" if user else mode
    work = Path(tempfile.mkdtemp(prefix=f"rt-home-{tag}-", dir="/run"))
    work.chmod(0o755)
    name = f"{prefix}{tag[0]}{os.getpid() % 10000}"
    config = work / "router.toml"
    lab = NetLab(lan=f"{name}-c1", wan=f"{name}-isp", workdir=work, config=config,
                 socket=str(work / "router.sock"))
    h = Home(lab, name, work, mode, user)
    h.script("up")
    try:
        text = run(SCRIPT, "--name", name, "--work", str(work), "config").stdout
        config.write_text(edit(text) + (f'\n[service]\nuser = "{user}"\n' if user else ""))
        config.chmod(0o644)
        before = kernel_state(h.ns("rtr"))
        lab.start_router(prefix=("ip", "netns", "exec", h.ns("rtr")))
        h.script("clients")
        until(lambda: h.address(1) and h.address(2) and h.address(1, "-6")
              and h.address(2, "-6") and h.wan_address(), 30,
              f"the LAN machines or the WAN got no address: {lab.log()[-3000:]}")
        # IPv6 usable, not only assigned: the default route from the
        # router's advertisements, and no address still doing DAD (a
        # tentative source is not used, and curl -6 then fails to connect).
        until(lambda: all(_ipv6_ready(h.ns(f"c{n}")) for n in (1, 2)), 30,
              "a LAN machine's IPv6 never became usable (default route, DAD)")
        yield h
        lab.end_peers()
        assert lab.stop_router() == 0
        # Stopping the router leaves its namespace as it found it.
        assert kernel_state(h.ns("rtr")) == before
    finally:
        if lab.router is not None:
            lab.router.kill()
            lab.router.wait()
        h.script("down")
        shutil.rmtree(work, ignore_errors=True)
