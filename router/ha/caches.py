"""conntrackd's two caches: the internal one (this router's connections, as
last sent to the peer) and the external one (the peer's, kept without
forwarding until a commit puts them in the data plane)."""

from __future__ import annotations

from router.ha import wire
from router.ha.channel import Key
from router.ha.wire import SyncCt


class Internal:
    """This router's connections as the sync knows them: live ones, and
    ended ones until the peer has heard of their end."""

    def __init__(self) -> None:
        self.live: dict[Key, SyncCt] = {}
        self.dead: dict[Key, SyncCt] = {}
        self.announced: set[Key] = set()  # sent NEW once: later changes are UPDATE

    def __len__(self) -> int:
        return len(self.live)

    def update(self, ct: SyncCt) -> Key:
        key = ct.key
        self.live[key] = ct
        self.dead.pop(key, None)
        return key

    def destroy(self, ct: SyncCt) -> Key:
        key = ct.key
        old = self.live.pop(key, None)
        self.dead[key] = old or ct
        return key

    def lookup(self, key: Key) -> tuple[int, SyncCt] | None:
        ct = self.live.get(key)
        if ct is not None:
            first = key not in self.announced
            self.announced.add(key)
            return (wire.T_CT_NEW if first else wire.T_CT_UPD), ct
        ct = self.dead.get(key)
        if ct is not None:
            return wire.T_CT_DEL, ct
        return None

    def delivered(self, key: Key) -> None:
        """The peer has ``key``'s last message (or never will): an ended
        connection is forgotten."""
        if self.dead.pop(key, None) is not None:
            self.announced.discard(key)


class External:
    """The peer's connections, at most ``limit`` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: dict[Key, SyncCt] = {}
        self.full = 0  # NEW messages refused for want of room

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, mtype: int, ct: SyncCt) -> None:
        key = ct.key
        if mtype == wire.T_CT_DEL:
            self.entries.pop(key, None)
        elif key in self.entries or len(self.entries) < self.limit:
            self.entries[key] = ct
        else:
            self.full += 1

    def take(self) -> list[SyncCt]:
        """Every entry, the cache emptied (a commit)."""
        out = list(self.entries.values())
        self.entries.clear()
        return out
