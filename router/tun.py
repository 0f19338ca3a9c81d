"""TUN devices: open, configure, move into a namespace, close.

A device is opened with python-pytun (IFF_TUN | IFF_NO_PI), made non-blocking,
and handed to the data plane by file descriptor; this module never reads a
packet.  Links are configured through netlink with pyroute2.  When an interface
names a network namespace, the device moves there and is configured inside it;
the descriptor keeps working after the move, so the namespace can act as the
host on that link.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytun
from pyroute2 import IPRoute, NetNS

from router.attach import AttachError, Attachment, attach, detach
from router.config import Interface

NETNS_DIR = Path("/var/run/netns")
IFA_F_NODAD = 0x02
IN6_ADDR_GEN_MODE_NONE = 1  # linux/if_link.h: no link-local address made

# linux/if_tun.h
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUNSETSTEERINGEBPF = 0x800454E0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20  # Linux 6.2; not in Debian 12's headers
TUN_F_USO6 = 0x40
VNET_HDR_LEN = 10

# What the router can take: checksum offload, TCP segmentation offload for
# both families and UDP segmentation offload (USO4 needs USO6 with it); the
# first set the kernel accepts wins.
OFFLOAD_SETS = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
    TUN_F_CSUM,
)


class TunError(Exception):
    pass


@dataclass
class Tun:
    """An open TUN device."""

    iface: Interface
    dev: Any  # pytun.TunTapDevice: queue 0
    offloads: int = 0  # TUN_F_* the kernel accepted
    more: list[Any] = field(default_factory=list)  # queues 1.. of a multi-queue device
    attachment: Attachment | None = None  # the kernel interface it stands for (attach)

    @property
    def fd(self) -> int:
        return int(self.dev.fileno())

    @property
    def fds(self) -> list[int]:
        """Every queue's descriptor, queue 0 first."""
        return [self.fd, *(int(d.fileno()) for d in self.more)]

    def steer(self, prog_fd: int) -> None:
        """Lets eBPF program ``prog_fd`` choose the queue of every packet the
        kernel writes to this device (steer.c); -1 gives it back to the
        kernel's flow hash."""
        try:
            fcntl.ioctl(self.fd, TUNSETSTEERINGEBPF, struct.pack("i", prog_fd))
        except OSError as e:
            raise TunError(f"interface {self.iface.name}: cannot steer its queues: "
                           f"{e.strerror}") from None

    def close(self) -> None:
        if self.attachment is not None:
            detach(self.attachment)
            self.attachment = None
        for d in self.more:
            d.close()
        self.more.clear()
        self.dev.close()


