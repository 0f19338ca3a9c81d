"""Names and numbers the C headers define, read from the headers' text.

The C side owns these lists: the X-macros of ``rt_types.h`` (drop reasons,
counters, timeouts with their defaults, TCP states) and the connection status
bits of ``rt.h``.  This module reads them from the headers shipped with the
package, so that the pure parts of the control plane (the config, ``routerctl``,
the conntrack-tools text) know them without loading the compiled library.
``router.datapath`` checks at import that the compiled library says the same,
so a header and a build can never disagree silently.
"""

from __future__ import annotations

import re
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _macro_body(text: str, name: str) -> str:
    """The lines of ``#define NAME(X) ...`` up to its last continuation."""
    m = re.search(rf"^#define {name}\(X\)[ \t]*\\\n((?:.*\\\n)*.*\n)", text, re.M)
    if not m:
        raise RuntimeError(f"rt_types.h: no X-macro {name}")
    # Comments may sit inside the lines; drop them before reading the entries.
    return re.sub(r"/\*.*?\*/", "", m.group(1).replace("\\\n", "\n"), flags=re.S)


def _entries(text: str, name: str) -> list[list[str]]:
    body = _macro_body(text, name)
    return [[a.strip().strip('"') for a in args.split(",")]
            for args in re.findall(r"X\(([^)]*)\)", body)]


_TYPES = (_HERE / "rt_types.h").read_text()
_API = (_HERE / "rt.h").read_text()

DROP_NAMES: tuple[str, ...] = tuple(e[1] for e in _entries(_TYPES, "RT_DROP_REASONS"))
COUNTER_NAMES: tuple[str, ...] = tuple(e[1] for e in _entries(_TYPES, "RT_COUNTERS"))
TCP_STATE_NAMES: tuple[str, ...] = tuple(e[0] for e in _entries(_TYPES, "RT_TCP_STATES"))
TIMEOUT_NAMES: tuple[str, ...] = tuple(e[1] for e in _entries(_TYPES, "RT_TIMEOUTS"))
TIMEOUT_DEFAULTS: dict[str, int] = {e[1]: int(e[2]) for e in _entries(_TYPES, "RT_TIMEOUTS")}


def _status_bit(name: str) -> int:
    m = re.search(rf"^#define RT_CT_{name}\s+(0x[0-9a-fA-F]+|\d+)", _API, re.M)
    if not m:
        raise RuntimeError(f"rt.h: no RT_CT_{name}")
    return int(m.group(1), 0)


def _limit(name: str) -> int:
    m = re.search(rf"^#define RT_{name}\s+(\d+)", _API, re.M)
    if not m:
        raise RuntimeError(f"rt.h: no RT_{name}")
    return int(m.group(1))


# The table of mappings LAN hosts ask for (portmap.h): its most entries, and
# the most remote-peer filters of one entry.
PM_MAX = _limit("PM_MAX")
PM_FILTERS = _limit("PM_FILTERS")

SEEN_REPLY = _status_bit("SEEN_REPLY")
ASSURED = _status_bit("ASSURED")
SRC_NAT = _status_bit("SRC_NAT")
DST_NAT = _status_bit("DST_NAT")
NAT_MAPPED = _status_bit("NAT_MAPPED")
