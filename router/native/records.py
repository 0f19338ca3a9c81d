"""The data plane's records in Python form: connections and events.

Pure dataclasses, importable without the compiled library (``routerctl``, the
state file and the conntrack-tools text use them); ``router.datapath`` fills
them from C.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.native.names import ASSURED, SEEN_REPLY

# TCP window tracking of one direction: (end, maxend, maxwin, scale, flags, maxack).
TcpWindow = tuple[int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class CtEntry:
    """One tracked connection, both directions."""

    slot: int
    family: int
    proto: int
    state: str | None  # TCP only
    status: int
    src: tuple[str, str]
    dst: tuple[str, str]
    sport: tuple[int, int]
    dport: tuple[int, int]
    timeout_ms: int
    age_ms: int
    packets: tuple[int, int]
    bytes: tuple[int, int]
    # TCP window tracking per direction: (end, maxend, maxwin, scale, flags,
    # maxack);
    # None when not known (a restored entry then re-learns it liberally).
    tcp_window: tuple[TcpWindow, TcpWindow] | None = None

    @property
    def assured(self) -> bool:
        return bool(self.status & ASSURED)

    @property
    def seen_reply(self) -> bool:
        return bool(self.status & SEEN_REPLY)


@dataclass(frozen=True, slots=True)
class Event:
    """A connection event (NEW, UPDATE, DESTROY: ``entry`` is the connection)
    or a sampled drop (DROP: ``entry`` holds the packet's addresses, protocol
    and ports in direction 0; ``reason``, ``iface``, ``rule`` say why)."""

    type: str
    entry: CtEntry
    reason: str = ""
    iface: int = -1
    rule: int = -1
    tcp_flags: int = 0
