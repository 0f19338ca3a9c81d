"""The one importer of the compiled data plane: a checked, typed wrapper.

Every call comes from the event loop thread.  When worker threads run the data
path (``start_workers``), they share the data plane with it: each call here
takes the data plane's lock for its duration (``_c``), and the workers take it
around each batch.  The workers are C threads that never touch Python objects,
and cffi releases the GIL during calls, so neither waits for the other's
interpreter.  Names of
counters, drop reasons, timeouts and TCP states come from the C headers
(``router.native.names``), checked here against the compiled library, so
Python never repeats a list the C side owns.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any

from router.native._rt import ffi, lib
from router.native.names import (
    ASSURED,
    COUNTER_NAMES,
    DROP_NAMES,
    DST_NAT,
    NAT_MAPPED,
    PM_FILTERS,
    PM_MAX,
    SEEN_REPLY,
    SRC_NAT,
    TCP_STATE_NAMES,
    TIMEOUT_DEFAULTS,
    TIMEOUT_NAMES,
)
from router.native.records import CtEntry, Event, TcpWindow

if TYPE_CHECKING:
    from router.tables import Tables


def _names(n: int, fn: Any) -> tuple[str, ...]:
    return tuple(ffi.string(fn(i)).decode() for i in range(n))


# The headers' lists (router.native.names) are what this build was compiled
# from: a stale build or a misread header stops the import here.
_BUILT = {
    "drop reasons": (_names(lib.rt_n_drop_reasons(), lib.rt_drop_name), DROP_NAMES),
    "counters": (_names(lib.rt_n_counters(), lib.rt_counter_name), COUNTER_NAMES),
    "timeouts": (_names(lib.rt_n_timeouts(), lib.rt_timeout_name), TIMEOUT_NAMES),
    "TCP states": (_names(lib.rt_n_tcp_states(), lib.rt_tcp_state_name), TCP_STATE_NAMES),
    "timeout defaults": (tuple(int(lib.rt_timeout_default(i)) for i in range(len(TIMEOUT_NAMES))),
                         tuple(TIMEOUT_DEFAULTS.values())),
    "status bits": ((int(lib.RT_CT_SEEN_REPLY), int(lib.RT_CT_ASSURED), int(lib.RT_CT_SRC_NAT),
                     int(lib.RT_CT_DST_NAT), int(lib.RT_CT_NAT_MAPPED)),
                    (SEEN_REPLY, ASSURED, SRC_NAT, DST_NAT, NAT_MAPPED)),
    "port mapping limits": ((int(lib.RT_PM_MAX), int(lib.RT_PM_FILTERS)), (PM_MAX, PM_FILTERS)),
}
for _what, (_built, _read) in _BUILT.items():
    if _built != _read:
        raise ImportError(f"the compiled data plane's {_what} differ from its headers': "
                          "rebuild it (pip install -e .)")

WORKER_STATS = ("packets", "batches", "wakeups", "errors", "lock_waits", "locked_ns",
                "busy_ns")
SLOT_SIZE = 65536  # the largest IPv4 packet fits any slot
GUARD = 16  # bytes after an exact buffer, checked by process(exact=True)
GUARD_BYTES = bytes([0xA5]) * GUARD
DUMP_CHUNK = 256


def be32(addr: IPv4Address | None) -> int:
    """An address as the C side's rt_be32: network-order bytes in a native int."""
    if addr is None:
        return 0
    return int(struct.unpack("=I", addr.packed)[0])


PM_FREE, PM_FORWARD, PM_TAKEN = lib.RT_PM_FREE, lib.RT_PM_FORWARD, lib.RT_PM_TAKEN


@dataclass(frozen=True)
class Pin:
    """One entry of the data plane's table of mappings LAN hosts asked for
    (``portmap.h``): a NAT44 mapping (``ext_port`` on the address of
    interface ``iface``) or, with an IPv6 ``int_addr``, a pinhole from that
    interface.  ``filters``: the remote peers (network, port 0 = any) that
    may open connections; none means anyone."""

    proto: int
    iface: int
    int_addr: IPv4Address | IPv6Address
    int_port: int
    ext_port: int = 0
    filters: tuple[tuple[IPv4Network | IPv6Network, int], ...] = ()


