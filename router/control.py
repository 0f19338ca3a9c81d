"""The control socket: one JSON request per line, one JSON answer per line.

Request:  {"cmd": "conntrack.list", "args": {...}}
Answer:   {"ok": true, "result": ...}  or  {"ok": false, "error": "..."}

A streaming command (conntrack events, capture) answers {"ok": true,
"stream": true} and then one JSON message per line until it ends or the
client closes the connection.

The socket is created mode 0660 in a directory of its own; it is never
world-writable.  Handlers run on the event loop, between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from router import log

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]
MAX_REQUEST = 64 * 1024


class CommandError(Exception):
    """A request that cannot be served; the message goes to the client."""


class Stream:
    """What a streaming handler returns: messages to send one per line."""

    def __init__(self, messages: AsyncIterator[Mapping[str, Any]]) -> None:
        self.messages = messages


class ControlServer:
    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._sock: socket.socket | None = None
        self._log = log.get("control")

    def bind(self, owner: tuple[int, int] | None = None) -> None:
        """Creates the listening socket now, before the event loop runs (and
        before privileges are dropped).  With ``owner`` (uid, gid) the socket,
        and its directory if this created it, become that user's."""
        p = Path(self.path)
        created = not p.parent.exists()
        p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if p.is_socket():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(self.path)
                raise OSError(f"another router already listens on {self.path}")
            except (ConnectionRefusedError, FileNotFoundError):
                p.unlink()  # stale, from a router that did not stop cleanly
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        if owner is not None:
            os.chown(self.path, *owner)
            if created:
                os.chown(p.parent, *owner)
        sock.listen(64)
        self._sock = sock

    async def start(self) -> None:
        if self._sock is None:
            self.bind()
        self._server = await asyncio.start_unix_server(self._client, sock=self._sock,
                                                       limit=MAX_REQUEST)
        self._log.info("control.listening", socket=self.path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._sock = None
        with contextlib.suppress(FileNotFoundError, PermissionError):
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
                answer = await self._dispatch(line)
                if isinstance(answer, Stream):
                    await self._stream(reader, writer, answer)
                    return
                await self._send(writer, answer)
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      stream: Stream) -> None:
        """Sends the stream's messages until it ends or the client goes away
        (then the stream is closed at once, even while it waits)."""
        await self._send(writer, {"ok": True, "stream": True})

        async def pump() -> None:
            async for msg in stream.messages:
                writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
                await writer.drain()

        pumping = asyncio.ensure_future(pump())
        gone = asyncio.ensure_future(reader.read())  # b"" when the client closes
        try:
            await asyncio.wait({pumping, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (pumping, gone):
                t.cancel()
            for t in (pumping, gone):
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await t
            close = getattr(stream.messages, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def _dispatch(self, line: bytes) -> dict[str, Any] | Stream:
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
            result = await handler(args)
            if isinstance(result, Stream):
                return result
            return {"ok": True, "result": result}
        except CommandError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:
            self._log.exception("control.handler_failed", cmd=req["cmd"])
            return {"ok": False, "error": f"internal error: {e}"}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, msg: Mapping[str, Any]) -> None:
        writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
