"""Port mapping as the router runs it: the table, its state file, the
servers the config turns on (PCP and NAT-PMP on UDP 5351, the UPnP IGD),
expiry, and what a reload or a WAN address change does to them.

The router calls: ``restore()`` after privileges drop (before the
connections come back: those a mapping let in need it), ``start()`` in the
event loop, ``reconfigure()`` after every load of new tables, ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from router.config import Config
from router.config.model import PCP_PORT, UNADDRESSED
from router.datapath import Datapath
from router.portmap import natpmp_wire, pcp_wire, store
from router.portmap.natpmp import NatPmpServer
from router.portmap.pcp import PcpServer
from router.portmap.server import LanLink, PortServer
from router.portmap.table import Table
from router.state import StateError

EXPIRY_INTERVAL = 1.0
SAVE_DELAY = 1.0  # changes are written within this many seconds


class PortmapService:
    def __init__(self, cfg: Callable[[], Config], dp: Datapath, log: Any,
                 publish: Callable[[dict[str, Any]], None], now_ms: Callable[[], int],
                 key: Callable[[], bytes | None]) -> None:
        self._cfg = cfg
        self._dp = dp
        self._log = log
        self._publish = publish
        self._key = key           # the state key (the keeper's), None: no state
        self.table = Table(lambda: cfg().portmap, self.lan_networks, self.external_index, dp,
                           now_ms, self._on_event, self._changed)
        self.epoch_base = time.time()
        self.pcp = PcpServer(self.table, lambda: cfg().portmap, self.external_address,
                             self.epoch)
        self.natpmp = NatPmpServer(self.table, self.external_address, self.epoch)
        self.server: PortServer | None = None
        self.upnp: Any = None     # router.portmap.upnp.Igd, when on
        self._tasks: list[asyncio.Task[None]] = []
        self._save_handle: asyncio.TimerHandle | None = None
        self._last_external: IPv4Address | None = None
        self.restored = False
        self._pcp_pending = False  # an ANNOUNCE waits for the external address

    # -- what the config says -----------------------------------------------

    def lan_networks(self) -> list[IPv4Network | IPv6Network]:
        out: list[IPv4Network | IPv6Network] = []
        for i in self._cfg().interfaces:
            if i.lan is not None:
                out.append(i.address.network)
                if i.address6 is not None:
                    out.append(i.address6.network)
        return out

    def lan_links(self) -> list[LanLink]:
        return [LanLink(name=i.attach, address=i.address.ip,
                        address6=i.address6.ip if i.address6 is not None else None,
                        network=i.address.network)
                for i in self._cfg().interfaces if i.lan is not None and i.attach]

    def _addresses(self) -> list[IPv4Address | IPv6Address]:
        out: list[IPv4Address | IPv6Address] = []
        for link in self.lan_links():
            out.append(link.address)
            if link.address6 is not None:
                out.append(link.address6)
        return out

    def external_index(self) -> int | None:
        name = self._cfg().portmap.interface
        return next((n for n, i in enumerate(self._cfg().interfaces) if i.name == name), None)

    def external_address(self) -> IPv4Address | None:
        n = self.external_index()
        if n is None:
            return None
        a = self._cfg().interfaces[n].address
        return None if a == UNADDRESSED else a.ip

    def _wan_counters(self) -> dict[str, int]:
        n = self.external_index()
        return self._dp.iface_stats(n) if n is not None else {}

    def epoch(self) -> int:
        return int(time.time() - self.epoch_base)

    # -- life cycle ----------------------------------------------------------

    def state_dir(self) -> str | None:
        path = self._cfg().conntrack.state_file
        return os.path.dirname(path) if path and self._key() is not None else None

    def restore(self) -> None:
        """After privileges drop: the mappings the last run had."""
        directory, key = self.state_dir(), self._key()
        if not self._cfg().portmap.enabled or directory is None or key is None:
            return
        try:
            saved = store.load(directory, key)
        except (OSError, StateError) as e:
            self._log.error("portmap.state_refused", file=os.path.join(directory, store.NAME),
                            reason=str(e))
            return
        if saved is None:
            return
        self.epoch_base = saved.epoch_base
        counts = self.table.restore(saved.maps)
        self.restored = True
        self._log.info("portmap.restored", file=os.path.join(directory, store.NAME),
                       epoch=self.epoch(), **counts)

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._expire()))
        await self._apply(self._cfg())
        self._last_external = self.external_address()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        await self._stop_servers()
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
            self.save()

    async def reconfigure(self) -> None:
        """After the tables were loaded again (reload, WAN address): the
        interfaces may have moved, the rules and switches changed."""
        self.table.sync()
        if self.table.drop_refused():
            self._log.info("portmap.reconfigured", mappings=len(self.table.maps))
        await self._apply(self._cfg())
        ext = self.external_address()
        if ext != self._last_external:
            self._last_external = ext
            self._log.info("portmap.external_address", address=str(ext) if ext else None)
            self._announce()
            self._tell_pcp_clients(ext)

    async def _apply(self, cfg: Config) -> None:
        pm = cfg.portmap
        want_udp = pm.pcp or pm.natpmp
        if self.server is not None and (not want_udp or
                                        self.server.addresses != self._addresses()):
            await self.server.stop()
            self.server = None
        if want_udp and self.server is None:
            server = PortServer(self.pcp, self.natpmp, self.lan_networks, self._log)
            try:
                await server.start(self._addresses())
            except OSError as e:  # the port is taken: said, and the rest goes on
                await server.stop()
                self._log.error("portmap.cannot_serve", port=PCP_PORT, reason=str(e))
            else:
                self.server = server
                self._log.info("portmap.serving", pcp=pm.pcp, natpmp=pm.natpmp,
                               external=pm.interface, epoch=self.epoch())
                # Clients hear of a lost table (and the address) once
                # mappings can be made again: with the WAN address (a DHCP
                # lease may come seconds after the start).
                self._pcp_pending = self._pcp_pending or not self.restored
                self._announce()
        if self.server is not None:
            self.server.pcp = self.pcp if pm.pcp else None
            self.server.natpmp = self.natpmp if pm.natpmp else None
        await self._apply_upnp(cfg)
        if not pm.enabled and self.table.maps:
            self.table.clear("port mapping turned off")

    async def _apply_upnp(self, cfg: Config) -> None:
        want = cfg.portmap.upnp
        if self.upnp is not None and (not want or self.upnp.settings != self._upnp_settings()):
            await self.upnp.stop()
            self.upnp = None
        if want and self.upnp is None:
            from router.portmap.upnp import Igd  # aiohttp and the UPnP library: when on
            igd = Igd(self.table, self.lan_links(), cfg.portmap.upnp_port,
                      self.external_address, self._wan_counters, self._log,
                      self._upnp_settings())
            try:
                await igd.start()
            except OSError as e:  # its HTTP or SSDP port is taken
                await igd.stop()
                self._log.error("portmap.cannot_serve", port=cfg.portmap.upnp_port,
                                reason=str(e))
                return
            self.upnp = igd

    def _upnp_settings(self) -> tuple[Any, ...]:
        return (self._cfg().portmap.upnp_port, tuple(self.lan_links()))

    async def _stop_servers(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.upnp is not None:
            await self.upnp.stop()
            self.upnp = None

    def _announce(self) -> None:
        """NAT-PMP's external address to the LAN (at start and when it
        changes), and PCP's ANNOUNCE when the mappings were lost (a start
        without state: the epoch began again, RFC 6887 14.1.3); both only
        while there is an external address."""
        if self.server is None or self.external_address() is None:
            return
        pm = self._cfg().portmap
        pcp_announce, self._pcp_pending = self._pcp_pending, False

        def payloads() -> list[bytes]:
            out = []
            ext = self.external_address()
            if pm.natpmp and ext is not None:
                out.append(natpmp_wire.address_answer(natpmp_wire.SUCCESS, self.epoch(), ext))
            if pm.pcp and pcp_announce:
                out.append(pcp_wire.announce(self.epoch()))
            return out
        self.server.announce(self.lan_links(), payloads)

    def _tell_pcp_clients(self, ext: IPv4Address | None) -> None:
        """A new external address: each PCP client hears its mappings' new
        address at once (RFC 6887 14.2), not at its next renewal."""
        if self.server is None or ext is None or not self._cfg().portmap.pcp:
            return
        now = self.table.clock()
        msgs = [(m.client, pcp_wire.unsolicited_map(
                    m.nonce, m.proto, m.int_port, m.ext_port, ext, m.left(now), self.epoch(),
                    (m.filters[0][0].network_address, m.filters[0][1]) if m.peer else None))
                for m in self.table.maps.values()
                if m.via == "pcp" and m.int_addr.version == 4 and len(m.nonce) == 12]
        if msgs:
            self.server.tell(msgs, self.lan_links())

    # -- expiry, events, saving ---------------------------------------------

    async def _expire(self) -> None:
        """Ends each mapping when its lifetime is over (to within a tenth of
        a second), looking at least once a second for new ones."""
        while True:
            soonest = min((m.expires for m in self.table.maps.values()), default=None)
            wait = EXPIRY_INTERVAL if soonest is None else soonest - self.table.clock()
            await asyncio.sleep(min(EXPIRY_INTERVAL, max(0.1, wait)))
            self.table.expire()

    def _on_event(self, what: str, fields: dict[str, Any]) -> None:
        log = self._log.warning if what == "refused" else self._log.info
        log(f"portmap.{what}", **fields)
        self._publish({"type": "PORTMAP", "event": what, **fields})

    def _changed(self) -> None:
        if self._save_handle is None and self.state_dir() is not None:
            with contextlib.suppress(RuntimeError):  # no loop (restore, tests)
                self._save_handle = asyncio.get_running_loop().call_later(
                    SAVE_DELAY, self._save_soon)

    def _save_soon(self) -> None:
        self._save_handle = None
        maps = list(self.table.maps.values())
        task = asyncio.get_running_loop().run_in_executor(None, self._write, maps)
        task.add_done_callback(lambda f: f.exception())

    def save(self) -> None:
        self._write(list(self.table.maps.values()))

    def _write(self, maps: list[Any]) -> None:
        directory, key = self.state_dir(), self._key()
        if directory is None or key is None:
            return
        try:
            store.save(directory, self.epoch_base, maps, key)
        except OSError as e:
            self._log.error("portmap.state_not_saved", directory=directory, reason=str(e))

    def status(self) -> dict[str, Any]:
        now = self.table.clock()
        return {"enabled": self._cfg().portmap.enabled, "epoch": self.epoch(),
                "external": str(self.external_address() or ""),
                "mappings": [m.as_dict(now) for m in self.table.maps.values()],
                "granted": dict(self.table.granted), "refused": dict(self.table.refused),
                "expired": self.table.expired,
                "server": dict(self.server.counts) if self.server else {}}
