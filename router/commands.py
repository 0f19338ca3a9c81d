"""The control socket's commands: status, conntrack (list, get, delete,
count, flush, events), stats, interfaces, routes, firewall, load balancers,
NAT mappings, config, capture and reload.  Each handler takes the request's
arguments and returns what is sent back (or a ``Stream``); a bad request is a
``CommandError`` with its reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import IPv4Interface, ip_address
from typing import Any

from router import __version__, config, ctfilter, events
from router.config import Config
from router.conntrack_text import entry_json, nat_mappings
from router.control import CommandError, Stream
from router.datapath import CaptureFilterError, Datapath
from router.flowlog.exporter import FlowExporter
from router.ha.service import HaService
from router.metrics import MetricsServer
from router.pacing import now_ms
from router.portmap.service import PortmapService
from router.tables import Tables
from router.tun import Tun


class Commands:
    """The control handlers (a part of ``app.Router``)."""

    cfg: Config
    dp: Datapath
    log: Any
    tables: Tables
    tuns: list[Tun]
    events: events.EventHub
    metrics: MetricsServer | None
    started: float
    config_hash: str
    queues: int
    steering: tuple[int, int] | None
    reloads: dict[str, int]
    capturing: str | None
    reload: Callable[[], Awaitable[dict[str, Any]]]  # the router's (app.py)
    helper_states: Callable[[], dict[str, dict[str, Any]]]  # the router's (app.py)
    learned: dict[str, IPv4Interface]
    portmap: PortmapService
    ha: HaService
    flowlog: FlowExporter

    def _handlers(self) -> dict[str, Any]:
        return {
            "status": self._h_status,
            "conntrack.list": self._h_ct_list,
            "conntrack.count": self._h_ct_count,
            "conntrack.flush": self._h_ct_flush,
            "conntrack.delete": self._h_ct_delete,
            "conntrack.get": self._h_ct_get,
            "conntrack.update": self._h_ct_update,
            "stats": self._h_stats,
            "interfaces": self._h_interfaces,
            "reload": self._h_reload,
            "config.show": self._h_config_show,
            "nat.list": self._h_nat_list,
            "lb.list": self._h_lb_list,
            "firewall.list": self._h_fw_list,
            "conntrack.events": self._h_ct_events,
            "capture": self._h_capture,
            "routes": self._h_routes,
        }

    async def _h_status(self, args: Mapping[str, Any]) -> Any:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "config": self.cfg.path,
            "config_sha256": self.config_hash,
            "conntrack": {"count": self.dp.count(), "max": self.dp.capacity},
            "interfaces": len(self.tuns),
            "queues": self.queues,
            "syn_queue": self.steering is not None,
            "workers": self.dp.worker_stats(),
            "reloads": dict(self.reloads),
            "metrics": self.metrics.address if self.metrics else None,
            # On a gateway: the WAN leases, and the helper programs (the WAN's
            # DHCP clients, dnsmasq) with their pids and restarts.
            "wan": {i.name: str(self.learned[i.name]) if i.name in self.learned else None
                    for i in self.cfg.interfaces if i.dhcp},
            "helpers": self.helper_states(),
            # Port mapping (routerctl portmap list has the mappings).
            "portmap": {"mappings": len(self.portmap.table.maps), "epoch": self.portmap.epoch(),
                        "serving": [p for p in ("pcp", "natpmp", "upnp")
                                    if getattr(self.cfg.portmap, p)]}
            if self.cfg.portmap.enabled else None,
            # The flow log's counters.
            "ipfix": self.flowlog.status() if self.flowlog.enabled else None,
            # High availability (routerctl ha status has the rest).
            "ha": {"role": self.ha.role, "ready": self.ha.ready, "peer": self.cfg.ha.peer}
            if self.ha.enabled else None,
        }

    def _filter(self, args: Mapping[str, Any]) -> Any:
        """The conntrack filter of a request (conntrack-tools' options, see
        router/ctfilter.py), as a predicate on entry JSON."""
        try:
            filt = ctfilter.parse(args)
        except ValueError as e:
            raise CommandError(str(e)) from None
        zone = args.get("fw_zone")
        if zone is not None and zone not in self.cfg.zones:
            raise CommandError(f"--fw-zone: no zone {zone!r} (zones: "
                               f"{', '.join(self.cfg.zones)})")

        def match(j: Mapping[str, Any]) -> bool:
            return filt.match(j) and (zone is None or
                                      self._zone_of(j["original"]["src"]) == zone)
        match.empty = filt.empty and zone is None  # type: ignore[attr-defined]
        return match

    def _zone_of(self, addr: str) -> str | None:
        """The zone a source address belongs to: that of the interface its
        route leaves through (longest prefix)."""
        try:
            a = ip_address(addr)
        except ValueError:
            return None
        routes = self.tables.routes if a.version == 4 else self.tables.routes6
        best = None
        for r in routes:
            if a in r.prefix and (best is None or r.prefix.prefixlen > best.prefix.prefixlen):
                best = r
        return self.cfg.interfaces[best.iface].zone if best is not None else None

    async def _h_ct_list(self, args: Mapping[str, Any]) -> Any:
        match = self._filter(args)
        return [j for j in map(entry_json, self.dp.conntrack(now_ms())) if match(j)]

    async def _h_ct_delete(self, args: Mapping[str, Any]) -> Any:
        """Deletes the connections matching the filters, like conntrack -D;
        without any filter it refuses (use flush)."""
        if self._filter(args).empty:
            raise CommandError("delete needs at least one filter (or use conntrack flush)")
        deleted = [e for e in await self._h_ct_list(args) if self.dp.delete(e["id"], now_ms())]
        self.log.info("ct.deleted", entries=len(deleted),
                      **{k: v for k, v in args.items() if v is not None})
        return {"deleted": len(deleted), "entries": deleted}

    async def _h_ct_get(self, args: Mapping[str, Any]) -> Any:
        """The connection with exactly this original tuple, like conntrack -G."""
        missing = [k for k in ("proto", "src", "dst", "sport", "dport") if args.get(k) is None]
        if missing:
            raise CommandError(f"get needs the whole original tuple; missing: "
                               f"{', '.join(missing)}")
        found = await self._h_ct_list(args)
        if not found:
            raise CommandError("0 flow entries: no such connection")
        return found[0]

    async def _h_ct_update(self, args: Mapping[str, Any]) -> Any:
        """Sets the time left of the matching connections, like conntrack
        -U --timeout; returns them as they are now."""
        timeout = args.get("timeout")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or \
                not 0 <= timeout <= config.MAX_TIMEOUT:
            raise CommandError(f"--timeout: seconds from 0 to {config.MAX_TIMEOUT} (update sets "
                               f"the time left; it is the only field it changes)")
        now = now_ms()
        updated = [j["id"] for j in await self._h_ct_list(args)
                   if self.dp.set_timeout(j["id"], now, timeout)]
        self.log.info("ct.updated", entries=len(updated), timeout=timeout)
        match = set(updated)
        return [j for j in map(entry_json, self.dp.conntrack(now_ms())) if j["id"] in match]

    async def _h_ct_count(self, args: Mapping[str, Any]) -> Any:
        return {"count": self.dp.count(), "max": self.dp.capacity}

    async def _h_ct_flush(self, args: Mapping[str, Any]) -> Any:
        n = self.dp.count()
        self.dp.flush(now_ms())
        self.log.info("ct.flushed", entries=n)
        return {"flushed": n}

    async def _h_stats(self, args: Mapping[str, Any]) -> Any:
        return {"counters": self.dp.counters(), "drops": self.dp.drops(),
                "conntrack": {"count": self.dp.count(), "max": self.dp.capacity}}

    async def _h_interfaces(self, args: Mapping[str, Any]) -> Any:
        return [{"name": i.name, "zone": i.zone, "address": str(i.address),
                 "address6": str(i.address6) if i.address6 is not None else None,
                 "mtu": i.mtu, "netns": i.netns, **self.dp.iface_stats(n)}
                for n, i in enumerate(self.cfg.interfaces)]

    async def _h_fw_list(self, args: Mapping[str, Any]) -> Any:
        stats = self.dp.fw_stats()
        rules = []
        for n, rule in enumerate(self.cfg.firewall.rules):
            packets, nbytes = stats[n] if n < len(stats) else (0, 0)
            rules.append({"number": n, **config.rule_dict(rule), "packets": packets,
                          "bytes": nbytes})
        return {"forward": self.cfg.firewall.forward, "input": self.cfg.firewall.input,
                "policies": [{"from": p.from_zone, "to": p.to_zone, "action": p.action}
                             for p in self.cfg.firewall.policies],
                "rules": rules}

    async def _h_lb_list(self, args: Mapping[str, Any]) -> Any:
        counts = self.dp.lb_stats()
        out = []
        n = 0
        for lb in self.cfg.loadbalancers:
            backends = []
            for b in lb.backends:
                backends.append({"address": str(b.address), "port": b.port, "weight": b.weight,
                                 "connections": counts[n] if n < len(counts) else 0})
                n += 1
            out.append({"name": lb.name, "address": str(lb.address), "protocol": lb.protocol,
                        "port": lb.port, "masquerade": lb.masquerade, "backends": backends})
        return out

    async def _h_nat_list(self, args: Mapping[str, Any]) -> Any:
        return nat_mappings(self.dp.conntrack(now_ms()), self.cfg.nat.filtering)

    async def _h_config_show(self, args: Mapping[str, Any]) -> Any:
        return {"path": self.cfg.path, "sha256": self.config_hash,
                "config": config.to_dict(self.cfg)}

    async def _h_ct_events(self, args: Mapping[str, Any]) -> Any:
        """Streams connection events like conntrack -E, filtered by type
        and by the conntrack list filters."""
        types = args.get("types") or list(events.CT_EVENT_TYPES)
        if not isinstance(types, list) or not set(types) <= set(events.CT_EVENT_TYPES):
            raise CommandError(f"event types are {', '.join(events.CT_EVENT_TYPES)}")
        listener = events.Listener(frozenset(types), self._filter(args))
        hub = self.events

        async def messages() -> Any:
            hub.subscribe(listener)
            self.log.info("events.listener_joined", listeners=len(hub.listeners))
            try:
                async for msg in listener.messages():
                    yield msg
            finally:
                hub.unsubscribe(listener)
                self.log.info("events.listener_left", listeners=len(hub.listeners))
        return Stream(messages())

    async def _h_capture(self, args: Mapping[str, Any]) -> Any:
        """Streams the packets of one interface or of every one (``any``),
        both directions, matching a tcpdump filter, for at most ``count``
        packets or ``duration`` seconds (0: until the reader leaves)."""
        names = [i.name for i in self.cfg.interfaces]
        name = args.get("interface")
        if name != "any" and name not in names:
            raise CommandError(f"no interface {name!r} (interfaces: {', '.join(names)}, "
                               f"or any)")
        count = args.get("count", 0)
        duration = args.get("duration", 10.0)
        snaplen = args.get("snaplen", 2048)
        filt = args.get("filter") or ""
        if not isinstance(count, int) or count < 0:
            raise CommandError("count must be a whole number >= 0")
        if not isinstance(duration, (int, float)) or not 0 <= duration <= 3600:
            raise CommandError("duration must be between 0 (until stopped) and 3600 seconds")
        if not isinstance(snaplen, int) or not 20 <= snaplen <= 65535:
            raise CommandError("snaplen must be between 20 and 65535")
        if not isinstance(filt, str) or len(filt) > 4096 or "\0" in filt:
            raise CommandError("filter: a tcpdump expression of at most 4096 characters")
        try:
            Datapath.capture_check(filt, snaplen)
        except CaptureFilterError as e:
            raise CommandError(f"filter {filt!r}: {e}") from None
        if self.capturing is not None:
            raise CommandError(f"a capture on {self.capturing} is running; one at a time")
        ifaces = list(range(len(names))) if name == "any" else [names.index(name)]
        self.capturing = name

        async def messages() -> Any:
            self.log.info("capture.started", interface=name, count=count, duration=duration,
                          filter=filt)
            try:
                yield {"type": "INTERFACES", "names": [names[i] for i in ifaces]}
                async for msg in events.capture(self.dp, ifaces, count, float(duration),
                                                snaplen, filt):
                    yield msg
            finally:
                self.capturing = None
                self.log.info("capture.stopped", interface=name)
        return Stream(messages())

    async def _h_routes(self, args: Mapping[str, Any]) -> Any:
        out = []
        for r in sorted(self.tables.routes, key=lambda r: -r.prefix.prefixlen):
            i = self.cfg.interfaces[r.iface]
            connected = r.gateway is None and r.prefix == i.address.network
            out.append({"destination": "default" if r.prefix.prefixlen == 0
                        else str(r.prefix),
                        "gateway": str(r.gateway) if r.gateway else None,
                        "interface": i.name, "zone": i.zone,
                        "proto": "kernel" if connected else "static",
                        "src": str(i.address.ip) if connected else None})
        for r6 in sorted(self.tables.routes6, key=lambda r: -r.prefix.prefixlen):
            i = self.cfg.interfaces[r6.iface]
            connected = i.address6 is not None and r6.prefix == i.address6.network
            out.append({"destination": "default" if r6.prefix.prefixlen == 0
                        else str(r6.prefix), "gateway": None, "interface": i.name,
                        "zone": i.zone, "proto": "kernel" if connected else "static",
                        "src": str(i.address6.ip) if connected and i.address6 else None})
        return out

    def _rule_text(self, n: int) -> str:
        if 0 <= n < len(self.cfg.firewall.rules):
            d = config.rule_dict(self.cfg.firewall.rules[n])
            return " ".join(f"{k}={v}" for k, v in d.items() if k != "comment")
        return ""

    async def _h_reload(self, args: Mapping[str, Any]) -> Any:
        r = await self.reload()
        if not r["applied"]:
            raise CommandError(f"reload rejected: {r['error']}")
        return r
