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
from ipaddress import IPv4Interface
from typing import Any

from router import __version__, config, events, helpers, log, privs, wan
from router.commands import Commands
from router.config import Config, ConfigError
from router.control import ControlServer
from router.datapath import Datapath, DatapathError, flow_steering_program, steering_program
from router.devices import Devices
from router.flowlog.exporter import FlowExporter
from router.ha import commands as ha_commands
from router.ha.service import HaService
from router.keeper import StateKeeper
from router.metrics import MetricsServer
from router.pacing import Pacing, now_ms
from router.portmap import commands as portmap_commands
from router.portmap.service import PortmapService
from router.tables import compile_tables
from router.tun import Tun, TunError


class Router(Devices, Commands, Pacing):
    """The running router: its life cycle and reload; its devices, control
    handlers and periodic work are the parts it is made of."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.log = log.get("router")
        self.dp = Datapath(cfg.conntrack.max, batch=cfg.dataplane.batch)
        self.tuns: list[Tun] = []
        self.vnet_hdr = cfg.dataplane.offload  # fixed while the devices are open
        self.queues = cfg.dataplane.queues     # likewise
        self.threaded = cfg.dataplane.workers or cfg.dataplane.queues > 1  # C workers move packets
        # With one queue and workers, connection openers get a queue of their
        # own (steer.c), so a flood of them never delays established traffic:
        # devices then have two queues, each read by a worker.  Loaded now,
        # while the process may still load eBPF (CAP_BPF); else one queue.
        self.steering: tuple[int, int] | None = None  # (SYNs to 1, all to 0)
        if (self.threaded and cfg.dataplane.queues == 1 and cfg.dataplane.syn_queue and
                not any(i.precreated for i in cfg.interfaces)):
            try:
                self.steering = (steering_program(1), steering_program(0))
            except DatapathError as e:
                self.log.warning("dp.syn_queue_unavailable", reason=str(e),
                                 hint="connection openers share the devices' one queue")
        # With several queues (several workers), each flow keeps to one queue
        # (steer.c): the kernel would move it between them mid-stream.
        self.flow_steering: int | None = None
        if cfg.dataplane.queues > 1 and not any(i.precreated for i in cfg.interfaces):
            try:
                self.flow_steering = flow_steering_program()
            except DatapathError as e:
                self.log.warning("dp.flow_steering_unavailable", reason=str(e),
                                 hint="the kernel chooses the queues; a flow may change "
                                      "queues mid-stream")
        self.dev_queues = self.queues + (self.steering is not None)
        self._syn_queue_asked = cfg.dataplane.syn_queue
        self.tables = compile_tables(cfg, {}, self.vnet_hdr)
        self.started = time.time()
        self.config_hash = cfg.sha256
        self.reloads = {"ok": 0, "failed": 0}
        self._stop = asyncio.Event()
        self._poll_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = MetricsServer(cfg.metrics.listen, self._snapshot) \
            if cfg.metrics.listen else None
        self.gc_work = {"visited": 0, "expired": 0, "sweeps": 0}
        self.loop_lag = 0.0
        self.events = events.EventHub(self.dp, log.get("events"),
                                      lambda: [i.name for i in self.cfg.interfaces],
                                      self._rule_text)
        self.capturing: str | None = None
        self.keeper = StateKeeper(lambda: self.cfg, self.dp, log.get("router"), now_ms)
        self.portmap = PortmapService(lambda: self.cfg, self.dp, log.get("portmap"),
                                      self.events.publish, now_ms, lambda: self.keeper.key)
        self.ha = HaService(lambda: self.cfg, self.dp, log.get("ha"), self.events, now_ms)
        self.flowlog = FlowExporter(lambda: self.cfg, self.events, log.get("ipfix"))
        self.control = ControlServer(cfg.control.socket, {
            **self._handlers(), **portmap_commands.handlers(self.portmap, self.events),
            **ha_commands.handlers(self.ha, self.events)})
        self._readers: list[int] = []
        self._workers: tuple[Any, ...] | None = None  # what the running workers were given
        self._worker_errors = 0
        self._spinning = False
        self._last_packet = 0
        self._reload_lock = asyncio.Lock()
        self._pending: set[asyncio.Future[Any]] = set()
        self._early_signal: signal.Signals | None = None
        self._fork_hook = False
        self.learned: dict[str, IPv4Interface] = {}  # DHCP leases, by interface
        # The WAN's DHCP clients and dnsmasq: run here, or by the helper
        # process when the router drops to a service user (helpers.py).
        self.helpers: helpers.Helpers | helpers.Broker | None = None

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


    def restore_state(self) -> None:
        """After privileges drop: the mappings LAN hosts asked for, then the
        connections the last run saved (some came in through a mapping)."""
        self.portmap.restore()
        self.keeper.restore()

    def save_state(self) -> None:
        """Writes the table for the next start (on a clean stop)."""
        self.keeper.save()

    def setup_privileges(self) -> None:
        """Binds the control socket, and with ``service.user`` set, hands the
        state directory over and drops to that user (see privs.py).  Runs
        after open_devices(), before the event loop."""
        cfg = self.cfg
        if not cfg.service.user:
            self.control.bind()
            self.keeper.prepare(None)
            return
        acct = privs.lookup(cfg.service.user, cfg.service.group)
        self.control.bind(owner=(acct.uid, acct.gid))
        self.keeper.prepare(acct)
        if helpers.wanted(cfg):  # while it is root
            self.helpers = helpers.Broker(cfg, log.get("helpers"))
        privs.drop(acct, cfg.service.keep_net_admin)
        self.log.info("router.privileges_dropped", user=acct.user, group=acct.group,
                      keep_net_admin=cfg.service.keep_net_admin, **privs.status())


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
            self.events.configure(self.cfg.firewall.logged, self.cfg.firewall.log_rate)
            self._tasks = [asyncio.create_task(self.events.run()),
                           asyncio.create_task(self._gc()),
                           asyncio.create_task(self._stats()),
                           asyncio.create_task(self._lag())]
            self._tasks += [asyncio.create_task(wan.follow(i, self._wan_address, self.log))
                            for i in self.cfg.interfaces if i.dhcp]
            if self.helpers is None and helpers.wanted(self.cfg):
                self.helpers = helpers.Helpers(self.cfg, log.get("helpers"))
            if self.helpers is not None:
                self.helpers.start()
            await self.portmap.start()
            await self.ha.start()
            await self.flowlog.start()
            self._log_warnings(self.cfg)
            self.log.info("router.started", version=__version__, config=self.cfg.path,
                          interfaces=[i.name for i in self.cfg.interfaces],
                          conntrack_max=self.cfg.conntrack.max, pid=os.getpid(),
                          queues=self.queues, workers=self.threaded)
            await self._stop.wait()
            self.log.info("router.stopping")
        finally:
            await self._shutdown(loop)

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.helpers is not None:
            await self.helpers.stop()
        await self.portmap.stop()
        await self.ha.stop()
        await self.flowlog.stop()
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

    def helper_states(self) -> dict[str, dict[str, Any]]:
        """The programs the router runs now (``supervise.state``), by name:
        ``dhcp-<interface>`` for a WAN's DHCP client, ``dnsmasq``."""
        return self.helpers.states() if self.helpers is not None else {}

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
            new = wan.with_addresses(await config.read_config(path), self.learned)
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
        await asyncio.get_running_loop().run_in_executor(None, self.sync_kernel_routes, new)
        self._attach()
        await self.portmap.reconfigure()
        await self.ha.reconfigure()
        await self.flowlog.reconfigure()
        await self._reload_helpers(new)
        self.events.configure(new.firewall.logged, new.firewall.log_rate)
        self.config_hash = new.sha256
        self.reloads["ok"] += 1
        self._log_warnings(new)
        self.log.info("config.reloaded", file=path, sha256=self.config_hash[:16],
                      interfaces_added=sorted(added) or None,
                      interfaces_removed=sorted(gone) or None,
                      needs_restart=restart or None)
        return {"applied": True, "needs_restart": restart,
                "interfaces_added": sorted(added), "interfaces_removed": sorted(gone)}

    async def _reload_helpers(self, new: Config) -> None:
        if self.helpers is not None:
            await self.helpers.reload(new)
        elif helpers.wanted(new):
            if os.geteuid() != 0:  # no root left to start the helper process
                self.log.warning("config.needs_restart", key="interface.lan",
                                 reason="LAN services added to a router that runs as a "
                                        "service user start at its next start")
                return
            self.helpers = helpers.Helpers(new, log.get("helpers"))
            self.helpers.start()

    def _log_warnings(self, cfg: Config) -> None:
        for warning in config.warnings(cfg):
            key, _, reason = warning.partition(": ")
            self.log.warning("config.warning", file=cfg.path, key=key, reason=reason)


    def _needs_restart(self, new: Config) -> list[str]:
        out = []
        if new.conntrack.max != self.cfg.conntrack.max:
            out.append("conntrack.max")
        if new.control.socket != self.cfg.control.socket:
            out.append("control.socket")
        if new.metrics.listen != self.cfg.metrics.listen:
            out.append("metrics.listen")
        if new.dataplane.batch > self.dp.batch:
            out.append("dataplane.batch")
        if new.dataplane.offload != self.vnet_hdr:
            out.append("dataplane.offload")
        if new.dataplane.queues != self.queues:
            out.append("dataplane.queues")
        if new.dataplane.syn_queue != self._syn_queue_asked:
            out.append("dataplane.syn_queue")
        if (new.dataplane.workers or new.dataplane.queues > 1) != self.threaded:
            out.append("dataplane.workers")
        if {(i.name, i.attach) for i in new.interfaces if i.dhcp} != \
                {(i.name, i.attach) for i in self.cfg.interfaces if i.dhcp}:
            out.append("interface.address (dhcp)")  # the clients run from the start
        return out

    def _wan_address(self, name: str, address: IPv4Interface | None) -> None:
        """Interface ``name`` (address = "dhcp") has a new address, or none:
        new tables, and the connections through the old address flushed, as
        Linux's masquerade does (their peers knew that address)."""
        old = self.learned.get(name)
        if address is None:
            self.learned.pop(name, None)
        else:
            self.learned[name] = address
        self.cfg = wan.with_addresses(self.cfg, self.learned)
        self.tables = compile_tables(self.cfg, self._fds(), self.vnet_hdr)
        self.dp.load(self.tables)
        task = asyncio.ensure_future(self.portmap.reconfigure())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        flushed = 0
        if old is not None:
            gone = str(old.ip)
            flushed = sum(self.dp.delete(e.slot, now_ms()) for e in self.dp.conntrack(now_ms())
                          if gone in (e.dst[0], e.dst[1]))
        self.log.info("wan.address", interface=name, address=str(address) if address else None,
                      previous=str(old) if old else None, connections_flushed=flushed)


def _forget_signals() -> None:
    """In a child forked by a library (pyroute2 forks to enter a network
    namespace while a reload sets up a device): the loop's signal wakeup
    socket is shared with the router, so a signal the child gets (its
    parent ends it with SIGTERM) would reach the router's loop as its own.
    The child drops the wakeup socket and takes default handlers."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
