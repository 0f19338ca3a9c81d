"""The conntrack state file: the table written on a clean stop and read at
start, so that connections survive a restart or an upgrade.

The file is untrusted input: it lives in a directory the service user
writes, and whoever can write it could otherwise open holes in the firewall
or crash every start.  So it is

- authenticated: the last line is an HMAC-SHA256 of everything before it,
  keyed with a secret only root can read (``conntrack.state_key``, made at
  first start); a file the router did not write is refused whole;
- bounded: at most ``max_bytes(conntrack.max)``, each entry one line of at
  most ``MAX_ENTRY_BYTES``, parsed a line at a time (memory stays flat);
- validated field by field like the config: any bad entry refuses the whole
  file, with the entry's number, the field and the reason;
- and each entry restored must still pass the firewall (rt_ct_restore).

Format (version 3), one JSON document per line: a header
``{"format": ..., "version": 3, "saved_at": ..., "entries": N}``, N entries,
then ``{"mac": HEX}``.  Written to a temporary file (0600), synced and
renamed, never following a symlink (safepath.write_new).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from ipaddress import ip_address
from typing import Any

from router import safepath
from router.config import MAX_TIMEOUT
from router.native.names import TCP_STATE_NAMES
from router.native.records import CtEntry

FORMAT = "tun-router-conntrack"
VERSION = 3
MAX_ENTRY_BYTES = 1024     # a saved entry takes about 450 bytes
HEADER_BYTES = 4096
KEY_BYTES = 32
MAX_TIMEOUT_MS = MAX_TIMEOUT * 1000  # the data plane's longest deadline
MAX_AGE_MS = 10 * 365 * 86400 * 1000
FUTURE_SLACK = 86400.0     # a saved_at this far ahead of the clock is refused
_LOOKS_LIKE = re.compile(rb'\A\{\s*"format"\s*:\s*"' + FORMAT.encode() + rb'"')
_FIELDS = [f.name for f in fields(CtEntry)]
_OPTIONAL = {"tcp_window"}


class StateError(Exception):
    pass


def max_bytes(max_entries: int) -> int:
    """The largest state file a table of ``max_entries`` can produce."""
    return HEADER_BYTES + max_entries * MAX_ENTRY_BYTES


def looks_like_state(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a state file (of any
    version): only such a file is renamed aside or overwritten."""
    return _LOOKS_LIKE.match(head) is not None