def _fill_pin(c: Any, e: Pin) -> None:
    c.family = e.int_addr.version
    c.proto = e.proto
    c.iface = e.iface
    c.ext_port = e.ext_port if e.int_addr.version == 4 else 0
    c.int_port = e.int_port
    ffi.memmove(c.int_addr, e.int_addr.packed.ljust(16, b"\0"), 16)
    if len(e.filters) > PM_FILTERS:
        raise DatapathError(f"more than {PM_FILTERS} filters")
    c.n_filters = len(e.filters)
    for i, (net, port) in enumerate(e.filters):
        ffi.memmove(c.filters[i].addr, net.network_address.packed.ljust(16, b"\0"), 16)
        c.filters[i].plen = net.prefixlen
        c.filters[i].port = port


def _bpf(what: str, loader: Any, arg: int) -> int:
    """The descriptor of eBPF program ``what`` from ``loader(arg, log, size)``;
    needs CAP_BPF; raises DatapathError with the errno and the verifier's log."""
    log = ffi.new("char[]", 4096)
    fd = int(loader(arg, log, 4096))
    if fd < 0:
        detail = ffi.string(log).decode(errors="replace").strip()
        raise DatapathError(f"cannot load the {what}: {os.strerror(-fd)}"
                            + (f" ({detail})" if detail else ""))
    return fd


def steering_program(syn_queue: int) -> int:
    """The queue-steering program (steer.c): TCP segments opening a
    connection to queue ``syn_queue``, the rest to queue 0."""
    return _bpf("steering program", lib.rt_steer_load, syn_queue)


def flow_steering_program() -> int:
    """The queue-steering program for several queues (steer.c): each flow on
    the queue of a hash of its addresses and ports."""
    return _bpf("flow steering program",
                lambda _unused, log, size: lib.rt_steer_flow_load(log, size), 0)


def attach_programs(wire: int, tun: int, lan: bool = False) -> tuple[int, int]:
    """The two programs of an attached interface (attach.c), for the ingress
    of kernel interface ``wire`` and of TUN device ``tun`` (interface
    indexes); on a LAN link (``lan``) multicast stays the kernel's."""
    ingress = _bpf("program of an attached interface",
                   lambda t, log, size: lib.rt_attach_ingress_load(t, int(lan), log, size), tun)
    try:
        return ingress, _bpf("program of an attached interface", lib.rt_attach_egress_load, wire)
    except DatapathError:
        os.close(ingress)
        raise


class DatapathError(Exception):
    pass


class CaptureFilterError(ValueError):
    """A capture filter libpcap would not compile (its reason)."""


NEEDS_CSUM = int(lib.RT_PKT_NEEDS_CSUM)
CSUM_VALID = int(lib.RT_PKT_CSUM_VALID)
GSO_NONE = int(lib.RT_GSO_NONE)
GSO_TCPV4 = int(lib.RT_GSO_TCPV4)
GSO_TCPV6 = int(lib.RT_GSO_TCPV6)
GSO_UDP_L4 = int(lib.RT_GSO_UDP_L4)
GSO_ECN = int(lib.RT_GSO_ECN)
OFFLOAD_FIELDS = ("csum_flags", "gso_type", "gso_size", "hdr_len", "csum_start", "csum_offset")


@dataclass(frozen=True, slots=True)
class Offload:
    """A packet's virtio_net_hdr: partial checksum and GSO metadata."""

    csum_flags: int = 0
    gso_type: int = GSO_NONE
    gso_size: int = 0
    hdr_len: int = 0
    csum_start: int = 0
    csum_offset: int = 0


NO_OFFLOAD = Offload()


@dataclass(frozen=True, slots=True)
class Result:
    """What happened to one packet given to ``process()``."""

    out_iface: int  # -1 when nothing is sent
    data: bytes     # the packet as sent (empty when nothing is sent)
    reason: str     # drop reason, "none" when forwarded
    offload: Offload = NO_OFFLOAD  # metadata the packet leaves with


@dataclass(frozen=True, slots=True)
class SweepResult:
    visited: int
    expired: int
    wrapped: bool
    count: int




def _addr(raw: Any, family: int) -> str:
    b = bytes(raw)
    return str(IPv4Address(b[:4])) if family == 4 else str(IPv6Address(b))