def _configure(ipr: Any, iface: Interface) -> None:
    found = ipr.link_lookup(ifname=iface.name)
    if not found:
        raise TunError(f"interface {iface.name}: device vanished during setup")
    idx = found[0]
    if iface.attach is not None or iface.host_link:
        # The kernel side of these devices is the router's own namespace,
        # which has no host there: no IPv6 link-local address, and so no
        # neighbour or listener discovery the router would only drop.
        ipr.link("set", index=idx, IFLA_AF_SPEC={"attrs": [("AF_INET6", {"attrs": [
            ("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]})
    ipr.link("set", index=idx, mtu=iface.mtu, txqlen=iface.txqueuelen, state="up")
    if iface.host_address is not None:
        ipr.addr("replace", index=idx, address=str(iface.host_address.ip),
                 prefixlen=iface.host_address.network.prefixlen)
        for net in iface.host_routes:
            ipr.route("replace", dst=str(net), gateway=str(iface.address.ip), oif=idx)
    if iface.host_address6 is not None:
        # No duplicate address detection: the link is a TUN with the router
        # on the other end, and a tentative address would delay the lab.
        ipr.addr("replace", index=idx, address=str(iface.host_address6.ip),
                 prefixlen=iface.host_address6.network.prefixlen, family=socket.AF_INET6,
                 flags=IFA_F_NODAD)
        for net6 in iface.host_routes6:
            ipr.route("replace", dst=str(net6), oif=idx, family=socket.AF_INET6)


def _set_up(iface: Interface) -> None:
    """Moves the device into its namespace, if it has one, and configures it."""
    if iface.netns is not None:
        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=iface.name)[0]
            ipr.link("set", index=idx, net_ns_fd=iface.netns)
        with NetNS(iface.netns) as ns:
            _configure(ns, iface)
    else:
        with IPRoute() as ipr:
            _configure(ipr, iface)


def _enable_offloads(fd: int) -> int:
    """Declares the offloads the router handles; returns the accepted set."""
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    for flags in OFFLOAD_SETS:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    return 0


def open_tun(iface: Interface, vnet_hdr: bool = False, dev: str = "/dev/net/tun",
             queues: int = 1) -> Tun:
    """Creates (or attaches to) the TUN device of ``iface`` and configures it.
    With ``vnet_hdr`` every packet carries a virtio_net_hdr and the kernel may
    hand over GSO super-packets with partial checksums (see io.c).  A
    ``precreated`` device (``ip tuntap add ... user U``, addressed and up) is
    only attached to: that needs no capability at all.  ``dev`` is the tun
    character device to open (a private node works too).  With ``queues`` > 1
    the device is multi-queue (IFF_MULTI_QUEUE) and opened that many times,
    one descriptor per queue, before it moves into its namespace (a queue is
    attached by name, in the namespace the router runs in)."""
    if iface.netns is not None and not (NETNS_DIR / iface.netns).exists():
        raise TunError(f"interface {iface.name}: network namespace {iface.netns!r} does not "
                       f"exist (create it with: ip netns add {iface.netns})")
    flags = pytun.IFF_TUN | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if vnet_hdr else 0)
    if queues > 1:
        flags |= pytun.IFF_MULTI_QUEUE
    try:
        device = pytun.TunTapDevice(name=iface.name, flags=flags, dev=dev)
    except pytun.Error as e:
        hint = ""
        if "Permission denied" in str(e):
            hint = (f" (the process cannot open {dev}: give it access to the node, e.g. a "
                    f"group, or set dataplane.tun_device to a node it owns)")
        elif "Invalid argument" in str(e) and queues > 1:
            hint = (f" (the device exists without multiple queues: create it with 'ip tuntap "
                    f"add dev {iface.name} mode tun multi_queue ...', or set "
                    f"dataplane.queues = 1)")
        elif "Operation not permitted" in str(e):
            hint = (" (creating a device needs CAP_NET_ADMIN; without it, create the device "
                    "beforehand with 'ip tuntap add dev NAME mode tun user USER' and set "
                    "precreated = true)")
        raise TunError(f"interface {iface.name}: cannot open {dev}: {e}{hint}") from None
    tun = Tun(iface, device)
    try:
        for _ in range(queues - 1):
            try:
                tun.more.append(pytun.TunTapDevice(name=iface.name, flags=flags, dev=dev))
            except pytun.Error as e:
                raise TunError(f"interface {iface.name}: cannot open queue {len(tun.fds)} of "
                               f"{queues}: {e}") from None
        for fd in tun.fds:
            os.set_blocking(fd, False)
            # pytun opens the node without O_CLOEXEC: the programs the router
            # runs (the DHCP client, dnsmasq) must not inherit its devices,
            # nor keep one alive after the router closed it.
            os.set_inheritable(fd, False)
            if vnet_hdr:
                tun.offloads = _enable_offloads(fd)
        if not iface.precreated:  # else addresses, MTU and state are its creator's
            _set_up(iface)
        if iface.attach is not None:
            tun.attachment = attach(iface)
    except (TunError, AttachError) as e:
        tun.close()
        if isinstance(e, AttachError):
            raise TunError(str(e)) from None
        raise
    except Exception as e:  # netlink errors come in several types
        tun.close()
        raise TunError(f"interface {iface.name}: setup failed: {e}") from None
    return tun
