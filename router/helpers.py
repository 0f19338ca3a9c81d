"""The programs a gateway runs as root: the WAN's DHCP clients (wan.py) and
the LAN's dnsmasq (lanservices.py), and where they run.

Both need root for as long as they run: they are started again at any time,
open raw sockets, bind privileged ports and configure interfaces.  A router
that stays root (no ``[service] user``) runs them itself (``Helpers``).  One
that drops to a service user cannot, and must not be able to make root run
anything: before it drops, it starts ``router helpers -c FILE`` (``serve``),
a process that stays root, reads the config file itself and runs exactly the
programs that file asks for.  The router keeps only a pipe to it
(``Broker``), on which it can say one thing, "reload" (the helper reads the
file again), or close it (the helper stops its programs and exits).  The
helper reports the programs' states back a line of JSON a second; its log
lines go where the router's go.  So a compromised router can at most ask
the helper to read root's own config file again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from typing import Any

from router import config, lanservices, log
from router.config import Config
from router.wan import DhcpClient

REPORT_INTERVAL = 1.0  # seconds between the helper process's state reports
STOP_TIMEOUT = 15.0    # seconds the router waits for it at stop
REPORT_MAX = 65536     # bytes of one report line at most


def wanted(cfg: Config) -> bool:
    """Whether ``cfg`` asks for programs that need root."""
    return any(i.dhcp or i.lan is not None for i in cfg.interfaces)


class Helpers:
    """The DHCP clients and dnsmasq, run in this process (which is root)."""

    def __init__(self, cfg: Config, logger: Any) -> None:
        self.cfg = cfg
        self.log = logger
        self.lan = lanservices.LanServices(cfg, logger)
        self.dhcp: dict[str, DhcpClient] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        resolv = lanservices.resolv_file(self.cfg) if self.lan.wanted else None
        for i in self.cfg.interfaces:
            if i.dhcp:
                client = DhcpClient(i, self.log, resolv)
                self.dhcp[i.name] = client
                self.tasks.append(asyncio.create_task(client.run()))
        self.lan.start()

    async def reload(self, new: Config) -> None:
        """The LAN services follow ``new``; the DHCP clients run from the
        start (a change of them needs a restart: app.py says so)."""
        self.cfg = new
        await self.lan.reload(new)

    async def stop(self) -> None:
        await self.lan.stop()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.tasks.clear()

    def states(self) -> dict[str, dict[str, Any]]:
        """The programs now (``supervise.state``), by name: ``dhcp-<interface>``
        for a WAN's DHCP client, ``dnsmasq``."""
        out = {f"dhcp-{name}": c.client.state() for name, c in self.dhcp.items()}
        if self.lan.wanted:
            out["dnsmasq"] = self.lan.proc.state()
        return out


class Broker:
    """The router's end of the helper process (``serve``): started as root
    before the router drops its privileges, then told to reload or to stop."""

    def __init__(self, cfg: Config, logger: Any) -> None:
        self.log = logger
        self.reported: dict[str, dict[str, Any]] = {}
        # Its own session: a signal to the router's process group (a
        # Ctrl-C) does not stop it before the router asks it to.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "helpers", "-c", cfg.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self.log.info("helpers.started", pid=self.proc.pid)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._reports())

    async def _reports(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=REPORT_MAX)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     self.proc.stdout)
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line past the limit: its start is gone
                continue
            if not line:
                self.log.error("helpers.exited", status=self.proc.poll(),
                               hint="the WAN's DHCP clients and dnsmasq are gone; "
                                    "restart the router")
                self.reported = {}
                return
            with contextlib.suppress(ValueError, TypeError):
                report = json.loads(line)
                if isinstance(report, dict):
                    self.reported = report

    async def reload(self, new: Config) -> None:
        self._say(b"reload\n")

    def _say(self, what: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(what)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            self.log.error("helpers.unreachable", hint="restart the router")

    async def stop(self) -> None:
        """Closes the pipe: the helper stops its programs and exits."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), STOP_TIMEOUT)
        except TimeoutError:
            self.log.error("helpers.not_stopped", pid=self.proc.pid)

    def states(self) -> dict[str, dict[str, Any]]:
        return self.reported


async def serve(path: str) -> int:
    """The helper process: runs the programs ``path`` asks for until its
    standard input ends; "reload" on it reads the file again."""
    cfg = config.load(path)
    logger = log.get("helpers")
    helpers = Helpers(cfg, logger)
    helpers.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    report = asyncio.create_task(_report(helpers))
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                continue
            if not line:
                break
            if line.strip() == b"reload":
                try:
                    new = await config.read_config(path)
                except config.ConfigError as e:
                    logger.error("helpers.config_rejected", reason=str(e))
                    continue
                await helpers.reload(new)
    finally:
        report.cancel()
        await helpers.stop()
    return 0


async def _report(helpers: Helpers) -> None:
    """The programs' states to the router, a line a second; never waiting
    for it (a report it does not take is dropped)."""
    fd = sys.stdout.fileno()
    os.set_blocking(fd, False)
    while True:
        with contextlib.suppress(BlockingIOError):
            try:
                os.write(fd, (json.dumps(helpers.states()) + "\n").encode())
            except BrokenPipeError:
                return
        await asyncio.sleep(REPORT_INTERVAL)