def _ct_entry(e: Any) -> CtEntry:
    fam = int(e.family)
    return CtEntry(
        slot=int(e.slot),
        family=fam,
        proto=int(e.proto),
        state=TCP_STATE_NAMES[e.state] if e.proto == 6 else None,
        status=int(e.status),
        src=(_addr(e.src[0], fam), _addr(e.src[1], fam)),
        dst=(_addr(e.dst[0], fam), _addr(e.dst[1], fam)),
        sport=(int(e.sport[0]), int(e.sport[1])),
        dport=(int(e.dport[0]), int(e.dport[1])),
        timeout_ms=int(e.timeout_ms),
        age_ms=int(e.age_ms),
        packets=(int(e.packets[0]), int(e.packets[1])),
        bytes=(int(e.bytes[0]), int(e.bytes[1])),
        tcp_window=(_window(e, 0), _window(e, 1)) if e.proto == 6 else None,
    )


EVENT_TYPES = {int(lib.RT_EV_NEW): "NEW", int(lib.RT_EV_UPDATE): "UPDATE",
               int(lib.RT_EV_DESTROY): "DESTROY", int(lib.RT_EV_DROP): "DROP"}




@dataclass(frozen=True, slots=True)
class Captured:
    ts_us: int
    iface: int
    outgoing: bool
    length: int
    data: bytes


def _window(e: Any, d: int) -> TcpWindow:
    return (int(e.tcp_end[d]), int(e.tcp_maxend[d]), int(e.tcp_maxwin[d]),
            int(e.tcp_scale[d]), int(e.tcp_flags[d]), int(e.tcp_maxack[d]))


def _c_array(ctype: str, items: Sequence[Any], fill: Callable[[Any, Any], None] | None,
             value: Callable[[Any], int] = int) -> Any:
    """A C array of ``ctype`` with element i filled from ``items[i]``: a
    struct by ``fill``, a number by ``value`` (one element at least: an
    empty table is a valid pointer too)."""
    arr = ffi.new(f"{ctype}[]", max(1, len(items)))
    for i, x in enumerate(items):
        if fill is None:
            arr[i] = value(x)
        else:
            fill(arr[i], x)
    return arr


def _iface(c: Any, e: Any) -> None:
    c.fd, c.addr, c.mtu, c.zone = e.fd, be32(e.addr), e.mtu, e.zone
    c.flags = ((lib.RT_IF_VNET_HDR if e.vnet_hdr else 0) |
               (lib.RT_IF_SERVICES if e.services else 0) | (lib.RT_IF_HOST if e.host else 0))
    c.rp_filter = e.rp_filter
    if e.addr6 is not None:
        c.addr6, c.has_addr6 = e.addr6.packed, 1


def _route6(c: Any, r: Any) -> None:
    c.prefix, c.plen, c.iface = r.prefix.network_address.packed, r.prefix.prefixlen, r.iface


def _npt6(c: Any, n: Any) -> None:
    c.inside, c.outside = n.inside.network_address.packed, n.outside.network_address.packed
    c.plen, c.iface = n.inside.prefixlen, n.iface


def _route(c: Any, r: Any) -> None:
    c.prefix, c.plen = be32(r.prefix.network_address), r.prefix.prefixlen
    c.iface, c.gateway = r.iface, be32(r.gateway)


def _masq6(c: Any, m: Any) -> None:
    c.src_prefix, c.src_plen = m.sources.network_address.packed, m.sources.prefixlen
    c.out_iface = m.out_iface


def _nat(c: Any, n: Any) -> None:
    c.src_prefix, c.src_plen = be32(n.sources.network_address), n.sources.prefixlen
    c.out_iface, c.to_addr = n.out_iface, be32(n.to)
    c.pool_first, c.pool_size = n.pool_first, n.pool_size


def _dnat(c: Any, d: Any) -> None:
    c.addr, c.to_addr, c.proto = be32(d.addr), be32(d.to), d.proto
    c.port_min, c.port_max, c.to_port = d.port_min, d.port_max, d.to_port
    c.masquerade, c.lb_first, c.lb_size = int(d.masquerade), d.lb_first, d.lb_size


