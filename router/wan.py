"""An ISP in front: the WAN address of an attached interface by DHCP.

The client is udhcpc (Debian's ``udhcpc`` package, from BusyBox): small,
maintained, made for exactly this, and driven by a script of the router's own
(``udhcpc.sh``) that puts the lease's address and default route on the
interface, and its DNS servers in a file of the router's for the LAN's DNS
forwarder, and touches nothing else of the system (Debian's full clients,
dhclient and dhcpcd, rewrite resolv.conf through their hooks, which a router
in a shared namespace must not).  The router supervises the client
(``supervise.py``: restarted with a growing pause, its lines in the log)
and follows the interface's address by netlink: a new lease is a new
address, which the caller turns into new tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import stat
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from router import safepath
from router.config import Config, Interface
from router.config.model import UNADDRESSED
from router.supervise import Supervised

SCRIPT = Path(__file__).with_name("udhcpc.sh")
UDHCPC = "udhcpc"
POLL = 0.5  # seconds between looks at the interface's address


def check_script(script: Path = SCRIPT) -> None:
    """The client runs ``script`` as root: it must be where only root (or
    this process's user) can change it, or it is not run (UnsafePath)."""
    dfd = safepath.open_dir(str(script.parent))
    try:
        st = os.stat(script.name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        raise safepath.UnsafePath(f"{script}: does not exist") from None
    finally:
        os.close(dfd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) or \
            st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise safepath.UnsafePath(f"{script}: not a regular file of root's (or this "
                                  "process's user) that nobody else may write")


def with_addresses(cfg: Config, learned: dict[str, IPv4Interface]) -> Config:
    """``cfg`` with the addresses of its DHCP interfaces as leased now (an
    interface without a lease is UNADDRESSED)."""
    return dataclasses.replace(cfg, interfaces=tuple(
        dataclasses.replace(i, address=learned.get(i.name, UNADDRESSED)) if i.dhcp else i
        for i in cfg.interfaces))


def interface_address(kernel_iface: str) -> IPv4Interface | None:
    """The global IPv4 address of ``kernel_iface`` now, if any."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=kernel_iface)
        if not found:
            return None
        for a in ipr.get_addr(index=found[0], family=socket.AF_INET):
            if a["scope"] == 0:  # RT_SCOPE_UNIVERSE
                return IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    return None


def forget(kernel_iface: str) -> None:
    """Takes the lease's address and default route off the interface (at
    stop): what the client put there goes with the router."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=kernel_iface)
        if not found:
            return
        idx = found[0]
        for a in ipr.get_addr(index=idx, family=socket.AF_INET):
            if a["scope"] == 0:
                with contextlib.suppress(Exception):
                    ipr.addr("del", index=idx, address=a.get_attr("IFA_ADDRESS"),
                             prefixlen=a["prefixlen"])
        for r in ipr.get_routes(family=socket.AF_INET, oif=idx, proto=16):  # RTPROT_DHCP
            with contextlib.suppress(Exception):
                ipr.route("del", dst="0.0.0.0/0", gateway=r.get_attr("RTA_GATEWAY"), oif=idx,
                          proto=16)


class DhcpClient:
    """udhcpc on the kernel interface of ``iface``, supervised.  The lease's
    DNS servers go to ``resolv`` (for the LAN's DNS forwarder), if given.
    Runs where root is (the router, or its helper process: helpers.py)."""

    def __init__(self, iface: Interface, log: Any, resolv: Path | None = None) -> None:
        assert iface.attach is not None
        self.iface = iface
        self.wire = iface.attach
        self.log = log
        # -f: foreground; -t/-T: five discovers two seconds apart, then -A:
        # a pause of five; -s: the router's script.
        argv = (UDHCPC, "-f", "-i", self.wire, "-s", str(SCRIPT), "-t", "5", "-T", "2", "-A", "5")
        self.client = Supervised("dhcp.client", lambda: argv, log,
                                 env={"ROUTER_RESOLV": str(resolv) if resolv else ""},
                                 interface=iface.name, kernel_interface=self.wire)

    async def run(self) -> None:
        """Until cancelled: the client kept running; at the end its address
        and route come off the interface."""
        try:
            check_script()
        except safepath.UnsafePath as e:
            self.log.error("dhcp.script_unsafe", interface=self.iface.name, reason=str(e),
                           hint="the interface stays without an address")
            return
        try:
            await self.client.run()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Ends the client (it keeps no lease file: the next start asks anew)
        and takes its address and route off the interface."""
        await self.client.stop()
        await asyncio.get_running_loop().run_in_executor(None, forget, self.wire)


async def follow(iface: Interface, on_address: Callable[[str, IPv4Interface | None], None],
                 log: Any) -> None:
    """Until cancelled: calls ``on_address(iface.name, address)`` whenever
    the address of the interface's kernel interface changes (None: it has
    none).  Reading addresses needs no privilege: the router does this
    itself, whoever runs the client."""
    assert iface.attach is not None
    loop = asyncio.get_running_loop()
    address: IPv4Interface | None = None
    while True:
        try:
            now = await loop.run_in_executor(None, interface_address, iface.attach)
        except Exception as e:  # netlink errors come in several types
            log.error("dhcp.address_unreadable", interface=iface.name, reason=str(e))
            now = address
        if now != address:
            address = now
            on_address(iface.name, now)
        await asyncio.sleep(POLL)