def check_path(path: str) -> str | None:
    """Why ``path`` cannot be the state file (for ``router check``), or None:
    it may not exist, or must be a regular file that is a state file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if os.path.isdir(path):
            return "is a directory"
        return f"cannot be opened: {e.strerror}"
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return "is a directory"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file"
        if st.st_size and not looks_like_state(os.read(fd, 256)):
            return "exists and is not a conntrack state file (the router would overwrite it)"
    finally:
        os.close(fd)
    return None


# ---- the key -------------------------------------------------------------


def load_key(path: str) -> bytes:
    """The state key at ``path``, made (random, mode 0600) if missing.  Its
    directory must be trusted (safepath.open_dir), the file this process's
    own, readable by nobody else.  Raises StateError."""
    directory, name = os.path.split(path)
    try:
        dfd = safepath.open_dir(directory, create=0o755)
    except (safepath.UnsafePath, OSError) as e:
        raise StateError(f"state key {path}: {e}") from None
    try:
        try:
            fd, st = safepath.open_private(name, dfd, 256)
        except FileNotFoundError:
            key = os.urandom(KEY_BYTES)
            safepath.write_new(name, dfd, key.hex().encode() + b"\n")
            return key
        try:
            if st.st_mode & 0o077:
                raise StateError(f"state key {path}: readable by others "
                                 f"(mode {oct(st.st_mode & 0o777)}); chmod 600 it")
            text = safepath.read_fd(fd, 256).strip()
        finally:
            os.close(fd)
        try:
            key = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise StateError(f"state key {path}: not {KEY_BYTES} bytes in hex")
        return key
    except (safepath.UnsafePath, OSError) as e:
        raise StateError(f"state key {path}: {e}") from None
    finally:
        os.close(dfd)


# ---- writing -------------------------------------------------------------


def encode(entries: list[CtEntry], key: bytes, saved_at: float | None = None) -> bytes:
    lines = [_dumps({"format": FORMAT, "version": VERSION,
                     "saved_at": time.time() if saved_at is None else saved_at,
                     "entries": len(entries)})]
    lines += [_dumps(asdict(e)) for e in entries]
    body = b"".join(line + b"\n" for line in lines)
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    return body + _dumps({"mac": mac}) + b"\n"


def save(path: str, entries: list[CtEntry], key: bytes) -> None:
    """Writes the table (raises OSError or safepath.UnsafePath)."""
    directory, name = os.path.split(path)
    dfd = safepath.open_dir(directory, create=0o700)
    try:
        safepath.write_new(name, dfd, encode(entries, key))
    finally:
        os.close(dfd)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# ---- reading -------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """A state file that passed every check: when it was written, and its
    entries (parsed again, a line at a time, as they are restored)."""

    saved_at: float
    count: int
    _lines: list[bytes]

    def entries(self) -> Iterator[CtEntry]:
        for n, line in enumerate(self._lines, 1):
            yield _entry(line, n)


def decode(data: bytes, key: bytes, max_entries: int, now: float | None = None) -> Saved:
    """Checks a whole state file (its bytes); raises StateError naming what
    is wrong."""
    if not looks_like_state(data[:256]):
        raise StateError("not a conntrack state file")
    if len(data) > max_bytes(max_entries):
        raise StateError(f"{len(data)} bytes, more than a table of {max_entries} "
                         "entries can take")
    body, sep, last = data.rstrip(b"\n").rpartition(b"\n")
    if not sep:
        raise StateError("damaged: no authentication line")
    body += b"\n"
    try:
        mac = json_line(last).get("mac")
    except (StateError, AttributeError):
        mac = None
    if not isinstance(mac, str):
        raise StateError("damaged: no authentication line")
    want = hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, want):
        raise StateError("authentication failed: not written by this router "
                         "(or with another state key)")
    lines = body.split(b"\n")[:-1]
    head = json_line(lines[0])
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise StateError("not a conntrack state file")
    if head.get("version") != VERSION:
        raise StateError(f"format version {head.get('version')!r}, this router reads "
                         f"{VERSION}")
    saved_at = head.get("saved_at")
    now = time.time() if now is None else now
    if (not isinstance(saved_at, (int, float)) or isinstance(saved_at, bool) or
            not math.isfinite(saved_at) or not 0 <= saved_at <= now + FUTURE_SLACK):
        raise StateError(f"header: saved_at: {saved_at!r} is not a time before now")
    count = head.get("entries")
    entries = lines[1:]
    if not _int(count, 0, max_entries) or count != len(entries):
        raise StateError(f"header: entries: {count!r}, but the file holds {len(entries)} "
                         f"(at most {max_entries})")
    for n, line in enumerate(entries, 1):
        _entry(line, n)  # every entry is checked before any is restored
    return Saved(float(saved_at), count, entries)


def json_line(line: bytes) -> Any:
    """One line of a state file (this one's, or port mapping's), parsed as
    strict JSON of at most MAX_ENTRY_BYTES; raises StateError."""
    if len(line) > MAX_ENTRY_BYTES:
        raise StateError(f"a line of {len(line)} bytes")
    try:
        return json.loads(line, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(f"damaged: {e}") from None


def _no_constant(name: str) -> Any:
    raise StateError(f"damaged: {name} is not a number")


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _entry(line: bytes, n: int) -> CtEntry:
    raw = json_line(line)
    if not isinstance(raw, dict):
        raise StateError(f"entry {n}: not an object")

    def bad(k: str, why: str) -> StateError:
        return StateError(f"entry {n}: {k}: {why}")
    keys = set(raw)
    if not set(_FIELDS) - _OPTIONAL <= keys <= set(_FIELDS):
        unknown = sorted(keys - set(_FIELDS))
        missing = sorted(set(_FIELDS) - _OPTIONAL - keys)
        raise StateError(f"entry {n}: unknown fields {unknown} / missing {missing}")
    fam = raw["family"]
    if fam not in (4, 6) or isinstance(fam, bool):
        raise bad("family", f"{fam!r} is not 4 or 6")
    ints = {"slot": (0, 2**32 - 1), "proto": (0, 255), "status": (0, 0xFFFF),
            "timeout_ms": (1, MAX_TIMEOUT_MS), "age_ms": (0, MAX_AGE_MS)}
    for k, (lo, hi) in ints.items():
        if not _int(raw[k], lo, hi):
            raise bad(k, f"{raw[k]!r} is not a whole number from {lo} to {hi}")
    state = raw["state"]
    if raw["proto"] == 6:
        if state not in TCP_STATE_NAMES[1:]:
            raise bad("state", f"{state!r} is not a TCP state")
    elif state is not None:
        raise bad("state", "only TCP entries have one")
    pairs: dict[str, tuple[int, int]] = {"sport": (0, 65535), "dport": (0, 65535),
                                         "packets": (0, 2**48 - 1), "bytes": (0, 2**64 - 1)}
    out: dict[str, Any] = {k: raw[k] for k in ("slot", "family", "proto", "state", "status",
                                                "timeout_ms", "age_ms")}
    for k, (lo, hi) in pairs.items():
        v = raw[k]
        if not (isinstance(v, list) and len(v) == 2 and all(_int(x, lo, hi) for x in v)):
            raise bad(k, f"{v!r} is not two whole numbers from {lo} to {hi}")
        out[k] = (v[0], v[1])
    for k in ("src", "dst"):
        v = raw[k]
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) and len(x) <= 45
                                                            for x in v)):
            raise bad(k, f"{v!r} is not two addresses")
        for x in v:
            try:
                a = ip_address(x)
            except ValueError:
                raise bad(k, f"{x!r} is not an address") from None
            if a.version != fam:
                raise bad(k, f"{x} is not an IPv{fam} address")
        out[k] = (v[0], v[1])
    win = raw.get("tcp_window")
    if win is not None:
        bounds = [(0, 2**32 - 1)] * 3 + [(0, 14), (0, 255), (0, 2**32 - 1)]
        if not (raw["proto"] == 6 and isinstance(win, list) and len(win) == 2 and
                all(isinstance(w, list) and len(w) == 6 and
                    all(_int(x, lo, hi) for x, (lo, hi) in zip(w, bounds, strict=True))
                    for w in win)):
            raise bad("tcp_window", "not two lists of end, maxend, maxwin, scale (0-14), "
                                    "flags, maxack")
        out["tcp_window"] = (tuple(win[0]), tuple(win[1]))
    return CtEntry(**out)