def _lb_slot(c: Any, sl: Any) -> None:
    c.addr, c.port, c.backend = be32(sl.addr), sl.port, sl.backend


def _fw_rule(c: Any, rule: Any) -> None:
    c.chain, c.action, c.proto, c.states = rule.chain, rule.action, rule.proto, rule.states
    c.from_zone, c.to_zone = rule.from_zone, rule.to_zone
    if rule.src.version == 6 or rule.dst.version == 6:
        c.family = 6
        c.src6, c.dst6 = rule.src.network_address.packed, rule.dst.network_address.packed
    else:
        c.src, c.dst = be32(rule.src.network_address), be32(rule.dst.network_address)
    c.src_plen, c.dst_plen = rule.src.prefixlen, rule.dst.prefixlen
    c.icmp_type, c.port_min, c.port_max = rule.icmp_type, rule.port_min, rule.port_max


# The arrays of struct rt_tables: its field (counted by "n_" + field), the
# Tables attribute, the C element type, and how an element is filled.
_ARRAYS: tuple[tuple[str, str, str, Callable[[Any, Any], None] | None], ...] = (
    ("ifaces", "ifaces", "struct rt_iface_cfg", _iface),
    ("routes", "routes", "struct rt_route_cfg", _route),
    ("routes6", "routes6", "struct rt_route6_cfg", _route6),
    ("npt6", "npt6", "struct rt_npt6_cfg", _npt6),
    ("masq6", "masq6", "struct rt_masq6_cfg", _masq6),
    ("nat", "nat", "struct rt_nat_cfg", _nat),
    ("dnat", "dnat", "struct rt_dnat_cfg", _dnat),
    ("lb_slots", "lb_slots", "struct rt_lb_slot", _lb_slot),
    ("fw_rules", "fw", "struct rt_fw_rule", _fw_rule),
    ("timeouts", "timeouts", "uint32_t", None),
)
# Its plain numbers, each the Tables attribute of the same name.
_SCALARS = ("port_min", "port_max", "tcp_max_retrans", "input_policy", "icmp_rate",
            "src_conn_cap", "src_new_rate", "src_prefix6", "src_share")


def _c_tables(t: Tables) -> tuple[Any, list[Any]]:
    """``struct rt_tables`` filled from ``t``, and the arrays it points at
    (which must outlive every use of it)."""
    tb = ffi.new("struct rt_tables *")
    keep = []
    for field, attr, ctype, fill in _ARRAYS:
        items = getattr(t, attr)
        keep.append(_c_array(ctype, items, fill))
        setattr(tb, field, keep[-1])
        setattr(tb, f"n_{field}", len(items))
    keep.append(_c_array("rt_be32", t.nat_pool, None, be32))
    tb.nat_pool, tb.n_nat_pool = keep[-1], len(t.nat_pool)
    keep.append(_c_array("uint8_t", [v for row in t.policy for v in row], None))
    tb.zone_policy, tb.n_zones = keep[-1], len(t.zones)
    for name in _SCALARS:
        setattr(tb, name, getattr(t, name))
    tb.n_backends = len(t.backends)
    tb.nat_filtering = t.filtering
    tb.flags = ((lib.RT_F_TCP_LOOSE if t.tcp_loose else 0)
                | (lib.RT_F_L4_CSUM if t.checksum else 0)
                | (lib.RT_F_PRESERVE_PORTS if t.preserve_ports else 0)
                | (lib.RT_F_EIM if t.eim else 0)
                | (lib.RT_F_TCP_LIBERAL if t.tcp_liberal else 0))
    return tb, keep


