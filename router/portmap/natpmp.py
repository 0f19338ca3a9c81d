"""NAT-PMP (RFC 6886) requests answered from the mapping table: the
external address, UDP and TCP mappings, their deletion.  IPv4 only, and a
host maps only itself (NAT-PMP has no way to name another)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

from router.portmap import natpmp_wire as w
from router.portmap.table import NO_RESOURCES, NOT_FOUND, QUOTA, Address, Ask, Refused, Table


class NatPmpServer:
    def __init__(self, table: Table, external: Callable[[], IPv4Address | None],
                 epoch: Callable[[], int]) -> None:
        self.table = table
        self._external = external
        self._epoch = epoch

    def handle(self, data: bytes, src: Address) -> bytes | None:
        if src.version != 4:
            return None  # NAT-PMP is IPv4's
        try:
            r = w.parse(data)
        except ValueError:
            return None
        except w.Malformed as e:
            return w.error_answer(e.opcode, e.code, self._epoch())
        ext = self._external()
        if r.opcode == w.OP_ADDRESS:
            return w.address_answer(w.SUCCESS if ext else w.NETWORK_FAILURE, self._epoch(), ext)
        proto = w.PROTO_OF[r.opcode]
        if r.lifetime == 0:
            return self._delete(r, proto, src)
        if ext is None:
            return w.map_answer(r.opcode, w.NETWORK_FAILURE, self._epoch(), r.int_port, 0, 0)
        if r.int_port == 0:
            return w.map_answer(r.opcode, w.REFUSED, self._epoch(), 0, 0, 0)
        try:
            m = self.table.grant(Ask(via="natpmp", client=src, proto=proto, int_addr=src,
                                     int_port=r.int_port, lifetime=r.lifetime,
                                     ext_port=r.ext_port))
        except Refused as e:
            code = w.NO_RESOURCES if e.code in (NO_RESOURCES, QUOTA) else w.REFUSED
            return w.map_answer(r.opcode, code, self._epoch(), r.int_port, 0, 0)
        return w.map_answer(r.opcode, w.SUCCESS, self._epoch(), r.int_port, m.ext_port,
                            m.left(self.table.clock()))

    def _delete(self, r: w.Request, proto: int, src: Address) -> bytes:
        """Lifetime 0: one mapping; with ports 0 too, all of this host's for
        the protocol (RFC 6886 3.4).  Only the host's own, and only those
        NAT-PMP made when it asks for all."""
        if r.int_port == 0 and r.ext_port == 0:
            keys = [k for k, m in self.table.maps.items()
                    if m.int_addr == src and m.proto == proto and m.via == "natpmp"]
        else:
            keys = [(4, proto, src, r.int_port)]
        for k in keys:
            try:
                self.table.delete(k, "deleted by its client (NAT-PMP)", by=src)
            except Refused as e:
                if e.code != NOT_FOUND:
                    return w.map_answer(r.opcode, w.REFUSED, self._epoch(), r.int_port, 0, 0)
        return w.map_answer(r.opcode, w.SUCCESS, self._epoch(), r.int_port, 0, 0)
