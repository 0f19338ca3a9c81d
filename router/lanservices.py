"""The LAN's services: DHCP, router advertisements and a caching DNS
forwarder, all from dnsmasq.

dnsmasq is the engine for this on OpenWrt, in libvirt and NetworkManager's
shared connections: one small, maintained program that hands out leases
(with static ones and the lease file across restarts), sends router
advertisements for SLAAC with the DNS server in RDNSS (RFC 8106), answers
DNS from a cache, forwards the rest and serves the names of DHCP clients in
the local domain.  The router runs it in its own network namespace with the
whole configuration on the command line (no file a less privileged user
could touch), keeps it running (``supervise.py``), and on a reload that
changes that command line starts it again (the lease file keeps the leases).

How the services are reached, and who may: DHCP, router solicitations and
neighbour discovery go from the attached LAN interface straight to the
kernel (the ingress program passes them), where dnsmasq listens on the LAN
interfaces only: a WAN interface is never named to it.  DNS, and whatever
else the namespace's kernel answers, reaches it through the router: a
connection to one of the router's addresses from a LAN link, which the
input chain accepted, goes to the host link (``hostlink.py``); one from the
WAN never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from router import safepath
from router.config import Config, Interface
from router.config.model import HOST_LINK
from router.supervise import Supervised

DNSMASQ = "dnsmasq"
RESOLV_MAX = 4096   # bytes of the DHCP client's server list read at most
MAX_UPSTREAM = 8    # servers taken from it at most
RESOLV_POLL = 1.0   # seconds between looks at it


def resolv_file(cfg: Config) -> Path:
    """Where the WAN's DHCP client writes the lease's DNS servers for
    dnsmasq: beside the lease file."""
    return Path(cfg.lan.lease_file).with_name("upstream-resolv.conf")


def read_resolv(path: Path) -> tuple[str, ...]:
    """The DNS servers the WAN's DHCP client wrote (``nameserver`` lines of
    addresses; anything else ignored); none if there is no such file."""
    try:
        with path.open("rb") as f:
            text = f.read(RESOLV_MAX).decode(errors="replace")
    except OSError:
        return ()
    out: list[str] = []
    for line in text.splitlines():
        word = line.split()
        if len(word) == 2 and word[0] == "nameserver":
            with contextlib.suppress(ValueError):
                out.append(str(ip_address(word[1])))
    return tuple(out[:MAX_UPSTREAM])


def argv(cfg: Config, program: str = DNSMASQ, learned: tuple[str, ...] = ()) -> list[str]:
    """dnsmasq's command line for ``cfg``'s LAN links (none: empty);
    ``learned``: the WAN lease's DNS servers, used unless the config names
    its own."""
    links = [i for i in cfg.interfaces if i.lan is not None]
    if not links:
        return []
    lan = cfg.lan
    out = [program, "--keep-in-foreground", "--conf-file=/dev/null", "--log-facility=-",
           "--pid-file=", "--bind-dynamic", "--except-interface=lo", "--no-hosts",
           "--dhcp-authoritative", f"--dhcp-leasefile={lan.lease_file}", "--quiet-ra"]
    for i in links:
        out.append(f"--interface={i.attach}")
    # DNS queries arrive through the host link (dnsmasq answers only on the
    # interfaces it is given); it serves no DHCP there.
    out += [f"--interface={HOST_LINK}", f"--no-dhcp-interface={HOST_LINK}"]
    if lan.dns:
        out += [f"--domain={lan.domain}", f"--local=/{lan.domain}/", "--expand-hosts",
                "--domain-needed", "--bogus-priv", "--stop-dns-rebind",
                "--rebind-localhost-ok", f"--cache-size={lan.cache}"]
        out += [f"--rebind-domain-ok=/{d}/" for d in lan.rebind_ok]
        # Never a resolver file: dnsmasq reads one after dropping its
        # privileges, from where it may not reach.  A change of the lease's
        # servers starts it again.
        out.append("--no-resolv")
        out += [f"--server={s}" for s in (lan.upstream or learned)]
    else:
        out.append("--port=0")
    for i in links:
        out += _link(i, lan.dns)
    return out


def _link(i: Interface, dns: bool) -> list[str]:
    assert i.lan is not None
    out = []
    lease = i.lan.lease
    if i.lan.pool is not None:
        first, last = i.lan.pool
        out.append(f"--dhcp-range=set:{i.name},{first},{last},{i.address.netmask},{lease}")
    for s in i.lan.static:
        out.append(f"--dhcp-host={s.mac},{s.address}" + (f",{s.name}" if s.name else ""))
    if i.lan.static and i.lan.pool is None:  # static leases only: a range for them
        out.append(f"--dhcp-range=set:{i.name},{i.address.network.network_address},static,"
                   f"{i.address.netmask},{lease}")
    if i.address6 is not None and i.lan.ra:
        out += ["--enable-ra",
                f"--dhcp-range=set:{i.name}6,::,constructor:{i.attach},ra-stateless,64,{lease}"]
        if dns:
            # RDNSS and DHCPv6's DNS option: the router's address on the
            # link, which the router delivers to its services (a link-local
            # address would never reach them).
            out.append(f"--dhcp-option=tag:{i.name}6,option6:dns-server,[{i.address6.ip}]")
    return out


class LanServices:
    """dnsmasq for the config's LAN links, supervised and reloaded, and
    started again when the WAN lease's DNS servers change."""

    def __init__(self, cfg: Config, log: Any) -> None:
        self.cfg = cfg
        self.log = log
        self.program = shutil.which(DNSMASQ, path="/usr/sbin:/usr/bin:/sbin:/bin") or DNSMASQ
        self.learned: tuple[str, ...] = ()
        self.proc = Supervised("dnsmasq", self._argv, log)
        self.task: asyncio.Task[None] | None = None
        self.watch: asyncio.Task[None] | None = None
        self.saved: dict[Path, str] = {}  # LAN interfaces' sysctls before, to put back

    def _argv(self) -> list[str]:
        return argv(self.cfg, self.program, self.learned)

    @property
    def wanted(self) -> bool:
        return any(i.lan is not None for i in self.cfg.interfaces)

    def start(self) -> None:
        if self.wanted and self.task is None and self._safe():
            self._no_ra()
            self.task = asyncio.create_task(self.proc.run())
            self.watch = asyncio.create_task(self._watch())

    def _no_ra(self) -> None:
        """The kernel of the router's namespace, on each attached LAN
        interface: it takes no router advertisements (they are dnsmasq's,
        sent from there), and it is a router there (IPv6 ``forwarding`` on
        that interface alone), so that its neighbour advertisements for the
        link's addresses carry the Router flag.  Without it a host that
        checks the router's reachability hears "not a router" and drops
        its default route (RFC 4861 7.2.5), and its IPv6 stops until the
        next advertisement.  ``all.forwarding`` stays as it was: the kernel
        forwards nothing (every IP packet goes to the router anyway).  Both
        are put back at stop.  Where /proc/sys is read-only (a container)
        the container's own settings apply."""
        for i in self.cfg.interfaces:
            if i.lan is None or i.attach is None:
                continue
            for key, value in (("accept_ra", "0"), ("forwarding", "1")):
                path = Path("/proc/sys/net/ipv6/conf", i.attach, key)
                if path not in self.saved:
                    with contextlib.suppress(OSError):
                        self.saved[path] = _sysctl(path, value)

    def _ra_back(self) -> None:
        for path, value in self.saved.items():
            with contextlib.suppress(OSError):
                _sysctl(path, value)
        self.saved.clear()

    async def _watch(self) -> None:
        """Follows the file the WAN's DHCP client writes its servers to."""
        loop = asyncio.get_running_loop()
        while True:
            now = await loop.run_in_executor(None, read_resolv, resolv_file(self.cfg))
            if now != self.learned:
                self.learned = now
                if not self.cfg.lan.upstream:
                    self.log.info("dnsmasq.upstream", servers=list(now))
                    await self.proc.restart()
            await asyncio.sleep(RESOLV_POLL)

    def _safe(self) -> bool:
        """dnsmasq opens the lease file as root, and the DHCP client writes
        the resolver file beside it: only in a directory nobody else may
        change (made if missing)."""
        where = str(Path(self.cfg.lan.lease_file).parent)
        try:
            os.close(safepath.open_dir(where, create=0o755))
        except OSError as e:
            self.log.error("dnsmasq.not_started", reason=f"{where}: {e}",
                           hint="the LAN gets no DHCP, router advertisements or DNS")
            return False
        return True

    async def reload(self, new: Config) -> None:
        """Runs dnsmasq for ``new``: started, stopped, or started again if
        its command line changed."""
        old = self._argv()
        self.cfg = new
        if not self.wanted:
            await self.stop()
        elif self.task is None:
            self.start()
        elif self._argv() != old:
            self._no_ra()
            self.log.info("dnsmasq.reconfigured")
            await self.proc.restart()

    async def stop(self) -> None:
        for t in (self.watch, self.task):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self.task = self.watch = None
        self._ra_back()


def _sysctl(path: Path, value: str) -> str:
    """Sets ``path`` to ``value`` (unless it has it); the value it had."""
    old = path.read_text().strip()
    if old != value:
        path.write_text(value)
    return old