class Datapath:
    """A data plane instance: conntrack table, tables, packet slots."""

    def __init__(self, capacity: int, batch: int = 64, seed: int | None = None) -> None:
        params = ffi.new("struct rt_dp_params *")
        params.ct_capacity = capacity
        params.batch = batch
        params.slot_size = SLOT_SIZE
        params.seed = seed if seed is not None else int.from_bytes(os.urandom(8), sys.byteorder)
        dp = lib.rt_dp_new(params)
        if dp == ffi.NULL:
            raise DatapathError(f"cannot create the data plane (capacity {capacity}, "
                                f"batch {batch}): out of range or out of memory")
        self._dp = ffi.gc(dp, lib.rt_dp_free)
        self.capacity = capacity
        self.batch = batch
        self._entries = ffi.new("struct rt_ct_entry[]", DUMP_CHUNK)
        self._ev_buf: Any = None
        self._cap_recs: Any = None
        self._cap_data: Any = None
        self._cap_snap = 0

    def _c(self, fn: Any, *args: Any) -> Any:
        """Calls C function ``fn`` on the data plane with its lock held: the
        workers (if any) process batches between two such calls."""
        lib.rt_dp_lock(self._dp)
        try:
            return fn(self._dp, *args)
        finally:
            lib.rt_dp_unlock(self._dp)

    # -- tables ------------------------------------------------------------

    def load(self, t: Tables) -> None:
        """Swaps in new tables atomically; raises DatapathError and keeps the
        old ones if the C side refuses them."""
        tb, _arrays = _c_tables(t)  # the arrays live until the call returns
        if self._c(lib.rt_dp_load, tb) != 0:
            raise DatapathError(ffi.string(self._c(lib.rt_dp_error)).decode())

    # -- packets -----------------------------------------------------------

    def poll(self, iface: int, budget: int, now_ms: int) -> int:
        """Reads, processes and writes up to ``budget`` packets of ``iface``."""
        return int(lib.rt_dp_poll(self._dp, iface, budget, now_ms))

    def start_workers(self, fds: Sequence[Sequence[int]], budget: int,
                      busy_poll_us: int = 0) -> None:
        """Starts one worker thread per row of ``fds``: row k holds queue k's
        descriptor of every interface, in the loaded tables' order."""
        n = len(fds)
        n_ifaces = len(fds[0]) if fds else 0
        if any(len(row) != n_ifaces for row in fds):
            raise DatapathError("every worker needs a descriptor for every interface")
        flat = ffi.new("int32_t[]", [fd for row in fds for fd in row] or [0])
        r = int(lib.rt_workers_start(self._dp, n, flat, n_ifaces, budget, busy_poll_us))
        if r != 0:
            raise DatapathError(f"cannot start {n} workers over {n_ifaces} interfaces: "
                                f"{os.strerror(-r)}")

    def background_workers(self, mask: int) -> None:
        """Workers started from now on whose bit is set in ``mask`` run at
        the lowest priority (nice 19)."""
        self._c(lib.rt_workers_background, mask)

    def stop_workers(self) -> None:
        """Stops the workers and waits for them (nothing if none run)."""
        lib.rt_workers_stop(self._dp)

    def worker_stats(self) -> list[dict[str, int]]:
        """Each worker's counters (WORKER_STATS; see struct rt_worker_stats)."""
        st = ffi.new("struct rt_worker_stats *")
        out = []
        for k in range(int(lib.rt_workers_count(self._dp))):
            if lib.rt_workers_stats(self._dp, k, st) == 0:
                out.append({f: int(getattr(st, f))
                            for f in WORKER_STATS})
        return out

    def process(self, packets: Sequence[tuple[int, bytes] | tuple[int, bytes, Offload]],
                now_ms: int, exact: bool = False) -> list[Result]:
        """Runs caller-supplied packets (interface, bytes[, offload metadata])
        through the pipeline.  With ``exact`` each buffer ends at its packet
        (no room to grow), followed by guard bytes that must come back
        untouched: a write past a packet raises DatapathError."""
        n = len(packets)
        if n == 0:
            return []
        pkts = ffi.new("struct rt_pkt[]", n)
        bufs = []
        for i, item in enumerate(packets):
            iface, data, *rest = item
            off = rest[0] if rest else NO_OFFLOAD
            size = len(data) + GUARD if exact else max(SLOT_SIZE, len(data))
            buf = ffi.new("uint8_t[]", size)
            ffi.memmove(buf, data, len(data))
            if exact:
                ffi.memmove(buf + len(data), GUARD_BYTES, GUARD)
            bufs.append(buf)
            pkts[i].data = buf
            pkts[i].len = len(data)
            pkts[i].cap = len(data) if exact else len(buf)
            pkts[i].in_iface = iface
            for f in OFFLOAD_FIELDS:
                setattr(pkts[i], f, getattr(off, f))
        self._c(lib.rt_dp_process, pkts, n, now_ms)
        if exact:
            for i, item in enumerate(packets):
                if bytes(ffi.buffer(bufs[i] + len(item[1]), GUARD)) != GUARD_BYTES:
                    raise DatapathError(f"packet {i} was written past its end")
        out = []
        for i in range(n):
            p = pkts[i]
            sent = p.out_iface >= 0
            out.append(Result(
                out_iface=int(p.out_iface),
                data=bytes(ffi.buffer(p.data, p.len)) if sent else b"",
                reason=DROP_NAMES[p.reason],
                offload=Offload(**{f: int(getattr(p, f)) for f in OFFLOAD_FIELDS}),
            ))
        return out

    def take_ready(self) -> list[tuple[int, bytes]]:
        """Fragments that waited for their first one and may go now
        (``poll()`` sends them itself)."""
        out = []
        buf = ffi.new("uint8_t[]", SLOT_SIZE)
        iface = ffi.new("int16_t *")
        while (n := self._c(lib.rt_dp_take_ready, buf, SLOT_SIZE, iface)) > 0:
            out.append((int(iface[0]), bytes(ffi.buffer(buf, n))))
        return out

    # -- conntrack ---------------------------------------------------------

    def sweep(self, now_ms: int, max_slots: int) -> SweepResult:
        r = ffi.new("struct rt_sweep_result *")
        self._c(lib.rt_ct_sweep, now_ms, max_slots, r)
        return SweepResult(int(r.visited), int(r.expired), bool(r.wrapped), int(r.count))

    def conntrack(self, now_ms: int) -> list[CtEntry]:
        """Every live connection, in slot order."""
        cursor = ffi.new("uint32_t *", 0)
        out: list[CtEntry] = []
        while True:
            k = self._c(lib.rt_ct_dump, cursor, self._entries, DUMP_CHUNK, now_ms)
            if k == 0:
                return out
            for i in range(k):
                out.append(_ct_entry(self._entries[i]))

    def conntrack_chunk(self, cursor: int, now_ms: int) -> tuple[list[CtEntry], int]:
        """Live connections from slot ``cursor`` on, a chunk at a time: the
        entries and the cursor to go on from (0 once past the end), so that
        a caller on the event loop can walk a large table in steps."""
        c = ffi.new("uint32_t *", cursor)
        k = self._c(lib.rt_ct_dump, c, self._entries, DUMP_CHUNK, now_ms)
        out = [_ct_entry(self._entries[i]) for i in range(k)]
        return out, (int(c[0]) if k else 0)

    def restore(self, e: CtEntry, now_ms: int) -> int:
        """Puts back a saved connection: 0, or -1 (invalid) / -2 (clash, full) /
        -3 (the running config would not let it open)."""
        c = ffi.new("struct rt_ct_entry *")
        c.family = e.family
        c.proto = e.proto
        c.state = TCP_STATE_NAMES.index(e.state) if e.state is not None else 0
        c.status = e.status
        addr = IPv4Address if e.family == 4 else IPv6Address
        for d in (0, 1):
            src, dst = addr(e.src[d]).packed, addr(e.dst[d]).packed
            c.src[d][0:len(src)] = src
            c.dst[d][0:len(dst)] = dst
            c.sport[d] = e.sport[d]
            c.dport[d] = e.dport[d]
            c.packets[d] = e.packets[d]
            c.bytes[d] = e.bytes[d]
        c.timeout_ms = e.timeout_ms
        c.age_ms = e.age_ms
        if e.tcp_window is not None:
            for d in (0, 1):
                (c.tcp_end[d], c.tcp_maxend[d], c.tcp_maxwin[d], c.tcp_scale[d],
                 c.tcp_flags[d], c.tcp_maxack[d]) = e.tcp_window[d]
        return int(self._c(lib.rt_ct_restore, c, now_ms))

    def delete(self, slot: int, now_ms: int) -> bool:
        """Removes the connection in ``slot``; False if there is none."""
        return int(self._c(lib.rt_ct_delete, slot, now_ms)) == 0

    def set_timeout(self, slot: int, now_ms: int, timeout_s: int) -> bool:
        """Gives the connection in ``slot`` ``timeout_s`` seconds to live
        (``conntrack -U --timeout``); False if there is none."""
        return int(self._c(lib.rt_ct_set_timeout, slot, now_ms, timeout_s * 1000)) == 0

    def count(self) -> int:
        return int(self._c(lib.rt_ct_count))

    def nat_mappings(self) -> int:
        """Endpoint-independent mappings in use."""
        return int(self._c(lib.rt_nat_map_count))

    def flush(self, now_ms: int) -> None:
        self._c(lib.rt_ct_flush, now_ms)

    # -- mappings LAN hosts asked for (router/portmap) ----------------------

    def set_portmaps(self, entries: Sequence[Pin]) -> None:
        """Replaces the table of pinned mappings and pinholes; raises
        DatapathError and keeps the old one if the C side refuses it."""
        arr = ffi.new("struct rt_portmap[]", max(len(entries), 1))
        for i, e in enumerate(entries):
            _fill_pin(arr[i], e)
        if self._c(lib.rt_dp_set_portmaps, arr, len(entries)) != 0:
            raise DatapathError(ffi.string(self._c(lib.rt_dp_error)).decode())

    def portmap_probe(self, e: Pin, now_ms: int) -> tuple[int, int]:
        """(what holds the external port of NAT44 mapping ``e``: PM_FREE,
        PM_FORWARD or PM_TAKEN; the external port of the live mapping its
        inside endpoint has already, or 0)."""
        arr = ffi.new("struct rt_portmap *")
        _fill_pin(arr, e)
        existing = ffi.new("uint16_t *")
        r = int(self._c(lib.rt_dp_portmap_probe, arr, now_ms, existing))
        if r < 0:
            raise DatapathError(f"cannot probe mapping {e}")
        return r, int(existing[0])

    def set_standby(self, on: bool) -> None:
        """High availability: a standby opens no forwarded connection."""
        self._c(lib.rt_dp_set_standby, int(on))

    def set_lb_key(self, key: int) -> None:
        """The load balancers' hash key: the same on both routers of a pair."""
        self._c(lib.rt_dp_set_lb_key, key & 0xFFFFFFFFFFFFFFFF)

    # -- events and capture ------------------------------------------------

    def enable_events(self, ct: bool | Collection[str], drop_reasons: Sequence[str] = (),
                      drop_rate: int = 10, ring: int = 16384) -> None:
        """Connection events: all (True), none (False) or those of the types
        named ("NEW", "UPDATE", "DESTROY"); and which drop reasons to sample
        at most ``drop_rate`` times a second."""
        mask = 0
        for r in drop_reasons:
            mask |= 1 << DROP_NAMES.index(r)
        types = ("NEW", "UPDATE", "DESTROY") if ct is True else () if ct is False else ct
        ct_mask = 0
        for t in types:
            ct_mask |= 1 << int(getattr(lib, f"RT_EV_{t}"))
        if self._c(lib.rt_events_enable, ct_mask, mask, drop_rate, ring) != 0:
            raise DatapathError(f"cannot enable events with a ring of {ring}")

    def read_events(self, n: int = 1024) -> list[Event]:
        buf = self._ev_buf
        if buf is None or len(buf) < n:
            buf = self._ev_buf = ffi.new("struct rt_event[]", n)
        k = self._c(lib.rt_events_read, buf, n)
        out = []
        for i in range(k):
            ev = buf[i]
            t = int(ev.type)
            if t == lib.RT_EV_DROP:
                c = ev.ct
                fam = int(c.family)
                entry = CtEntry(slot=-1, family=fam, proto=int(c.proto), state=None, status=0,
                                src=(_addr(c.src[0], fam) if fam else "", ""),
                                dst=(_addr(c.dst[0], fam) if fam else "", ""),
                                sport=(int(c.sport[0]), 0), dport=(int(c.dport[0]), 0),
                                timeout_ms=0, age_ms=0, packets=(1, 0), bytes=(0, 0))
                out.append(Event("DROP", entry, reason=DROP_NAMES[ev.reason],
                                 iface=int(ev.iface), rule=int(ev.rule),
                                 tcp_flags=int(ev.tcp_flags)))
            else:
                out.append(Event(EVENT_TYPES[t], _ct_entry(ev.ct)))
        return out

    def events_lost(self) -> dict[str, int]:
        """Events lost to a full ring, by type; "RATE_LIMITED": drop samples
        left out by the sampling rate."""
        out = {"RATE_LIMITED": int(self._c(lib.rt_events_lost, lib.RT_EV_RATE_LIMITED))}
        for t, name in EVENT_TYPES.items():
            out[name] = int(self._c(lib.rt_events_lost, t))
        return out

    def capture_start(self, ifaces: Sequence[int], snaplen: int = 2048,
                      slots: int = 4096, filt: str = "") -> None:
        """Captures the interfaces' packets; ``filt`` is a tcpdump
        expression, compiled by libpcap (its error: CaptureFilterError)."""
        mask = 0
        for i in ifaces:
            mask |= 1 << i
        err = ffi.new("char[]", 256)
        if self._c(lib.rt_capture_start, mask, snaplen, slots, filt.encode(), err, 256) != 0:
            reason = ffi.string(err).decode(errors="replace")
            if filt:
                raise CaptureFilterError(reason)
            raise DatapathError(f"cannot start the capture: {reason}")
        self._cap_snap = snaplen
        self._cap_recs = ffi.new("struct rt_capture[]", 256)
        self._cap_data = ffi.new("uint8_t[]", 256 * snaplen)

    @staticmethod
    def capture_check(filt: str, snaplen: int) -> None:
        """Raises CaptureFilterError with libpcap's reason if it would not
        compile ``filt``."""
        err = ffi.new("char[]", 256)
        if lib.rt_capture_check(filt.encode(), snaplen, err, 256) != 0:
            raise CaptureFilterError(ffi.string(err).decode(errors="replace"))

    def capture_read(self) -> list[Captured]:
        if self._cap_recs is None or self._cap_data is None:
            return []
        k = self._c(lib.rt_capture_read, self._cap_recs, self._cap_data, 256)
        out = []
        for i in range(k):
            r = self._cap_recs[i]
            off = i * self._cap_snap
            out.append(Captured(int(r.ts_us), int(r.iface), r.dir == lib.RT_CAP_TX, int(r.len),
                                bytes(ffi.buffer(self._cap_data + off, r.caplen))))
        return out

    def capture_stop(self) -> None:
        self._c(lib.rt_capture_stop)
        self._cap_recs = self._cap_data = None

    def capture_lost(self) -> int:
        return int(self._c(lib.rt_capture_lost))

    def capture_filtered(self) -> int:
        """Packets the running capture's filter did not match."""
        return int(self._c(lib.rt_capture_filtered))

    # -- counters ----------------------------------------------------------

    def counters(self) -> dict[str, int]:
        buf = ffi.new("uint64_t[]", len(COUNTER_NAMES))
        self._c(lib.rt_dp_counters, buf, len(COUNTER_NAMES))
        return {name: int(buf[i]) for i, name in enumerate(COUNTER_NAMES)}

    def drops(self) -> dict[str, int]:
        buf = ffi.new("uint64_t[]", len(DROP_NAMES))
        self._c(lib.rt_dp_drops, buf, len(DROP_NAMES))
        return {name: int(buf[i]) for i, name in enumerate(DROP_NAMES) if name != "none"}

    def fw_stats(self) -> list[tuple[int, int]]:
        """(packets, bytes) each firewall rule matched since the tables were loaded."""
        n = int(self._c(lib.rt_dp_fw_stats, ffi.NULL, 0))
        buf = ffi.new("uint64_t[]", max(2, 2 * n))
        self._c(lib.rt_dp_fw_stats, buf, 2 * n)
        return [(int(buf[2 * i]), int(buf[2 * i + 1])) for i in range(n)]

    def lb_stats(self) -> list[int]:
        """New connections sent to each backend since the tables were loaded."""
        n = int(self._c(lib.rt_dp_lb_stats, ffi.NULL, 0))
        buf = ffi.new("uint64_t[]", max(1, n))
        self._c(lib.rt_dp_lb_stats, buf, n)
        return [int(buf[i]) for i in range(n)]

    def iface_stats(self, iface: int) -> dict[str, int]:
        st = ffi.new("struct rt_iface_stats *")
        if self._c(lib.rt_dp_iface_stats, iface, st) != 0:
            raise DatapathError(f"no interface {iface}")
        return {f: int(getattr(st, f)) for f in
                ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_errors")}
