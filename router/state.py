"""The conntrack state file: the table written on a clean stop and read at
start, so that connections survive a restart or an upgrade.

The file is JSON, written to a temporary file, synced and renamed over the old
one, so a crash never leaves half a file.  A file from another format version,
or one that does not parse, is refused as a whole.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from router.datapath import CtEntry

FORMAT = "tun-router-conntrack"
VERSION = 2
# Version 1 lacked the TCP windows: such entries are restored and their
# windows learned again, as for a connection picked up mid-stream.
READABLE = (1, 2)
OPTIONAL = {"tcp_window"}


class StateError(Exception):
    pass


def save(path: str, entries: list[CtEntry]) -> None:
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "saved_at": time.time(),
           "entries": [asdict(e) for e in entries]}
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, p)


def load(path: str) -> tuple[float, list[CtEntry]]:
    """Returns (when it was saved, the entries); raises StateError."""
    try:
        doc: Any = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateError(f"cannot read: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateError("not a conntrack state file")
    if doc.get("version") not in READABLE:
        raise StateError(f"format version {doc.get('version')!r}, this router reads "
                         f"{', '.join(map(str, READABLE))}")
    names = [f.name for f in fields(CtEntry)]
    out = []
    try:
        saved_at = float(doc["saved_at"])
        for raw in doc["entries"]:
            if not set(names) - OPTIONAL <= set(raw) <= set(names):
                raise StateError("an entry has unknown or missing fields")
            for k in ("src", "dst", "sport", "dport", "packets", "bytes"):
                raw[k] = tuple(raw[k])
            win = raw.get("tcp_window")
            if win is not None:
                if len(win) != 2 or any(len(w) != 5 for w in win):
                    raise StateError("an entry has a malformed tcp_window")
                raw["tcp_window"] = (tuple(int(v) for v in win[0]),
                                     tuple(int(v) for v in win[1]))
            out.append(CtEntry(**raw))
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"damaged: {e}") from None
    return saved_at, out
