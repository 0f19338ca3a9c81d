"""The router's connections (``CtEntry``) to and from what the sync protocol
carries (``SyncCt``).

The router's status bits are Linux's IPS_* bits for what Linux has; its
own three bits (a NAT mapping held, a connection to or from the router's
services) sit where Linux keeps bits of its own meaning, so they never go on
the wire.  Connections of the router's own services stay home: they belong
to that machine, not to the pair.  On the way in, a source-NATed
connection is marked as holding its endpoint-independent mapping, which
the commit then rebuilds (``rt_ct_restore``), so the mapping travels with
the connection that uses it.  IPv6 connections with NAT66 stay home too:
conntrackd 1.4.7 has no attribute for their translated addresses.
"""

from __future__ import annotations

from router.ha.wire import (
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_SEEN_REPLY,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    SyncCt,
)
from router.native.names import TCP_STATE_NAMES
from router.native.records import CtEntry

NAT_MAPPED = 0x1000             # RT_CT_NAT_MAPPED
HOST_BITS = 0x4000 | 0x8000     # RT_CT_TO_HOST | RT_CT_FROM_HOST
MIN_TIMEOUT_MS = 1000

# ICMP query type -> its reply's, both ways (RFC 792, 4443).
_ICMP4 = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
_ICMP6 = {128: 129, 129: 128}


def from_entry(e: CtEntry) -> SyncCt | None:
    """What the peer needs of ``e``; None for a connection that stays here."""
    if e.status & HOST_BITS or e.family not in (4, 6):
        return None
    status = IPS_CONFIRMED | (e.status & (IPS_SEEN_REPLY | IPS_ASSURED))
    snat = dnat = None
    spat = dpat = None
    if e.dst[1] != e.src[0]:
        snat = e.dst[1]
    if e.src[1] != e.dst[0]:
        dnat = e.src[1]
    if e.proto in (1, 58):
        if e.sport[1] != e.sport[0]:
            spat = e.sport[1]  # the translated identifier
    else:
        if e.dport[1] != e.sport[0]:
            spat = e.dport[1]
        if e.sport[1] != e.dport[0]:
            dpat = e.sport[1]
    if e.family == 6 and (snat or dnat or spat is not None or dpat is not None):
        return None  # NAT66: conntrackd 1.4.7 carries no IPv6 NAT addresses
    if snat is not None or spat is not None:
        status |= IPS_SRC_NAT | IPS_SRC_NAT_DONE
    if dnat is not None or dpat is not None:
        status |= IPS_DST_NAT | IPS_DST_NAT_DONE
    return SyncCt(family=e.family, proto=e.proto, src=e.src[0], dst=e.dst[0],
                  sport=e.sport[0], dport=e.dport[0], status=status,
                  timeout=max(1, (e.timeout_ms + 999) // 1000),
                  state=TCP_STATE_NAMES.index(e.state) if e.state is not None else 0,
                  snat=snat, dnat=dnat, spat=spat, dpat=dpat)


def to_entry(ct: SyncCt) -> CtEntry | None:
    """The connection to commit for ``ct``; None if the router cannot hold
    it (a TCP state it does not know, an ICMP type that is no query)."""
    rsrc = ct.dnat or ct.dst
    rdst = ct.snat or ct.src
    if ct.proto in (1, 58):
        table = _ICMP4 if ct.proto == 1 else _ICMP6
        inv = table.get(ct.dport >> 8)
        if inv is None:
            return None
        rsport = ct.spat if ct.spat is not None else ct.sport
        rdport = inv << 8 | (ct.dport & 0xFF)
    else:
        rsport = ct.dpat if ct.dpat is not None else ct.dport
        rdport = ct.spat if ct.spat is not None else ct.sport
    if ct.proto == 6 and ct.state >= len(TCP_STATE_NAMES):
        return None
    icmp = ct.proto in (1, 58)
    status = ct.status & (IPS_SEEN_REPLY | IPS_ASSURED)
    if rdst != ct.src or (rsport != ct.sport if icmp else rdport != ct.sport):
        status |= IPS_SRC_NAT | NAT_MAPPED
    if rsrc != ct.dst or (not icmp and rsport != ct.dport):
        status |= IPS_DST_NAT
    return CtEntry(slot=-1, family=ct.family, proto=ct.proto,
                   state=TCP_STATE_NAMES[ct.state] if ct.proto == 6 else None,
                   status=status, src=(ct.src, rsrc), dst=(ct.dst, rdst),
                   sport=(ct.sport, rsport), dport=(ct.dport, rdport),
                   timeout_ms=max(MIN_TIMEOUT_MS, ct.timeout * 1000), age_ms=0,
                   packets=(0, 0), bytes=(0, 0))
