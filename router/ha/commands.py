"""The control socket's high-availability commands (``routerctl ha ...``):
``ha.status``, ``ha.role`` (keepalived's notify: master, backup, fault),
``ha.resync``, ``ha.cache`` and ``ha.events``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router import events
from router.conntrack_text import entry_json
from router.control import CommandError, Stream
from router.ha.entries import to_entry
from router.ha.service import HaService

# keepalived's states, and what each makes of this router.
ROLES = {"master": "active", "backup": "standby", "fault": "standby", "stop": "standby"}


def handlers(service: HaService, hub: events.EventHub) -> dict[str, Any]:
    def need() -> None:
        if not service.enabled:
            raise CommandError("high availability is off: set [ha] mode")

    async def status(args: Mapping[str, Any]) -> Any:
        return service.status()

    async def role(args: Mapping[str, Any]) -> Any:
        need()
        state = str(args.get("state", "")).lower()
        if state not in ROLES:
            raise CommandError(f"give a keepalived state: {', '.join(ROLES)}")
        reason = f"keepalived {state.upper()}"
        if ROLES[state] == "active":
            return {"role": "active", "commit": await service.become_active(reason)}
        service.become_standby(reason)
        return {"role": service.role}

    async def resync(args: Mapping[str, Any]) -> Any:
        need()
        service.resync()
        return {"asked": True}

    async def cache(args: Mapping[str, Any]) -> Any:
        need()
        out = []
        for ct in service.cache():
            e = to_entry(ct)
            if e is not None:
                out.append(entry_json(e) | {"timeout": ct.timeout})
        return {"entries": out}

    async def events_(args: Mapping[str, Any]) -> Any:
        return Stream(events.stream(hub, frozenset({"HA"})))

    return {"ha.status": status, "ha.role": role, "ha.resync": resync, "ha.cache": cache,
            "ha.events": events_}
