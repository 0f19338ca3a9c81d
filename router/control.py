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
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from router import log, safepath

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]
MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 64           # at once; routerctl needs one, streams one each
REQUEST_DEADLINE = 30.0    # seconds a client may take to send a whole request line
REFUSAL_LOG_INTERVAL = 10.0


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
        self.clients = 0
        self.refused = 0
        self._last_refusal_log = -REFUSAL_LOG_INTERVAL

    def bind(self, owner: tuple[int, int] | None = None) -> None:
        """Creates the listening socket now, before the event loop runs (and
        before privileges are dropped).  With ``owner`` (uid, gid) the socket
        becomes that user's; its directory stays root's, so that nothing the
        service user does can redirect what root does here (an earlier
        version gave it the directory: that is taken back, through its
        descriptor).  The directory must be one only root (or this process's
        user) can write; the socket's mode (0660) is set by the umask at
        bind() and its owner with lchown, neither following a symlink."""
        directory, name = os.path.split(self.path)
        if owner is not None and os.geteuid() == 0:
            dfd = safepath.take_over_dir(directory, from_uid=owner[0], mode=0o755)
        else:
            dfd = safepath.open_dir(directory, create=0o755)
        try:
            self._clear_stale(name, dfd)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o117)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            if owner is not None:
                os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)
        sock.listen(64)
        self._sock = sock

    def _clear_stale(self, name: str, dfd: int) -> None:
        """Removes a socket left by a router that did not stop cleanly (or a
        symlink in its place); refuses if one still listens there, or if
        something else has the name."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(st.st_mode):
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(self.path)
                raise OSError(f"another router already listens on {self.path}")
            except (ConnectionRefusedError, FileNotFoundError):
                pass
            finally:
                probe.close()
        elif not stat.S_ISLNK(st.st_mode):
            raise OSError(f"{self.path} exists and is not a socket")
        os.unlink(name, dir_fd=dfd)

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
        if self.clients >= MAX_CLIENTS:
            self.refused += 1
            now = asyncio.get_running_loop().time()
            if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL:
                self._log.warning("control.refused", reason="too many clients",
                                  max_clients=MAX_CLIENTS, refused=self.refused)
                self._last_refusal_log = now
            writer.transport.abort()
            return
        self.clients += 1
        try:
            while True:
                try:
                    async with asyncio.timeout(REQUEST_DEADLINE):
                        line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, {"ok": False, "error": "request too long"})
                    return
                except TimeoutError:
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
            self.clients -= 1
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
