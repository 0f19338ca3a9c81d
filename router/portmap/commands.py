"""The control socket's port mapping commands: ``portmap.list``,
``portmap.delete`` and ``portmap.events`` (``routerctl portmap ...``)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any

from router import events
from router.control import CommandError, Stream
from router.portmap.service import PortmapService
from router.portmap.table import PROTO_NAMES, Refused

PROTOCOLS = {name: number for number, name in PROTO_NAMES.items()}


def handlers(service: PortmapService, hub: events.EventHub) -> dict[str, Any]:
    async def list_(args: Mapping[str, Any]) -> Any:
        return service.status()

    async def delete(args: Mapping[str, Any]) -> Any:
        """One mapping: an IPv4 one by protocol and external port, a pinhole
        by protocol, inside address and port."""
        proto = PROTOCOLS.get(str(args.get("protocol", "")).lower())
        port = args.get("port")
        if proto is None or not isinstance(port, int) or isinstance(port, bool) or \
                not 1 <= port <= 65535:
            raise CommandError("give a protocol (tcp, udp) and a port (1-65535)")
        address = args.get("address")
        if address:
            try:
                inside = ip_address(str(address))
            except ValueError:
                raise CommandError(f"not an address: {address!r}") from None
            key: tuple[int, int, Any, int] = (inside.version, proto, inside, port)
        else:
            m = service.table.by_external(proto, port)
            if m is None:
                raise CommandError(f"no {PROTO_NAMES[proto]} mapping of external port {port}")
            key = m.key
        try:
            m = service.table.delete(key, "deleted by routerctl")
        except Refused as e:
            raise CommandError(e.reason) from None
        return {"deleted": m.as_dict(service.table.clock())}

    async def events_(args: Mapping[str, Any]) -> Any:
        return Stream(events.stream(hub, frozenset({"PORTMAP"})))

    return {"portmap.list": list_, "portmap.delete": delete, "portmap.events": events_}
