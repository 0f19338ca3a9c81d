"""PCP (RFC 6887) requests answered from the mapping table: MAP and PEER
for IPv4 (NAT44) and IPv6 (pinholes), THIRD_PARTY, PREFER_FAILURE and
FILTER, deletes, and ANNOUNCE.  The bytes are ``pcp_wire``'s; who may map
what is ``table``'s."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network

from router.config.model import Portmap
from router.portmap import pcp_wire as w
from router.portmap.table import (
    CONFLICT,
    NO_RESOURCES,
    NOT_AUTHORIZED,
    NOT_FOUND,
    QUOTA,
    UNSUPPORTED,
    Address,
    Ask,
    Refused,
    Table,
)

# An error's lifetime (RFC 6887 section 7.4): how long the client should
# take it to hold.  Policy does not change soon; resources may.
LONG_ERROR = 1800
SHORT_ERROR = 30
RESULT_OF = {UNSUPPORTED: w.UNSUPP_PROTOCOL, NOT_AUTHORIZED: w.NOT_AUTHORIZED,
             NO_RESOURCES: w.NO_RESOURCES, QUOTA: w.USER_EX_QUOTA,
             CONFLICT: w.CANNOT_PROVIDE_EXTERNAL}


class PcpServer:
    """Answers one PCP request at a time, from ``src`` (the address the
    datagram came from)."""

    def __init__(self, table: Table, cfg: Callable[[], Portmap],
                 external: Callable[[], IPv4Address | None], epoch: Callable[[], int]) -> None:
        self.table = table
        self._cfg = cfg
        self._external = external  # the WAN's IPv4 address now, or None
        self._epoch = epoch

    def handle(self, data: bytes, src: Address) -> bytes | None:
        if len(data) < 2 or data[1] & 0x80:
            return None  # a response (or less): never answered
        if data[0] != w.VERSION:
            return w.answer(data[1], w.UNSUPP_VERSION, LONG_ERROR, self._epoch(), b"")
        try:
            r = w.parse(data)
            if r.client != src:
                raise w.Malformed(w.ADDRESS_MISMATCH, f"the request says {r.client}, it came "
                                  f"from {src}: a NAT between", r.opcode, body=r.body)
            if r.opcode == w.OP_ANNOUNCE:
                return w.answer(w.OP_ANNOUNCE, w.SUCCESS, 0, self._epoch(), b"")
            return self._mapping(r, src)
        except w.Malformed as e:
            life = e.lifetime or (SHORT_ERROR if e.code == w.NO_RESOURCES else LONG_ERROR)
            return w.answer(e.opcode, e.code, life, self._epoch(), e.body)

    def _mapping(self, r: w.Request, src: Address) -> bytes:
        inside = r.third_party or src
        if r.third_party is not None and not self._cfg().third_party:
            raise w.Malformed(w.NOT_AUTHORIZED, "THIRD_PARTY is off (portmap.third_party)",
                              r.opcode, body=r.body)
        if r.proto not in (6, 17):
            raise w.Malformed(w.UNSUPP_PROTOCOL, f"protocol {r.proto}", r.opcode, body=r.body)
        if r.lifetime == 0:
            return self._delete(r, src, inside)
        if r.int_port == 0:
            raise w.Malformed(w.MALFORMED_REQUEST, "internal port 0 (all ports) only deletes",
                              r.opcode, body=r.body)
        external = self._external() if inside.version == 4 else inside
        if external is None:
            raise w.Malformed(w.NETWORK_FAILURE, "the WAN has no address yet", r.opcode,
                              lifetime=SHORT_ERROR, body=r.body)
        if r.prefer_failure and r.ext_addr is not None and r.ext_addr != external:
            raise w.Malformed(w.CANNOT_PROVIDE_EXTERNAL, f"the external address is {external}",
                              r.opcode, body=r.body)
        cfg = self._cfg()
        ask = Ask(via="pcp", client=src, proto=r.proto, int_addr=inside, int_port=r.int_port,
                  lifetime=max(r.lifetime, cfg.min_lifetime), ext_port=r.ext_port,
                  exact=r.prefer_failure, nonce=r.nonce, filters=self._filters(r, inside),
                  peer=r.opcode == w.OP_PEER)
        try:
            m = self.table.grant(ask)
        except Refused as e:
            life = e.lifetime or (SHORT_ERROR if e.code in (NO_RESOURCES, QUOTA) else LONG_ERROR)
            return w.answer(r.opcode, RESULT_OF.get(e.code, w.NOT_AUTHORIZED), life,
                            self._epoch(), r.body)
        return w.answer(r.opcode, w.SUCCESS, m.left(self.table.clock()), self._epoch(),
                        w.map_body(r, m.ext_port, external))

    def _filters(self, r: w.Request, inside: Address
                 ) -> tuple[tuple[IPv4Network | IPv6Network, int], ...]:
        if r.opcode == w.OP_PEER:
            if r.peer_addr is None or r.peer_addr.version != inside.version:
                raise w.Malformed(w.MALFORMED_REQUEST, "the peer's family is not the "
                                  "internal address's", r.opcode, body=r.body)
            return ((ip_network(r.peer_addr), r.peer_port),)
        if r.clear_filters:
            return ()
        for net, _ in r.filters:
            if net.version != inside.version:
                raise w.Malformed(w.MALFORMED_OPTION, "a FILTER of the other family",
                                  r.opcode, body=r.body)
        return tuple(r.filters)

    def _delete(self, r: w.Request, src: Address, inside: Address) -> bytes:
        keys = [k for k, m in self.table.maps.items()
                if m.int_addr == inside and m.proto == r.proto and m.via == "pcp" and
                (r.int_port == 0 or m.int_port == r.int_port)]
        try:
            for k in keys:
                self.table.delete(k, "deleted by its client (PCP)", by=src, nonce=r.nonce)
        except Refused as e:
            if e.code != NOT_FOUND:
                return w.answer(r.opcode, RESULT_OF.get(e.code, w.NOT_AUTHORIZED),
                                e.lifetime or LONG_ERROR, self._epoch(), r.body)
        ext = self._external() if inside.version == 4 else inside
        return w.answer(r.opcode, w.SUCCESS, 0, self._epoch(), w.map_body(r, 0, ext))
