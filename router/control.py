"""The control socket: one JSON request per line, one JSON answer per line.

Request:  {"cmd": "conntrack.list", "args": {...}}
Answer:   {"ok": true, "result": ...}  or  {"ok": false, "error": "..."}

The socket is created mode 0660 in a directory of its own; it is never
world-writable.  Handlers run on the event loop, between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from router import log

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]
MAX_REQUEST = 64 * 1024


class CommandError(Exception):
    """A request that cannot be served; the message goes to the client."""


async def _alive(path: str) -> bool:
    try:
        _, w = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    w.close()
    return True


class ControlServer:
    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._log = log.get("control")

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if p.is_socket():
            if await _alive(self.path):
                raise OSError(f"another router already listens on {self.path}")
            p.unlink()  # stale, from a router that did not stop cleanly
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=self.path,
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        self._log.info("control.listening", socket=self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                await self._send(writer, await self._dispatch(line))
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": "request needs a string 'cmd'"}
        args = req.get("args", {})
        if not isinstance(args, dict):
            return {"ok": False, "error": "'args' must be an object"}
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {req['cmd']!r} "
                                          f"(known: {', '.join(sorted(self.handlers))})"}
        try:
            return {"ok": True, "result": await handler(args)}
        except CommandError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            self._log.exception("control.handler_failed", cmd=req["cmd"])
            return {"ok": False, "error": f"internal error: {e}"}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, msg: Mapping[str, Any]) -> None:
        writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
