"""The one table of mappings LAN hosts asked for, whichever protocol asked.

PCP, NAT-PMP and UPnP IGD (``pcp.py``, ``natpmp.py``, ``upnp.py``) only
translate their requests into an ``Ask`` and the answer back; every rule is
here, once: who may map what (``[portmap]`` and its rules), limits,
lifetimes, which external port a mapping gets, and what the data plane is
told (``Datapath.set_portmaps``: the whole table, after every change).

A mapping is keyed by its inside endpoint (family, protocol, address,
port): one external port per inside endpoint, because a mapping is also
that endpoint's outbound mapping (RFC 6887 section 11).  An IPv6 mapping is
a firewall pinhole: its "external port" is the inside port, and nothing is
translated.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from router.config.model import Portmap
from router.datapath import PM_FORWARD, PM_FREE, Datapath, DatapathError, Pin

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
PROTO_NAMES = {6: "tcp", 17: "udp"}
SEARCH_TRIES = 64  # random external ports tried when the asked-for one is held


class Refused(Exception):
    """A request the table will not grant: ``code`` names why (each
    protocol maps it to its own result code), ``reason`` says it to a
    person."""

    def __init__(self, code: str, reason: str, lifetime: int = 0) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.lifetime = lifetime  # how long the refusal holds (PCP's error lifetime)


# Refused.code values.
UNSUPPORTED = "unsupported_protocol"
NOT_AUTHORIZED = "not_authorized"   # not its own address, a rule, a low port, a nonce
NO_RESOURCES = "no_resources"       # the limits
QUOTA = "over_quota"                # this host's limit
CONFLICT = "conflict"               # that exact external port is held
NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Ask:
    """A request for a mapping, as any protocol puts it."""

    via: str                 # "pcp", "natpmp", "upnp"
    client: Address          # the address the request came from
    proto: int               # 6 or 17
    int_addr: Address
    int_port: int
    lifetime: int            # seconds, > 0
    ext_port: int = 0        # the port asked for; 0: any
    exact: bool = False      # that port or nothing (UPnP AddPortMapping, PCP PREFER_FAILURE)
    description: str = ""
    nonce: bytes = b""       # PCP's mapping nonce
    filters: tuple[tuple[Network, int], ...] = ()
    peer: bool = False       # PCP PEER: an outbound mapping to one peer (its filter)


@dataclass
class Mapping:
    via: str
    client: Address
    proto: int
    int_addr: Address
    int_port: int
    ext_port: int
    expires: float           # time.time() when it ends
    description: str = ""
    nonce: bytes = b""
    filters: tuple[tuple[Network, int], ...] = ()
    peer: bool = False
    created: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[int, int, Address, int]:
        return (self.int_addr.version, self.proto, self.int_addr, self.int_port)

    def left(self, now: float) -> int:
        return max(0, int(self.expires - now + 0.5))

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"protocol": PROTO_NAMES[self.proto], "family": self.int_addr.version,
                "external_port": self.ext_port, "internal": str(self.int_addr),
                "internal_port": self.int_port, "client": str(self.client), "via": self.via,
                "lifetime_left": self.left(now), "description": self.description,
                "filters": [f"{n}" + (f" port {p}" if p else "") for n, p in self.filters],
                "peer": self.peer}


class Table:
    """The mappings; ``changed`` is called after every change (to save)."""

    def __init__(self, cfg: Callable[[], Portmap], lans: Callable[[], list[Network]],
                 external: Callable[[], int | None], dp: Datapath, now_ms: Callable[[], int],
                 on_event: Callable[[str, dict[str, Any]], None],
                 changed: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self._cfg = cfg          # the running [portmap] (it changes on reload)
        self._lans = lans        # the LAN links' networks: where inside hosts live
        self._external = external  # the external interface's index in the tables
        self._dp = dp
        self._now_ms = now_ms
        self._event = on_event
        self._changed = changed
        self.clock = clock
        self.maps: dict[tuple[int, int, Address, int], Mapping] = {}
        self.granted = {"pcp": 0, "natpmp": 0, "upnp": 0}
        self.refused = {"pcp": 0, "natpmp": 0, "upnp": 0}
        self.expired = 0
        self._defer = False  # restoring: the data plane is told once, at the end
        self._rng = random.SystemRandom()

    def config(self) -> Portmap:
        """The running ``[portmap]``."""
        return self._cfg()

    # -- asking ------------------------------------------------------------

    def grant(self, ask: Ask) -> Mapping:
        """The mapping for ``ask``, made or renewed; raises Refused."""
        try:
            m = self._grant(ask)
        except Refused as r:
            self.refused[ask.via] = self.refused.get(ask.via, 0) + 1
            self._event("refused", {"via": ask.via, "client": str(ask.client),
                                    "protocol": PROTO_NAMES.get(ask.proto, str(ask.proto)),
                                    "internal": str(ask.int_addr),
                                    "internal_port": ask.int_port,
                                    "external_port": ask.ext_port, "code": r.code,
                                    "reason": r.reason})
            raise
        self.granted[ask.via] = self.granted.get(ask.via, 0) + 1
        self._event("granted", {**m.as_dict(self.clock()), "asked_port": ask.ext_port})
        return m

    def _grant(self, ask: Ask) -> Mapping:
        cfg = self._cfg()
        if ask.proto not in PROTO_NAMES:
            raise Refused(UNSUPPORTED, f"protocol {ask.proto}: only TCP and UDP are mapped")
        if ask.int_addr != ask.client and not cfg.third_party:
            raise Refused(NOT_AUTHORIZED, f"{ask.client} asked for {ask.int_addr}: a host "
                          "maps only its own address (portmap.third_party is off)")
        if not any(ask.int_addr in n for n in self._lans()):
            raise Refused(NOT_AUTHORIZED, f"{ask.int_addr} is on no LAN link")
        if not 1 <= ask.int_port <= 65535:
            raise Refused(NOT_AUTHORIZED, "internal port 0 is not mapped")
        lifetime = min(max(ask.lifetime, 1), cfg.max_lifetime)
        key = (ask.int_addr.version, ask.proto, ask.int_addr, ask.int_port)
        old = self.maps.get(key)
        if old is not None:
            return self._renew(old, ask, lifetime)
        if len(self.maps) >= cfg.total:
            raise Refused(NO_RESOURCES, f"the table holds its {cfg.total} mappings "
                          "(portmap.total)", lifetime=30)
        mine = sum(1 for m in self.maps.values() if m.int_addr == ask.int_addr)
        if mine >= cfg.per_host:
            raise Refused(QUOTA, f"{ask.int_addr} holds its {cfg.per_host} mappings "
                          "(portmap.per_host)", lifetime=30)
        ext = ask.int_port if ask.int_addr.version == 6 else self._choose_port(ask)
        if ask.int_addr.version == 6:
            self._check_permitted(ext, ask)
        m = Mapping(via=ask.via, client=ask.client, proto=ask.proto, int_addr=ask.int_addr,
                    int_port=ask.int_port, ext_port=ext, expires=self.clock() + lifetime,
                    description=ask.description, nonce=ask.nonce, filters=ask.filters,
                    peer=ask.peer)
        self.maps[key] = m
        try:
            self.sync()
        except DatapathError as e:
            del self.maps[key]
            self.sync()
            raise Refused(NO_RESOURCES, f"the data plane refused it: {e}") from None
        self._changed()
        return m

    def _renew(self, old: Mapping, ask: Ask, lifetime: int) -> Mapping:
        if ask.exact and ask.ext_port and ask.int_addr.version == 4 and \
                ask.ext_port != old.ext_port:
            raise Refused(CONFLICT, f"{ask.int_addr} port {ask.int_port} is mapped from "
                          f"external port {old.ext_port} already: one external port per "
                          "inside endpoint")
        if old.nonce and ask.via == "pcp" and old.via == "pcp" and ask.nonce != old.nonce:
            raise Refused(NOT_AUTHORIZED, "another client's mapping (its nonce differs)",
                          lifetime=old.left(self.clock()))
        if ask.peer and not old.peer:
            # A PEER request on an endpoint that has a MAP: the MAP (and its
            # filters) stays; the flow to the peer uses its port.
            if self.clock() + lifetime > old.expires:
                old.expires = self.clock() + lifetime
                self._changed()
            return old
        m = replace(old, expires=self.clock() + lifetime, via=ask.via, client=ask.client,
                    description=ask.description or old.description,
                    nonce=ask.nonce or old.nonce, filters=ask.filters, peer=ask.peer)
        self.maps[m.key] = m
        if m.filters != old.filters:
            self.sync()
        self._changed()
        return m

    # -- the external port ---------------------------------------------------

    def permitted(self, ext: int, ask: Ask) -> str | None:
        """Why ``ask`` may not have external port ``ext``, or None."""
        cfg = self._cfg()
        if ext < 1024 and not cfg.low_ports:
            return f"external port {ext} is below 1024 (portmap.low_ports is off)"
        for r in cfg.rules:
            if (r.ports[0] <= ext <= r.ports[1] and ask.int_addr in r.hosts and
                    r.host_ports[0] <= ask.int_port <= r.host_ports[1]):
                return None if r.allow else "a deny rule matches (portmap.rule)"
        return "no portmap.rule allows it"

    def _check_permitted(self, ext: int, ask: Ask) -> None:
        why = self.permitted(ext, ask)
        if why:
            raise Refused(NOT_AUTHORIZED, why)

    def _taken(self, proto: int) -> dict[int, Mapping]:
        return {m.ext_port: m for m in self.maps.values()
                if m.int_addr.version == 4 and m.proto == proto}

    def _held(self, ext: int, ask: Ask, taken: dict[int, Mapping]) -> tuple[str | None, int]:
        """(why external port ``ext`` cannot be ``ask``'s, or None; the port
        the inside endpoint's live outbound mapping has, or 0)."""
        if ext in taken:
            m = taken[ext]
            return f"external port {ext} is mapped to {m.int_addr}:{m.int_port}", 0
        iface = self._external()
        if iface is None:
            return "the external interface is not up", 0
        pin = Pin(proto=ask.proto, iface=iface, int_addr=ask.int_addr, int_port=ask.int_port,
                  ext_port=ext)
        held, existing = self._dp.portmap_probe(pin, self._now_ms())
        if held == PM_FREE:
            return None, existing
        if held == PM_FORWARD:
            return f"external port {ext} is a port forward's ([[nat.forward]])", existing
        return f"external port {ext} is held by another host's connections", existing

    def _choose_port(self, ask: Ask) -> int:
        """The external port for a new IPv4 mapping: the inside endpoint's
        live outbound port if it has one (its mapping is that one), else the
        port asked for, else (unless ``exact``) a free permitted one."""
        want = ask.ext_port or ask.int_port
        taken = self._taken(ask.proto)
        why, existing = self._held(want, ask, taken)
        if existing and not (ask.exact and existing != want):
            self._check_permitted(existing, ask)
            return existing
        if why is None and self.permitted(want, ask) is None:
            return want
        if ask.exact:
            reason = why or self.permitted(want, ask) or ""
            raise Refused(CONFLICT if why else NOT_AUTHORIZED, reason)
        cfg = self._cfg()
        if not any(r.allow and ask.int_addr in r.hosts and
                   r.host_ports[0] <= ask.int_port <= r.host_ports[1] for r in cfg.rules):
            raise Refused(NOT_AUTHORIZED, f"no portmap.rule allows {ask.int_addr} port "
                          f"{ask.int_port} any external port")
        lo = 1 if cfg.low_ports else 1024
        for _ in range(SEARCH_TRIES):
            p = self._rng.randint(lo, 65535)
            if self.permitted(p, ask) is None and self._held(p, ask, taken)[0] is None:
                return p
        raise Refused(NO_RESOURCES, "no permitted external port is free", lifetime=30)

    # -- ending --------------------------------------------------------------

    def delete(self, key: tuple[int, int, Address, int], why: str,
               by: Address | None = None, nonce: bytes | None = None) -> Mapping:
        """Ends mapping ``key``; ``by`` (a client) may end only a mapping of
        its own address, or one it made; raises Refused."""
        m = self.maps.get(key)
        if m is None:
            raise Refused(NOT_FOUND, "no such mapping")
        if by is not None and by not in (m.int_addr, m.client):
            raise Refused(NOT_AUTHORIZED, f"{by} may not delete {m.int_addr}'s mapping")
        if nonce is not None and m.nonce and nonce != m.nonce:
            raise Refused(NOT_AUTHORIZED, "another client's mapping (its nonce differs)",
                          lifetime=m.left(self.clock()))
        del self.maps[key]
        self.sync()
        self._changed()
        self._event("deleted", {**m.as_dict(self.clock()), "why": why})
        return m

    def by_external(self, proto: int, ext_port: int, family: int = 4) -> Mapping | None:
        for m in self.maps.values():
            if m.proto == proto and m.ext_port == ext_port and m.int_addr.version == family:
                return m
        return None

    def expire(self) -> int:
        """Ends the mappings whose lifetime is over; how many."""
        now = self.clock()
        gone = [k for k, m in self.maps.items() if m.expires <= now]
        for k in gone:
            m = self.maps.pop(k)
            self._event("expired", m.as_dict(now))
        if gone:
            self.expired += len(gone)
            self.sync()
            self._changed()
        return len(gone)

    def clear(self, why: str) -> int:
        n = len(self.maps)
        for k in list(self.maps):
            self.delete(k, why)
        return n

    def restore(self, saved: list[Mapping]) -> dict[str, int]:
        """Puts back saved mappings that the running config grants again,
        each with its own external port and no longer than it had left."""
        now = self.clock()
        out = {"restored": 0, "expired": 0, "refused": 0}
        self._defer = True
        try:
            for m in saved:
                if m.expires <= now:
                    out["expired"] += 1
                    continue
                ask = Ask(via=m.via, client=m.client, proto=m.proto, int_addr=m.int_addr,
                          int_port=m.int_port, lifetime=m.left(now) or 1, ext_port=m.ext_port,
                          exact=True, description=m.description, nonce=m.nonce,
                          filters=m.filters, peer=m.peer)
                try:
                    got = self._grant(ask)
                except Refused as r:
                    out["refused"] += 1
                    self._event("refused", {"via": "state", "internal": str(m.int_addr),
                                            "internal_port": m.int_port, "code": r.code,
                                            "reason": r.reason})
                    continue
                got.expires = min(got.expires, m.expires)
                out["restored"] += 1
        finally:
            self._defer = False
        self.sync()
        return out

    def drop_refused(self) -> int:
        """After a reload: ends the mappings the new config no longer grants
        (rules, low ports, LAN links, third parties)."""
        cfg = self._cfg()
        gone = []
        for k, m in self.maps.items():
            ask = Ask(via=m.via, client=m.client, proto=m.proto, int_addr=m.int_addr,
                      int_port=m.int_port, lifetime=1, ext_port=m.ext_port)
            if (self.permitted(m.ext_port, ask) is not None or
                    not any(m.int_addr in n for n in self._lans()) or
                    (m.int_addr != m.client and not cfg.third_party)):
                gone.append(k)
        for k in gone:
            self.delete(k, "no longer permitted by the config")
        return len(gone)

    # -- the data plane ------------------------------------------------------

    def sync(self) -> None:
        """Tells the data plane the whole table (after any change, a reload
        or a WAN address change)."""
        if self._defer:
            return
        iface = self._external()
        pins = [] if iface is None else [
            Pin(proto=m.proto, iface=iface, int_addr=m.int_addr, int_port=m.int_port,
                ext_port=m.ext_port, filters=m.filters) for m in self.maps.values()]
        self._dp.set_portmaps(pins)
