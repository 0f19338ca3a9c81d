"""The running router: event loop, signals, reload, GC pacing, control.

One uvloop event loop does everything but move the packets: C worker threads
(one per TUN queue, ``dataplane.queues``; see io.c) do that, and the loop calls
into the data plane under its lock.  With ``dataplane.workers = false`` the
loop moves them too: each TUN descriptor is registered with ``add_reader``; a
wakeup makes one call into C that reads, processes and writes up to
``dataplane.batch`` packets.  Readiness is level-triggered, so a busy interface
is simply called again on the next loop iteration, after timers, signals and
control requests had their turn: no interface can starve another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from ipaddress import ip_address
from typing import Any

from router import __version__, config, configread, events, log, privs
from router.config import Config, ConfigError
from router.control import CommandError, ControlServer, Stream
from router.ctfmt import entry_json, nat_mappings
from router.datapath import Datapath, DatapathError, steering_program
from router.keeper import StateKeeper
from router.metrics import MetricsServer
from router.tables import compile_tables
from router.tun import Tun, TunError, open_tun

GC_SLICE_MIN = 1024
GC_SLICE_MAX = 65536
GC_DELAY_MIN = 0.001
STATS_INTERVAL = 10.0


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Router:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.log = log.get("router")
        self.dp = Datapath(cfg.conntrack.max_entries, batch=cfg.batch)
        self.tuns: list[Tun] = []
        self.vnet_hdr = cfg.offload  # fixed while the devices are open
        self.queues = cfg.queues     # likewise
        self.threaded = cfg.workers or cfg.queues > 1  # C workers move the packets
        # With one queue and workers, connection openers get a queue of their
        # own (steer.c), so a flood of them never delays established traffic:
        # devices then have two queues, each read by a worker.  Loaded now,
        # while the process may still load eBPF (CAP_BPF); else one queue.
        self.steering: tuple[int, int] | None = None  # (SYNs to 1, all to 0)
        if (self.threaded and cfg.queues == 1 and cfg.syn_queue and
                not any(i.precreated for i in cfg.interfaces)):
            try:
                self.steering = (steering_program(1), steering_program(0))
            except DatapathError as e:
                self.log.warning("dp.syn_queue_unavailable", reason=str(e),
                                 hint="connection openers share the devices' one queue")
        self.dev_queues = self.queues + (self.steering is not None)
        self._syn_queue_asked = cfg.syn_queue
        self.tables = compile_tables(cfg, {}, self.vnet_hdr)
        self.started = time.time()
        self.config_hash = cfg.sha256
        self.reloads = {"ok": 0, "failed": 0}
        self._stop = asyncio.Event()
        self._poll_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.control = ControlServer(cfg.control_socket, self._handlers())
        self.metrics = MetricsServer(cfg.metrics_listen, self._snapshot) \
            if cfg.metrics_listen else None
        self.gc_work = {"visited": 0, "expired": 0, "sweeps": 0}
        self.loop_lag = 0.0
        self.events = events.EventHub(self.dp, log.get("events"),
                                      lambda: [i.name for i in self.cfg.interfaces],
                                      self._rule_text)
        self.capturing: str | None = None
        self.keeper = StateKeeper(lambda: self.cfg, self.dp, log.get("router"), now_ms)
        self._readers: list[int] = []
        self._workers: tuple[Any, ...] | None = None  # what the running workers were given
        self._worker_errors = 0
        self._spinning = False
        self._last_packet = 0
        self._reload_lock = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()
        self._early_signal: signal.Signals | None = None
        self._fork_hook = False

    # -- life cycle --------------------------------------------------------

    def catch_early_signals(self) -> None:
        """Until run() installs the event loop's handlers, a SIGTERM or
        SIGINT is remembered instead of killing the process: the router is
        reachable (its control socket exists) before the loop runs, and a
        stop asked for then must still be a clean one."""
        def remember(signum: int, frame: object) -> None:
            self._early_signal = signal.Signals(signum)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, remember)
        self._register_fork_hook()

    def _register_fork_hook(self) -> None:
        if not self._fork_hook:
            os.register_at_fork(after_in_child=_forget_signals)
            self._fork_hook = True

    def open_devices(self) -> None:
        """Opens and configures every TUN device.  Runs before the event loop
        starts: netlink setup is synchronous and must not run inside it."""
        try:
            for iface in self.cfg.interfaces:
                tun = self._open_tun(iface, self.cfg.tun_device)
                self.tuns.append(tun)
                self.log.info("tun.opened", interface=iface.name, fd=tun.fd,
                              netns=iface.netns, address=str(iface.address),
                              offloads=hex(tun.offloads) if self.vnet_hdr else None,
                              queues=self.dev_queues if self.dev_queues > 1 else None,
                              syn_queue=self.steering is not None or None)
            self.tables = compile_tables(self.cfg, self._fds(), self.vnet_hdr)
            self.dp.load(self.tables)
        except BaseException:
            self.close_devices()
            raise

    def restore_state(self) -> None:
        """After privileges drop: the connections the last run saved."""
        self.keeper.restore()

    def save_state(self) -> None:
        """Writes the table for the next start (on a clean stop)."""
        self.keeper.save()

    def setup_privileges(self) -> None:
        """Binds the control socket, and with ``service.user`` set, hands the
        state directory over and drops to that user (see privs.py).  Runs
        after open_devices(), before the event loop."""
        cfg = self.cfg
        if not cfg.user:
            self.control.bind()
            self.keeper.prepare(None)
            return
        acct = privs.lookup(cfg.user, cfg.group)
        self.control.bind(owner=(acct.uid, acct.gid))
        self.keeper.prepare(acct)
        privs.drop(acct, cfg.keep_net_admin)
        self.log.info("router.privileges_dropped", user=acct.user, group=acct.group,
                      keep_net_admin=cfg.keep_net_admin, **privs.status())

    def close_devices(self) -> None:
        for tun in self.tuns:
            tun.close()
        self.tuns.clear()

    async def run(self) -> None:
        """Serves until SIGTERM or SIGINT.  Devices must be open."""
        loop = asyncio.get_running_loop()
        try:
            # Signals first: a SIGTERM that comes while the rest starts must
            # still stop the router cleanly (and save its state).
            self._register_fork_hook()
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            if self._early_signal is not None:
                self._on_stop_signal(self._early_signal)
            self._attach()
            await self.control.start()
            if self.metrics is not None:
                await self.metrics.start()
            self.events.configure(self.cfg.log_drops, self.cfg.log_rate)
            self._tasks = [asyncio.create_task(self.events.run()),
                           asyncio.create_task(self._gc()),
                           asyncio.create_task(self._stats()),
                           asyncio.create_task(self._lag())]
            self._log_warnings(self.cfg)
            self.log.info("router.started", version=__version__, config=self.cfg.path,
                          interfaces=[i.name for i in self.cfg.interfaces],
                          conntrack_max=self.cfg.conntrack.max_entries, pid=os.getpid(),
                          queues=self.queues, workers=self.threaded)
            await self._stop.wait()
            self.log.info("router.stopping")
        finally:
            await self._shutdown(loop)

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await self.control.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers = []
        self._stop_workers()
        self.save_state()
        self.log.info("router.stopped")

    def stop(self) -> None:
        self._stop.set()

    def _open_tun(self, iface: config.Interface, tun_device: str) -> Tun:
        """Opens one device with the running queue count, its queues steered
        if connection openers have a queue of their own."""
        tun = open_tun(iface, self.vnet_hdr, tun_device, self.dev_queues)
        if self.steering is not None:
            try:
                tun.steer(self.steering[0 if self.threaded else 1])
            except TunError:
                tun.close()
                raise
        return tun

    def _fds(self) -> dict[str, int]:
        return {t.iface.name: t.fd for t in self.tuns}

    # -- the data path -----------------------------------------------------

    def _readable(self, n: int) -> None:
        r = self._poll(n, now_ms())
        if r > 0 and self.cfg.busy_poll and not self._spinning:
            self._spinning = True
            self._last_packet = time.monotonic_ns()
            asyncio.get_running_loop().call_soon(self._spin)

    def _poll(self, n: int, now: int) -> int:
        r = self.dp.poll(n, self.cfg.batch, now)
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
        if t - self._last_packet < self.cfg.busy_poll * 1000 and not self._stop.is_set():
            asyncio.get_running_loop().call_soon(self._spin)
        else:
            self._spinning = False

    # -- reload ------------------------------------------------------------

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self.log.info("router.signal", signal=sig.name)
        self._stop.set()

    def _on_sighup(self) -> None:
        self.log.info("config.reload_requested", signal="SIGHUP")
        task = asyncio.ensure_future(self.reload())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def reload(self) -> dict[str, Any]:
        """Reads the config file again and applies it atomically, or keeps the
        running config and every connection if anything is wrong.  One
        reload at a time."""
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> dict[str, Any]:
        path = self.cfg.path
        try:
            new = await configread.read_config(path)
            keep, gone, added = self._interface_plan(new)
            # Everything that can be checked without touching a device.
            fds = {n: t.fd for n, t in self._fds_by_name().items() if n in keep}
            compile_tables(new, fds, self.vnet_hdr)
            if added or gone:
                await self._swap_interfaces(new, gone, added)
            tables = compile_tables(new, self._fds(), self.vnet_hdr)
            self.dp.load(tables)
            self.tables = tables
            by_name = self._fds_by_name()
            # The tables' order (a device is missing only where none is opened).
            self.tuns = [by_name[i.name] for i in new.interfaces if i.name in by_name]
        except (ConfigError, DatapathError, TunError) as e:
            self.reloads["failed"] += 1
            fields: dict[str, Any] = {"file": path, "reason": str(e)}
            if isinstance(e, ConfigError):
                fields |= {"key": e.key, "line": e.line, "reason": e.reason}
            self.log.error("config.rejected", **fields)
            return {"applied": False, "error": str(e)}
        restart = self._needs_restart(new)
        self.cfg = new
        self._attach()
        self.events.configure(new.log_drops, new.log_rate)
        self.config_hash = new.sha256
        self.reloads["ok"] += 1
        self._log_warnings(new)
        self.log.info("config.reloaded", file=path, sha256=self.config_hash[:16],
                      interfaces_added=sorted(added) or None,
                      interfaces_removed=sorted(gone) or None,
                      needs_restart=restart or None)
        return {"applied": True, "needs_restart": restart,
                "interfaces_added": sorted(added), "interfaces_removed": sorted(gone)}

    def _log_warnings(self, cfg: Config) -> None:
        for warning in config.warnings(cfg):
            key, _, reason = warning.partition(": ")
            self.log.warning("config.warning", file=cfg.path, key=key, reason=reason)

    @staticmethod
    def _link_key(i: config.Interface) -> tuple[Any, ...]:
        """What a device is set up from: a change in it means a new device
        (zone and rp_filter are only tables)."""
        return (i.address, i.mtu, i.txqueuelen, i.netns, i.host_address, i.host_routes,
                i.address6, i.host_address6, i.host_routes6, i.precreated)

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
            by_name[n].close()
            self.log.info("tun.closed", interface=n)
        opened: dict[str, Tun] = {}
        try:
            for iface in new.interfaces:
                if iface.name in added:
                    opened[iface.name] = await loop.run_in_executor(
                        None, self._open_tun, iface, new.tun_device)
                    self.log.info("tun.opened", interface=iface.name,
                                  fd=opened[iface.name].fd, netns=iface.netns)
        except TunError:
            for t in opened.values():
                t.close()
            # Put the old devices back as they were.
            restored: dict[str, Tun] = {}
            for iface in self.cfg.interfaces:
                if iface.name in gone:
                    with contextlib.suppress(TunError):
                        restored[iface.name] = await loop.run_in_executor(
                            None, self._open_tun, iface, self.cfg.tun_device)
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
        want = (tuple(map(tuple, fds)), self.cfg.batch, self.cfg.busy_poll)
        if want == self._workers:
            return
        self._stop_workers()
        # The worker of connection openers gives way to that of established
        # traffic when the CPUs are busy (a flood keeps it busy).
        self.dp.background_workers(0b10 if self.steering is not None else 0)
        self.dp.start_workers(fds, self.cfg.batch, self.cfg.busy_poll)
        self._workers = want
        self.log.info("dp.workers_started", workers=self.dev_queues,
                      interfaces=sum(t is not None for t in tuns))

    def _stop_workers(self) -> None:
        if self._workers is not None:
            self.dp.stop_workers()
            self._workers = None

    def _needs_restart(self, new: Config) -> list[str]:
        out = []
        if new.conntrack.max_entries != self.cfg.conntrack.max_entries:
            out.append("conntrack.max")
        if new.control_socket != self.cfg.control_socket:
            out.append("control.socket")
        if new.metrics_listen != self.cfg.metrics_listen:
            out.append("metrics.listen")
        if new.batch > self.dp.batch:
            out.append("dataplane.batch")
        if new.offload != self.vnet_hdr:
            out.append("dataplane.offload")
        if new.queues != self.queues:
            out.append("dataplane.queues")
        if new.syn_queue != self._syn_queue_asked:
            out.append("dataplane.syn_queue")
        if (new.workers or new.queues > 1) != self.threaded:
            out.append("dataplane.workers")
        return out

    # -- periodic work -----------------------------------------------------

    async def _gc(self) -> None:
        """Sweeps the table a slice at a time so that, while few entries
        expire, a full pass takes ``conntrack.gc_interval`` seconds; while
        many expire (a quarter of a slice or more), slices come faster."""
        cap = self.dp.capacity
        slice_ = min(max(cap // 64, GC_SLICE_MIN), GC_SLICE_MAX, cap)
        ticks = max(1, -(-cap // slice_))
        delay = self.cfg.conntrack.gc_interval / ticks
        while True:
            await asyncio.sleep(delay)
            r = self.dp.sweep(now_ms(), slice_)
            self.gc_work["visited"] += r.visited
            self.gc_work["expired"] += r.expired
            self.gc_work["sweeps"] += 1
            base = self.cfg.conntrack.gc_interval / ticks
            share = r.expired / r.visited if r.visited else 0.0
            if share > 0.25:
                delay = max(GC_DELAY_MIN, delay / 2)
            elif share < 0.05:
                delay = min(base, delay * 1.5)
            if r.expired:
                self.log.debug("ct.swept", visited=r.visited, expired=r.expired,
                               entries=r.count, next_in=round(delay, 3))

    async def _lag(self) -> None:
        """How late timers run: the event loop's health, for the metrics."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.5)
            self.loop_lag = max(0.0, loop.time() - t0 - 0.5)

    def _snapshot(self) -> dict[str, Any]:
        """Everything the metrics show, read now (on the loop thread)."""
        return {
            "entries": self.dp.count(),
            "limit": self.dp.capacity,
            "counters": self.dp.counters(),
            "drops": self.dp.drops(),
            "interfaces": {i.name: self.dp.iface_stats(n)
                           for n, i in enumerate(self.cfg.interfaces)},
            "nat_mappings": self.dp.nat_mappings(),
            "gc": dict(self.gc_work),
            "loop_lag": self.loop_lag,
            "workers": self.dp.worker_stats(),
            "reloads": dict(self.reloads),
            "events": {"listeners": len(self.events.listeners),
                       "delivered": self.events.delivered,
                       "missed": self.events.missed_total,
                       "lost": self.dp.events_lost()},
        }

    async def _stats(self) -> None:
        """Turns counter deltas into log events: C counts, Python logs."""
        last = self.dp.drops()
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            cur = self.dp.drops()
            delta = {k: v - last[k] for k, v in cur.items() if v != last[k]}
            last = cur
            if delta:
                self.log.info("dp.drops", **delta)
            errors = sum(w["errors"] for w in self.dp.worker_stats())
            if errors > self._worker_errors:
                self.log.error("dp.queue_failed", queues_given_up=errors,
                               hint="a device's reads fail (was it deleted from "
                                    "outside?); restart the router to recreate it")
            self._worker_errors = errors

    # -- control -----------------------------------------------------------

    def _handlers(self) -> dict[str, Any]:
        return {
            "status": self._h_status,
            "conntrack.list": self._h_ct_list,
            "conntrack.count": self._h_ct_count,
            "conntrack.flush": self._h_ct_flush,
            "conntrack.delete": self._h_ct_delete,
            "conntrack.get": self._h_ct_get,
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
        }

    def _filter(self, args: Mapping[str, Any]) -> Any:
        """The conntrack filter of a request, as a predicate on entry JSON."""
        filt = {k: args[k] for k in FILTER_KEYS if args.get(k) is not None}
        zone = args.get("zone")
        if zone is not None and zone not in self.cfg.zones:
            raise CommandError(f"no zone {zone!r} (zones: {', '.join(self.cfg.zones)})")

        def match(j: Mapping[str, Any]) -> bool:
            return _matches(j, filt) and (zone is None or
                                          self._zone_of(j["original"]["src"]) == zone)
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
        if not any(args.get(k) is not None for k in (*FILTER_KEYS, "zone")):
            raise CommandError("delete needs at least one filter (or use conntrack flush)")
        matching = await self._h_ct_list(args)
        n = sum(self.dp.delete(e["id"]) for e in matching)
        self.log.info("ct.deleted", entries=n, **{k: v for k, v in args.items() if v})
        return {"deleted": n}

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

    async def _h_ct_count(self, args: Mapping[str, Any]) -> Any:
        return {"count": self.dp.count(), "max": self.dp.capacity}

    async def _h_ct_flush(self, args: Mapping[str, Any]) -> Any:
        n = self.dp.count()
        self.dp.flush()
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
        for n, rule in enumerate(self.cfg.rules):
            packets, nbytes = stats[n] if n < len(stats) else (0, 0)
            rules.append({"number": n, **config.rule_dict(rule), "packets": packets,
                          "bytes": nbytes})
        return {"forward": self.cfg.forward_default, "input": self.cfg.input_default,
                "policies": [{"from": p.from_zone, "to": p.to_zone, "action": p.action}
                             for p in self.cfg.policies],
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
        """Streams the packets of one interface (both directions) for at
        most ``count`` packets or ``duration`` seconds."""
        names = [i.name for i in self.cfg.interfaces]
        name = args.get("interface")
        if name not in names:
            raise CommandError(f"no interface {name!r} (interfaces: {', '.join(names)})")
        count = args.get("count", 0)
        duration = args.get("duration", 10.0)
        snaplen = args.get("snaplen", 2048)
        if not isinstance(count, int) or count < 0:
            raise CommandError("count must be a whole number >= 0")
        if not isinstance(duration, (int, float)) or not 0 < duration <= 3600:
            raise CommandError("duration must be between 0 and 3600 seconds")
        if not isinstance(snaplen, int) or not 20 <= snaplen <= 65535:
            raise CommandError("snaplen must be between 20 and 65535")
        if self.capturing is not None:
            raise CommandError(f"a capture on {self.capturing} is running; one at a time")
        self.capturing = name

        async def messages() -> Any:
            self.log.info("capture.started", interface=name, count=count, duration=duration)
            try:
                async for msg in events.capture(self.dp, names.index(name), count,
                                                float(duration), snaplen):
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
        if 0 <= n < len(self.cfg.rules):
            d = config.rule_dict(self.cfg.rules[n])
            return " ".join(f"{k}={v}" for k, v in d.items() if k != "comment")
        return ""

    async def _h_reload(self, args: Mapping[str, Any]) -> Any:
        r = await self.reload()
        if not r["applied"]:
            raise CommandError(f"reload rejected: {r['error']}")
        return r


FILTER_KEYS = ("proto", "src", "dst", "sport", "dport", "state")


def _forget_signals() -> None:
    """In a child forked by a library (pyroute2 forks to enter a network
    namespace while a reload sets up a device): the loop's signal wakeup
    socket is shared with the router, so a signal the child gets (its
    parent ends it with SIGTERM) would reach the router's loop as its own.
    The child drops the wakeup socket and takes default handlers."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _same_address(a: str, b: str) -> bool:
    """Address equality whatever the spelling (2001:DB8::1 is 2001:db8:0::1)."""
    try:
        return ip_address(a) == ip_address(b)
    except ValueError:
        return a == b


def _matches(j: Mapping[str, Any], filt: Mapping[str, Any]) -> bool:
    o = j["original"]
    for k, v in filt.items():
        if k == "proto" and str(v) not in (j["proto"], str(j["protonum"])):
            return False
        if k == "state" and (j["state"] or "").upper() != str(v).upper():
            return False
        if k in ("src", "dst") and not _same_address(str(v), o[k]):
            return False
        if k in ("sport", "dport") and int(v) != o.get(k):
            return False
    return True
