"""The control socket's client side: one request and its answer, or a
stream of messages (events, captured packets)."""

from __future__ import annotations

import json
import socket
from collections.abc import Generator, Iterator
from typing import Any

DEFAULT_SOCKET = "/run/router/router.sock"


class CtlError(Exception):
    pass


def _connect(path: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        raise CtlError(f"no control socket at {path}: is the router running? "
                       f"(use -S to name another socket)") from None
    except PermissionError:
        raise CtlError(f"permission denied on {path}: run as root or as a member of the "
                       f"socket's group") from None
    except ConnectionRefusedError:
        raise CtlError(f"nothing listens on {path}: the router is not running "
                       f"(a stale socket file?)") from None
    except OSError as e:
        raise CtlError(f"cannot connect to {path}: {e.strerror or e}") from None
    return s


def _lines(s: socket.socket, timeout: float) -> Iterator[dict[str, Any]]:
    buf = b""
    while True:
        while b"\n" not in buf:
            try:
                chunk = s.recv(1 << 20)
            except TimeoutError:
                raise CtlError(f"no answer from the router within {timeout} s") from None
            if not chunk:
                if buf:
                    raise CtlError("the router closed the connection mid-message")
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield json.loads(line)


def request(path: str, cmd: str, args: dict[str, Any] | None = None,
            timeout: float = 10.0) -> Any:
    """Sends one request; returns its result or raises CtlError."""
    with _connect(path, timeout) as s:
        s.sendall(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        msg = next(_lines(s, timeout), None)
    if msg is None:
        raise CtlError("the router closed the connection without an answer")
    if not msg.get("ok"):
        raise CtlError(str(msg.get("error", "unknown error")))
    return msg["result"]


def stream(path: str, cmd: str, args: dict[str, Any], idle: float = 3600.0,
           ) -> Generator[dict[str, Any], None, None]:
    """Sends a streaming request; yields its messages until the router ends
    the stream (or nothing came for ``idle`` seconds)."""
    with _connect(path, 10.0) as s:
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        msgs = _lines(s, 10.0)
        first = next(msgs, None)
        if first is None:
            raise CtlError("the router closed the connection without an answer")
        if not first.get("ok"):
            raise CtlError(str(first.get("error", "unknown error")))
        s.settimeout(idle)
        try:
            yield from msgs
        except CtlError:
            return
