"""The mapping table's state file, so that mappings (and PCP's epoch)
survive a restart: ``portmap.state`` beside the conntrack state file,
written within a second of every change.

Untrusted input like the conntrack state (``router/state.py``, whose key
it shares): authenticated with HMAC-SHA256 under the root-only state key,
bounded in size, and checked field by field; a bad file is refused whole
with the field and reason.  Every entry restored then passes the running
config's checks again (``Table.grant``), so a file can grant nothing the
config would not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any

from router import safepath
from router.config.model import MAX_PORTMAPS
from router.native.names import PM_FILTERS
from router.portmap.table import PROTO_NAMES, Mapping
from router.state import MAX_ENTRY_BYTES, StateError, json_line

FORMAT = "tun-router-portmap"
VERSION = 1
NAME = "portmap.state"
MAX_BYTES = 4096 + MAX_PORTMAPS * MAX_ENTRY_BYTES
VIA = ("pcp", "natpmp", "upnp")


@dataclass(frozen=True)
class Saved:
    epoch_base: float         # when PCP's epoch began (time.time())
    maps: list[Mapping]


def encode(epoch_base: float, maps: list[Mapping], key: bytes) -> bytes:
    head = {"format": FORMAT, "version": VERSION, "epoch_base": epoch_base,
            "saved_at": time.time(), "entries": len(maps)}
    lines = [_dumps(head)] + [_dumps(_entry_dict(m)) for m in maps]
    body = b"".join(line + b"\n" for line in lines)
    return body + _dumps({"mac": hmac.new(key, body, hashlib.sha256).hexdigest()}) + b"\n"


def _entry_dict(m: Mapping) -> dict[str, Any]:
    return {"via": m.via, "client": str(m.client), "proto": m.proto,
            "internal": str(m.int_addr), "internal_port": m.int_port,
            "external_port": m.ext_port, "expires": m.expires,
            "description": m.description, "nonce": m.nonce.hex(),
            "filters": [[str(n), p] for n, p in m.filters], "peer": m.peer}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def save(directory: str, epoch_base: float, maps: list[Mapping], key: bytes) -> None:
    """Writes the file (raises OSError or safepath.UnsafePath)."""
    dfd = safepath.open_dir(directory, create=0o700)
    try:
        safepath.write_new(NAME, dfd, encode(epoch_base, maps, key))
    finally:
        os.close(dfd)


def load(directory: str, key: bytes) -> Saved | None:
    """The checked file, or None if there is none; raises StateError or
    OSError."""
    dfd = safepath.open_dir(directory, create=0o700)
    try:
        try:
            fd, _ = safepath.open_private(NAME, dfd, MAX_BYTES)
        except FileNotFoundError:
            return None
        try:
            return decode(safepath.read_fd(fd, MAX_BYTES), key)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def decode(data: bytes, key: bytes) -> Saved:
    body, sep, last = data.rstrip(b"\n").rpartition(b"\n")
    if not sep:
        raise StateError("damaged: no authentication line")
    body += b"\n"
    mac = json_line(last)
    want = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not isinstance(mac, dict) or not isinstance(mac.get("mac"), str) or \
            not hmac.compare_digest(mac["mac"], want):
        raise StateError("authentication failed: not written by this router "
                         "(or with another state key)")
    lines = body.split(b"\n")[:-1]
    head = json_line(lines[0])
    if not isinstance(head, dict) or head.get("format") != FORMAT or \
            head.get("version") != VERSION:
        raise StateError(f"not a version {VERSION} port mapping state file")
    base = head.get("epoch_base")
    if not isinstance(base, (int, float)) or not _number(base) or \
            not 0 <= base <= time.time() + 86400:
        raise StateError(f"header: epoch_base: {base!r} is not a time before now")
    if head.get("entries") != len(lines) - 1 or len(lines) - 1 > MAX_PORTMAPS:
        raise StateError(f"header: entries: {head.get('entries')!r}, but the file holds "
                         f"{len(lines) - 1} (at most {MAX_PORTMAPS})")
    return Saved(float(base), [_mapping(line, n) for n, line in enumerate(lines[1:], 1)])


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _port(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535


def _mapping(line: bytes, n: int) -> Mapping:
    raw = json_line(line)

    def bad(k: str, why: str) -> StateError:
        return StateError(f"entry {n}: {k}: {why}")

    if not isinstance(raw, dict):
        raise bad("", "not an object")
    want = {"via", "client", "proto", "internal", "internal_port", "external_port",
            "expires", "description", "nonce", "filters", "peer"}
    if set(raw) != want:
        raise bad("", f"keys must be {', '.join(sorted(want))}")
    if raw["via"] not in VIA:
        raise bad("via", f"{raw['via']!r} is none of {', '.join(VIA)}")
    if raw["proto"] not in PROTO_NAMES or isinstance(raw["proto"], bool):
        raise bad("proto", "must be 6 or 17")
    for k in ("internal_port", "external_port"):
        if not _port(raw[k]) or raw[k] == 0:
            raise bad(k, "must be a port, 1-65535")
    if not _number(raw["expires"]):
        raise bad("expires", "must be a time")
    if not isinstance(raw["description"], str) or len(raw["description"]) > 256:
        raise bad("description", "must be a string of at most 256 characters")
    if not isinstance(raw["peer"], bool):
        raise bad("peer", "must be a boolean")
    try:
        client, inside = ip_address(raw["client"]), ip_address(raw["internal"])
        nonce = bytes.fromhex(raw["nonce"]) if isinstance(raw["nonce"], str) else None
        filters = tuple((ip_network(f[0]), int(f[1])) for f in raw["filters"])
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise bad("address", str(e)) from None
    if nonce is None or len(nonce) not in (0, 12):
        raise bad("nonce", "must be 12 bytes in hex, or empty")
    if len(filters) > PM_FILTERS or any(not _port(p) for _, p in filters):
        raise bad("filters", f"at most {PM_FILTERS} of [network, port]")
    return Mapping(via=raw["via"], client=client, proto=raw["proto"], int_addr=inside,
                   int_port=raw["internal_port"], ext_port=raw["external_port"],
                   expires=float(raw["expires"]), description=raw["description"],
                   nonce=nonce, filters=filters, peer=raw["peer"])
