"""Kernel network interfaces given to the router: ``[[interface]] attach``.

The kernel keeps layer 2 of an attached interface (ARP, neighbour discovery,
the MAC address, the link) and the router everything from layer 3 up.  Two
eBPF programs on the tc hooks (``native/attach.c``) move the packets: every
IP packet arriving on the interface goes to its TUN device, where the router
reads it; every packet the router writes to the TUN device leaves through
the interface, its next hop resolved by the kernel.  So the kernel never
forwards between attached interfaces itself, and needs no firewall.

What the router sets up in its namespace it also takes down at stop (and on
a reload that drops or re-creates the interface):
- a clsact qdisc with the program on the interface and on the TUN device;
- its addresses on the interface, where the kernel answers ARP and
  neighbour solicitations for them (the WAN address lives on the WAN
  interface, as on any home router), and the link up (down again at the
  end if it was down);

- a kernel route for every ``[[route]]`` (IPv4 or IPv6) through a gateway on
  an attached interface, which the kernel needs to resolve that next hop,
  tagged with the router's own route protocol number so that it finds them
  again.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from router.config import Config, Interface
from router.datapath import DatapathError, attach_programs

IFA_F_NODAD = 0x02
IFF_UP = 0x1
# Routes the router installs carry this protocol number (rtnetlink's
# RTPROT_*: values above RTPROT_STATIC's 4 are free for routing daemons; 190
# is no registered one), so that it removes exactly its own.
RTPROT_ROUTER = 190
INGRESS = "ffff:fff2"  # the clsact qdisc's ingress hook


class AttachError(Exception):
    pass


@dataclass
class Attachment:
    """What attaching one interface set up, so that it can be taken down."""

    iface: Interface
    wire: int                  # the kernel interface's index
    tun: int                   # the TUN device's index
    was_up: bool = True        # the interface was up before: left so at the end
    addresses: list[tuple[str, int, int]] = field(default_factory=list)  # (addr, len, family)


def _index(ipr: Any, name: str, what: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise AttachError(f"{what} {name!r} does not exist in the router's network namespace")
    return int(found[0])


def _hook(ipr: Any, index: int, prog_fd: int, name: str) -> None:
    """The clsact qdisc on ``index`` (made anew), with ``prog_fd`` on ingress."""
    with contextlib.suppress(Exception):  # none there: the usual case
        ipr.tc("del", "clsact", index)
    ipr.tc("add", "clsact", index)
    ipr.tc("add-filter", "bpf", index, ":1", fd=prog_fd, name=name, parent=INGRESS,
           classid=1, direct_action=True)


def attach(iface: Interface) -> Attachment:
    """Gives kernel interface ``iface.attach`` to the router through the TUN
    device ``iface.name`` (open already)."""
    assert iface.attach is not None
    with IPRoute() as ipr:
        wire = _index(ipr, iface.attach, f"interface {iface.name}: attach: interface")
        tun = _index(ipr, iface.name, f"interface {iface.name}: TUN device")
        a = Attachment(iface, wire, tun)
        try:
            ingress, egress = attach_programs(wire, tun,
                                               lan=iface.lan is not None or iface.kernel_multicast)
        except DatapathError as e:
            raise AttachError(f"interface {iface.name}: {e}") from None
        try:
            _hook(ipr, wire, ingress, "router-ingress")
            _hook(ipr, tun, egress, "router-egress")
            a.was_up = bool(ipr.link("get", index=wire)[0]["flags"] & IFF_UP)
            ipr.link("set", index=wire, state="up")
            for ip, net, family in _addresses(iface):
                flags = IFA_F_NODAD if family == socket.AF_INET6 else 0
                ipr.addr("replace", index=wire, address=ip, prefixlen=net, family=family,
                         flags=flags)
                a.addresses.append((ip, net, family))
        except Exception as e:
            detach(a)
            raise AttachError(f"interface {iface.name}: attaching {iface.attach} failed: "
                              f"{e}") from None
        finally:  # the kernel holds the programs while they are attached
            os.close(ingress)
            os.close(egress)
    return a


def _addresses(iface: Interface) -> Iterable[tuple[str, int, int]]:
    if not iface.dhcp:  # else the DHCP client's to set (router/wan.py)
        yield str(iface.address.ip), iface.address.network.prefixlen, socket.AF_INET
    if iface.address6 is not None:
        yield str(iface.address6.ip), iface.address6.network.prefixlen, socket.AF_INET6


def detach(a: Attachment) -> None:
    """Takes down what ``attach`` set up; what is gone already is fine."""
    with IPRoute() as ipr:
        for index in (a.wire, a.tun):
            with contextlib.suppress(Exception):  # the device is gone already
                ipr.tc("del", "clsact", index)
        for ip, net, family in a.addresses:
            with contextlib.suppress(Exception):
                ipr.addr("del", index=a.wire, address=ip, prefixlen=net, family=family)
        if not a.was_up:
            with contextlib.suppress(Exception):
                ipr.link("set", index=a.wire, state="down")
    a.addresses.clear()


def sync_routes(cfg: Config | None) -> None:
    """The kernel routes the attached interfaces need: one for every
    ``[[route]]`` (either family) through a gateway on an attached interface
    of ``cfg``, and none other of the router's (none at all without a
    config: at stop)."""
    want = _wanted_routes(cfg) if cfg is not None else set()
    with IPRoute() as ipr:
        index = {w: ipr.link_lookup(ifname=w) for _, _, _, w in want}
        wanted = {(fam, d, g, index[w][0]) for fam, d, g, w in want if index[w]}
        have = set()
        for family in (int(socket.AF_INET), int(socket.AF_INET6)):
            for rt in ipr.get_routes(family=family, proto=RTPROT_ROUTER):
                dst = rt.get_attr("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
                have.add((family, f"{dst}/{rt['dst_len']}", rt.get_attr("RTA_GATEWAY"),
                          rt.get_attr("RTA_OIF")))
        for fam, d, g, oif in have - wanted:
            with contextlib.suppress(Exception):  # gone with its interface
                ipr.route("del", family=fam, dst=d, gateway=g, oif=oif, proto=RTPROT_ROUTER)
        for fam, d, g, oif in wanted - have:
            ipr.route("replace", family=fam, dst=d, gateway=g, oif=oif, proto=RTPROT_ROUTER)


def _wanted_routes(cfg: Config) -> set[tuple[int, str, str, str]]:
    """(family, destination, gateway, kernel interface) of every route
    through a gateway on an attached interface."""
    attached = {i.name: i.attach for i in cfg.interfaces if i.attach is not None}
    want = set()
    for r in cfg.routes:
        if r.gateway is None:
            continue
        name = r.interface or next((i.name for i in cfg.interfaces
                                    if r.gateway in i.address.network), None)
        if name in attached:
            want.add((int(socket.AF_INET), str(r.destination), str(r.gateway), attached[name]))
    for r6 in cfg.routes6:
        if r6.gateway is not None and r6.interface in attached:
            want.add((int(socket.AF_INET6), str(r6.destination), str(r6.gateway),
                      attached[r6.interface]))
    return {(f, d, g, w) for f, d, g, w in want if w is not None}
