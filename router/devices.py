"""The router's devices and the threads that move their packets: opening
the TUN devices, attaching them to the data plane, the event loop's readers
(and busy polling) when it moves the packets itself, the C workers when they
do, and swapping interfaces in and out on reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from router import attach, config, hostlink
from router.config import Config
from router.datapath import Datapath, DatapathError
from router.pacing import now_ms
from router.tables import Tables, compile_tables
from router.tun import Tun, TunError, open_tun


class Devices:
    """TUN devices, readers and workers (a part of ``app.Router``)."""

    cfg: Config
    dp: Datapath
    log: Any
    tables: Tables
    tuns: list[Tun]
    vnet_hdr: bool
    queues: int
    dev_queues: int
    threaded: bool
    steering: tuple[int, int] | None
    flow_steering: int | None
    _stop: asyncio.Event
    _poll_errors: int
    _readers: list[int]
    _workers: tuple[Any, ...] | None
    _spinning: bool
    _last_packet: int
    _fork_hook: bool
    _register_fork_hook: Callable[[], None]  # the router's (app.py)
    _kernel_routes = False  # sync_kernel_routes() installed routes

    def open_devices(self) -> None:
        """Opens and configures every TUN device.  Runs before the event loop
        starts: netlink setup is synchronous and must not run inside it."""
        try:
            for iface in self.cfg.interfaces:
                tun = self._open_tun(iface, self.cfg.dataplane.tun_device)
                self.tuns.append(tun)
                self.log.info("tun.opened", interface=iface.name, fd=tun.fd,
                              netns=iface.netns, attach=iface.attach,
                              address=str(iface.address),
                              offloads=hex(tun.offloads) if self.vnet_hdr else None,
                              queues=self.dev_queues if self.dev_queues > 1 else None,
                              syn_queue=self.steering is not None or None)
            self.tables = compile_tables(self.cfg, self._fds(), self.vnet_hdr)
            self.dp.load(self.tables)
            self.sync_kernel_routes(self.cfg)
        except BaseException:
            self.close_devices()
            raise

    def close_devices(self) -> None:
        for tun in self.tuns:
            tun.close()
        self.tuns.clear()
        self.sync_kernel_routes(None)

    def sync_kernel_routes(self, cfg: Config | None) -> None:
        """The kernel routes attached interfaces need (attach.sync_routes)
        and the host link's rule and table (hostlink.sync); none when
        ``cfg`` is None.  A failure is logged: the router goes on, and
        packets through that gateway (or the router's own services) are
        what the kernel cannot reach."""
        wanted = cfg is not None and any(i.attach for i in cfg.interfaces)
        if not wanted and not self._kernel_routes:
            return  # never touched: a router without attached interfaces
        try:
            attach.sync_routes(cfg)
            self._kernel_routes = wanted
        except Exception as e:  # netlink errors come in several types
            self.log.error("attach.routes_failed", reason=str(e))
        try:
            hostlink.sync(cfg)
        except Exception as e:
            self.log.error("hostlink.setup_failed", reason=str(e))

    def _open_tun(self, iface: config.Interface, tun_device: str) -> Tun:
        """Opens one device with the running queue count, its queues steered
        if connection openers have a queue of their own, or flows kept each
        to one queue when there are several."""
        tun = open_tun(iface, self.vnet_hdr, tun_device, self.dev_queues)
        prog = self.steering[0 if self.threaded else 1] if self.steering is not None \
            else self.flow_steering
        if prog is not None:
            try:
                tun.steer(prog)
            except TunError:
                tun.close()
                raise
        return tun

    def _fds(self) -> dict[str, int]:
        return {t.iface.name: t.fd for t in self.tuns}

    def _readable(self, n: int) -> None:
        r = self._poll(n, now_ms())
        if r > 0 and self.cfg.dataplane.busy_poll and not self._spinning:
            self._spinning = True
            self._last_packet = time.monotonic_ns()
            asyncio.get_running_loop().call_soon(self._spin)

    def _poll(self, n: int, now: int) -> int:
        r = self.dp.poll(n, self.cfg.dataplane.batch, now)
        if r < 0:
            self._poll_errors += 1
            if self._poll_errors % 1000 == 1:
                self.log.error("dp.poll_failed", interface=self.cfg.interfaces[n].name,
                               error=os.strerror(-r), count=self._poll_errors)
        return r

    def _spin(self) -> None:
        """Busy polling (``dataplane.busy_poll``): after packets came, poll
        every interface on each loop iteration instead of sleeping until one
        is readable, for as long as packets keep coming within the window.
        A packet then waits for no wakeup: latency close to the kernel's, for
        a core kept busy while traffic flows.  Timers and the control socket
        still run between iterations."""
        now = now_ms()
        got = 0
        for n in range(len(self.tuns)):
            got += max(0, self._poll(n, now))
        t = time.monotonic_ns()
        if got:
            self._last_packet = t
        if t - self._last_packet < self.cfg.dataplane.busy_poll * 1000 and not self._stop.is_set():
            asyncio.get_running_loop().call_soon(self._spin)
        else:
            self._spinning = False

    @staticmethod
    def _link_key(i: config.Interface) -> tuple[Any, ...]:
        """What a device is set up from: a change in it means a new device
        (zone and rp_filter are only tables)."""
        return (i.address, i.mtu, i.txqueuelen, i.netns, i.host_address, i.host_routes,
                i.address6, i.host_address6, i.host_routes6, i.precreated, i.attach)

    def _interface_plan(self, new: Config) -> tuple[set[str], set[str], set[str]]:
        """Names of interfaces kept as they are, removed, and (re)created."""
        old = {i.name: self._link_key(i) for i in self.cfg.interfaces}
        want = {i.name: self._link_key(i) for i in new.interfaces}
        keep = {n for n in want if old.get(n) == want[n]}
        return keep, set(old) - keep, set(want) - keep

    def _fds_by_name(self) -> dict[str, Tun]:
        return {t.iface.name: t for t in self.tuns}

    async def _swap_interfaces(self, new: Config, gone: set[str], added: set[str]) -> None:
        """Closes the devices of removed (or changed) interfaces and opens the
        new ones.  Until the new tables are loaded, the removed interfaces
        are cut off (their descriptors are never written to after close).
        If a device cannot be opened, the old ones are put back."""
        loop = asyncio.get_running_loop()
        by_name = self._fds_by_name()
        interim = {n: t.fd for n, t in by_name.items() if n not in gone}
        self.dp.load(compile_tables(self.cfg, interim, self.vnet_hdr))
        if self.threaded:
            # Workers hold the descriptors: they stop before any is closed,
            # and go on with the kept devices while the new ones open.
            self._stop_workers()
            self._attach([by_name.get(i.name) if i.name not in gone else None
                          for i in self.cfg.interfaces])
        for n in gone:
            if by_name[n].fd in self._readers:
                loop.remove_reader(by_name[n].fd)
                self._readers.remove(by_name[n].fd)
            # Off the loop: an attached interface's hooks come off by netlink.
            await loop.run_in_executor(None, by_name[n].close)
            self.log.info("tun.closed", interface=n)
        opened: dict[str, Tun] = {}
        try:
            for iface in new.interfaces:
                if iface.name in added:
                    opened[iface.name] = await loop.run_in_executor(
                        None, self._open_tun, iface, new.dataplane.tun_device)
                    self.log.info("tun.opened", interface=iface.name,
                                  fd=opened[iface.name].fd, netns=iface.netns)
        except TunError:
            for t in opened.values():
                await loop.run_in_executor(None, t.close)
            # Put the old devices back as they were.
            restored: dict[str, Tun] = {}
            for iface in self.cfg.interfaces:
                if iface.name in gone:
                    with contextlib.suppress(TunError):
                        restored[iface.name] = await loop.run_in_executor(
                            None, self._open_tun, iface, self.cfg.dataplane.tun_device)
            self.tuns = [restored.get(i.name) or by_name[i.name]
                         for i in self.cfg.interfaces
                         if i.name in restored or i.name not in gone]
            self.dp.load(compile_tables(self.cfg, self._fds(), self.vnet_hdr))
            self._attach()
            raise
        kept = {n: t for n, t in by_name.items() if n not in gone}
        self.tuns = [opened.get(i.name) or kept[i.name] for i in new.interfaces]

    def _attach(self, tuns: list[Tun | None] | None = None) -> None:
        """Hands the devices (``tuns``, default all; None: an interface
        without a device for now), in the running tables' order, to the data
        path: the worker threads, restarted only if what they were given
        changed; or, with ``workers = false``, one event loop reader per
        device, called with the device's interface number.  If the workers
        cannot start (no threads left to the user, say), one queue falls back
        to the event loop; several cannot, since the loop reads queue 0 only."""
        given: list[Tun | None] = list(self.tuns) if tuns is None else tuns
        if self.threaded:
            if not any(t is not None for t in given):
                self._stop_workers()  # nothing to read (only in tests without devices)
                return
            try:
                self._start_workers(given)
                return
            except DatapathError as e:
                if self.queues > 1:
                    raise
                self.log.error("dp.workers_failed", reason=str(e), fallback="event loop")
                self.threaded = False
                if self.steering is not None:  # the loop reads queue 0: all goes there
                    for t in self.tuns:
                        t.steer(self.steering[1])
        loop = asyncio.get_running_loop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers = []
        for n, tun in enumerate(self.tuns):
            loop.add_reader(tun.fd, self._readable, n)
            self._readers.append(tun.fd)

    def _start_workers(self, tuns: list[Tun | None]) -> None:
        """Runs the workers over ``tuns`` (None: an interface without a
        device for now), unless they already run over exactly that."""
        fds = [[t.fds[k] if t is not None else -1 for t in tuns]
               for k in range(self.dev_queues)]
        want = (tuple(map(tuple, fds)), self.cfg.dataplane.batch, self.cfg.dataplane.busy_poll)
        if want == self._workers:
            return
        self._stop_workers()
        # The worker of connection openers gives way to that of established
        # traffic when the CPUs are busy (a flood keeps it busy).
        self.dp.background_workers(0b10 if self.steering is not None else 0)
        self.dp.start_workers(fds, self.cfg.dataplane.batch, self.cfg.dataplane.busy_poll)
        self._workers = want
        self.log.info("dp.workers_started", workers=self.dev_queues,
                      interfaces=sum(t is not None for t in tuns))

    def _stop_workers(self) -> None:
        if self._workers is not None:
            self.dp.stop_workers()
            self._workers = None
