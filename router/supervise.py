"""A helper program the router runs and keeps running: the WAN's DHCP
client (``wan.py``), the LAN's dnsmasq (``lanservices.py``).

Its output is joined to the router's log a line at a time (each line
bounded), and when it exits it is started again after a pause that doubles
up to BACKOFF_MAX, and starts over at one second once it has run a while: a
program that fails at once is not restarted in a tight loop, and one that
crashed after days comes back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

BACKOFF_MAX = 30.0  # seconds at most between restarts
RAN_A_WHILE = 60.0  # seconds: a later exit is a fresh failure
LINE_MAX = 500      # characters of one logged line
STOP_TIMEOUT = 5.0  # seconds from SIGTERM to SIGKILL


class Supervised:
    """Runs ``argv()`` (asked anew at each start) until cancelled, logging
    ``<name>.started`` / ``<name>.exited`` and each output line as
    ``<name>`` with ``fields``."""

    def __init__(self, name: str, argv: Callable[[], Sequence[str]], log: Any,
                 env: dict[str, str] | None = None, **fields: Any) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.fields = fields
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._restart_now = asyncio.Event()

    def state(self) -> dict[str, Any]:
        """For status and metrics: running (its pid) and restarts so far."""
        return {"running": self.pid is not None, "pid": self.pid, "restarts": self.restarts}

    @property
    def pid(self) -> int | None:
        p = self.proc
        return p.pid if p is not None and p.returncode is None else None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pause = 1.0
        try:
            while True:
                started = loop.time()
                rc = await self._once()
                if self._restart_now.is_set():  # asked for: no pause, no failure
                    self._restart_now.clear()
                    continue
                self.restarts += 1
                if loop.time() - started > RAN_A_WHILE:
                    pause = 1.0
                self.log.warning(f"{self.name}.exited", status=rc, restart_in=pause,
                                 **self.fields)
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_MAX)
        finally:
            await self.stop()

    async def _once(self) -> int:
        argv = list(self.argv())
        env = None if self.env is None else {**os.environ, **self.env}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as e:
            self.log.error(f"{self.name}.not_started", program=argv[0], reason=str(e),
                           **self.fields)
            return -1
        self.proc = proc
        self.log.info(f"{self.name}.started", pid=proc.pid, **self.fields)
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line longer than the stream's limit: its start is gone
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").strip()[:LINE_MAX]
            if line:
                self.log.info(self.name, line=line, **self.fields)
        return await proc.wait()

    async def restart(self) -> None:
        """Ends the running program; run() starts it again at once (with
        the argv of now).  Nothing running: the next start has it anyway."""
        if self.pid is not None:
            self._restart_now.set()
            await self.stop()

    async def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
            try:
                await asyncio.wait_for(p.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
