"""One router of an active/standby pair: its role, the commit of the
peer's connections when it becomes active, and the readiness it reports
to keepalived.

The order of a takeover, and why it resets no flow:
1. A standby's data plane opens no forwarded connection
   (``rt_dp_set_standby``): a packet that reaches it before the commit is
   dropped (counted as ``ha_standby``) rather than given a connection, and
   so a NAT port, of its own.  TCP resends it, a UDP application sends its
   next datagram; either then finds the committed connection.
2. keepalived adds the virtual addresses, then runs its notify script.
   The router commits on whichever it sees first: a watched address
   arriving (``[ha] watch``, read from rtnetlink, no process to start) or
   ``routerctl ha master`` from the script.
3. The commit puts every connection of the external cache into the data
   plane (the source-NATed first, which rebuild their endpoint-independent
   mappings before anything looks them up), then lets new connections in,
   then sends the peer the whole table it now holds.

A router that starts asks its peer for the whole table (RESYNC) and writes
1 to ``track_file`` until that table has come (an ALIVE from the peer
after it, or the peer silent for ``resync_timeout``): with keepalived's
``track_file`` at weight 0 it cannot become MASTER empty-handed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from typing import Any

from router import safepath
from router.config import Config
from router.config.model import Ha
from router.datapath import Datapath
from router.events import EventHub
from router.ha.addrwatch import AddressWatch
from router.ha.channel import Key
from router.ha.entries import NAT_MAPPED, from_entry, to_entry
from router.ha.sync import SyncLink
from router.ha.wire import T_CT_NEW, SyncCt
from router.native.records import Event

RESYNC_MIN_INTERVAL = 1.0  # seconds between whole tables sent on the peer's asking
PURGE_DELAY = 3.0   # seconds a demoted router keeps forwarding what is in flight
CHECK = 0.1         # seconds between readiness checks
IN_FLIGHT = 0.25    # seconds a message of the peer's may have been on its way
COMMIT_CHUNK = 512  # connections committed per turn of the event loop
LINK_RETRY = 2.0    # seconds between tries to open a sync link that did not open


def lb_key(cfg: Config) -> int:
    """The load balancers' hash key of a pair: from what both routers'
    configs share (the pair's sync addresses, the load balancers), so that
    both send a new connection to the same backend and either can take one
    over it never heard of.  Not a secret from the pair's operator; from
    anyone else as much as the config is."""
    pair = sorted((cfg.ha.local, cfg.ha.peer))
    text = f"{pair}|{cfg.ha.port}|{cfg.loadbalancers!r}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class HaService:
    # Every change travels to the peer (a connection's state, its NAT, its end).
    ct_types = frozenset(("NEW", "UPDATE", "DESTROY"))

    def __init__(self, cfg: Callable[[], Config], dp: Datapath, log: Any, hub: EventHub,
                 now_ms: Callable[[], int]) -> None:
        self._cfg = cfg
        self.dp = dp
        self.log = log
        self.hub = hub
        self.publish = hub.publish
        self.now_ms = now_ms
        self.ha: Ha | None = None
        self.link: SyncLink | None = None
        self.watch: AddressWatch | None = None
        self.role = "off"
        self.ready = False
        self.since = time.time()
        self.started = 0.0
        self.resync_at = 0.0
        self.events_lost = 0
        self.commits = 0
        self.resyncs_deferred = 0
        self.bulks = 0
        self._bulk_task: asyncio.Task[None] | None = None
        self._bulk_again = False
        self._last_bulk = 0.0
        self._deferred: asyncio.TimerHandle | None = None
        self.last_commit: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._purge: asyncio.TimerHandle | None = None
        self.link_error: str | None = None  # why the sync link did not open
        self._committing: asyncio.Future[dict[str, Any]] | None = None
        self._activating: asyncio.Future[dict[str, Any]] | None = None
        self._last_try = 0.0
        if cfg().ha.enabled:
            dp.set_standby(True)  # before the first packet: nothing opens until a role

    @property
    def enabled(self) -> bool:
        return self.ha is not None

    # -- life ------------------------------------------------------------

    async def start(self) -> None:
        ha = self._cfg().ha
        if not ha.enabled:
            return
        self.ha = ha
        self.dp.set_lb_key(lb_key(self._cfg()))
        self._set_ready(False, "starting")
        self._role("standby", "start")
        self.started = self.resync_at = time.monotonic()
        await self._open_link()
        if ha.watch:
            self.watch = AddressWatch(ha.watch, self._addresses, self.log)
            await self.watch.start()
        self._task = asyncio.ensure_future(self._check())
        self.log.info("ha.started", mode=ha.mode, local=ha.local, peer=ha.peer, port=ha.port,
                      sync="up" if self.link else "down")

    async def _open_link(self) -> None:
        """The sync link's socket; if its address is not there yet (the link
        comes up later), the router goes on without and tries again."""
        assert self.ha is not None
        self._last_try = time.monotonic()
        link = SyncLink(self.ha, self.log)
        link.on_resync = self._peer_resync
        try:
            await link.start()
        except OSError as e:
            if self.link_error != str(e):
                self.log.error("ha.sync_unavailable", local=self.ha.local, port=self.ha.port,
                               reason=str(e), retry_in=LINK_RETRY)
            self.link_error = str(e)
            return
        self.link_error = None
        self.link = link
        self.hub.add_sink(self)
        self.resync_at = time.monotonic()
        link.ask_resync()
        self._bulk("start")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._bulk_task is not None:
            self._bulk_task.cancel()
            self._bulk_task = None
        for fut in (self._committing, self._activating):
            if fut is not None and not fut.done():
                fut.cancel()
        self._committing = self._activating = None
        for timer in (self._purge, self._deferred):
            if timer is not None:
                timer.cancel()
        self._purge = self._deferred = None
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        if self.link is not None:
            self.hub.remove_sink(self)
            await self.link.stop()
            self.link = None
        self.ha = None

    async def reconfigure(self) -> None:
        """A reload: a changed ``[ha]`` starts the sync anew, keeping the
        role and the peer's connections already cached."""
        if self._cfg().ha.enabled:  # the load balancers may have changed
            self.dp.set_lb_key(lb_key(self._cfg()))
        if self._cfg().ha == self.ha:
            return
        cached = self.link.external.take() if self.link else []
        role = self.role
        await self.stop()
        if not self._cfg().ha.enabled:
            self.role = "off"
            self.dp.set_standby(False)
            self.ha = None
            return
        await self.start()
        if self.link is not None:
            for ct in cached:
                self.link.external.apply(T_CT_NEW, ct)
        if role == "active":
            await self.become_active("reload")

    # -- the data plane's connection events (an EventHub sink) -------------

    def ct_event(self, ev: Event) -> None:
        if self.link is None:
            return
        ct = from_entry(ev.entry)
        if ct is None:
            return
        if ev.type == "DESTROY":
            self.link.ended(ct)
        else:
            self.link.changed(ct)

    def ct_lost(self, n: int) -> None:
        """Events lost to a full ring: the peer would fall behind silently,
        so it gets the whole table again instead."""
        self.events_lost += n
        if self.link is not None:
            self.log.warning("ha.events_lost", count=n, action="sending the whole table")
            self._bulk("events lost")

    def _bulk(self, why: str) -> None:
        """The whole table to the peer, read from the data plane a chunk per
        turn of the event loop (a large table never holds the loop); one
        asked while another runs makes one more after it."""
        if self._bulk_task is not None and not self._bulk_task.done():
            self._bulk_again = True
            return
        self._bulk_again = False
        self._bulk_task = asyncio.ensure_future(self._run_bulk(why))

    async def _run_bulk(self, why: str) -> None:
        while self.link is not None:
            seen: set[Key] = set()
            cursor = 0
            while True:
                entries, cursor = self.dp.conntrack_chunk(cursor, self.now_ms())
                cts = [ct for ct in map(from_entry, entries) if ct is not None]
                self.link.bulk_part(cts)
                seen.update(ct.key for ct in cts)
                if not cursor:
                    break
                await asyncio.sleep(0)
                if self.link is None:
                    return
            self.link.bulk_done(seen)
            self.bulks += 1
            if not self._bulk_again:
                return
            self._bulk_again = False

    # -- roles -------------------------------------------------------------

    async def become_active(self, reason: str) -> dict[str, Any]:
        """Commits the peer's connections, then opens new ones; returns the
        commit's counts.  Asked again while a commit runs, it waits for that
        one."""
        if self._purge is not None:
            self._purge.cancel()
            self._purge = None
        if self.role == "active":
            return self.last_commit
        if self._committing is None or self._committing.done():
            self._committing = asyncio.ensure_future(self._activate(reason))
        fut = self._committing
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.cancelled():
                raise  # the asker was cancelled, not the commit
            return {"cancelled": "told to stand by before the commit ended"}

    async def _activate(self, reason: str) -> dict[str, Any]:
        t0 = time.monotonic()
        result = await self._commit(self.link.external.take() if self.link else [])
        self.dp.set_standby(False)
        self._role("active", reason)
        self._bulk("commit")
        result["ms"] = round((time.monotonic() - t0) * 1000, 1)
        self.commits += 1
        self.last_commit = result | {"time": round(time.time(), 3), "reason": reason}
        self.log.info("ha.committed", **self.last_commit)
        self.publish({"type": "HA", "event": "commit", **self.last_commit})
        return self.last_commit

    def become_standby(self, reason: str) -> None:
        if self._committing is not None and not self._committing.done():
            self._committing.cancel()  # what it put in goes with the purge below
            self._committing = None
        elif self.role == "standby":
            return
        self.dp.set_standby(True)
        self._role("standby", reason)
        if self.link is not None:
            self.link.ask_resync()
        # What is in flight still passes for a moment; then the table goes,
        # the peer holding it now.  Kept, stale windows and timers would
        # only stand in the way of the next commit.
        self._purge = asyncio.get_running_loop().call_later(PURGE_DELAY, self._flush)

    def _flush(self) -> None:
        self._purge = None
        if self.role == "standby":
            n = self.dp.count()
            self.dp.flush(self.now_ms())
            self.log.info("ha.table_flushed", connections=n)

    def resync(self) -> None:
        if self.link is None:
            raise RuntimeError(f"the sync link is down: {self.link_error}")
        self.link.ask_resync()
        self.resync_at = time.monotonic()

    async def _commit(self, cts: list[SyncCt]) -> dict[str, Any]:
        """The peer's connections into the data plane, COMMIT_CHUNK per turn
        of the event loop (a large table never holds it; the standby keeps
        dropping new connections until the last is in, and the ones already
        in forward at once)."""
        entries = [e for e in map(to_entry, cts) if e is not None]
        entries.sort(key=lambda e: not e.status & NAT_MAPPED)
        counts = {"committed": 0, "present": 0, "refused": 0, "invalid": len(cts) - len(entries)}
        for i in range(0, len(entries), COMMIT_CHUNK):
            if i:
                await asyncio.sleep(0)
            now = self.now_ms()
            for e in entries[i:i + COMMIT_CHUNK]:
                r = self.dp.restore(e, now)
                counts["committed" if r == 0 else "present" if r == -2 else
                       "refused" if r == -3 else "invalid"] += 1
        return counts

    def _role(self, role: str, reason: str) -> None:
        old, self.role = self.role, role
        self.since = time.time()
        if role == "standby":
            self.dp.set_standby(True)
        self.log.info("ha.role", role=role, was=old, reason=reason)
        self.publish({"type": "HA", "event": "role", "role": role, "was": old,
                      "reason": reason})

    def _addresses(self, held: bool) -> None:
        if held:
            self._activating = asyncio.ensure_future(self.become_active("address arrived"))
        elif self.role == "active" or self._committing is not None:
            self.become_standby("address left")

    def _peer_resync(self) -> None:
        # At most one whole table a second, however often the peer asks: a
        # flood of RESYNCs must not become a flood of bulks.  One asked too
        # soon is sent when the second is up (once, for all asked till then).
        now = time.monotonic()
        wait = self._last_bulk + RESYNC_MIN_INTERVAL - now
        if wait > 0:
            self.resyncs_deferred += 1
            if self._deferred is None:
                self._deferred = asyncio.get_running_loop().call_later(wait, self._send_bulk)
            return
        self._send_bulk()

    def _send_bulk(self) -> None:
        self._deferred = None
        self._last_bulk = time.monotonic()
        self.log.info("ha.resync_asked", by="peer")
        self.publish({"type": "HA", "event": "resync", "by": "peer"})
        self._bulk("peer asked")

    # -- readiness -----------------------------------------------------------

    async def _check(self) -> None:
        """Readiness, and a sync link that did not open, tried again."""
        while self.ha is not None:
            await asyncio.sleep(CHECK)
            now = time.monotonic()
            link = self.link
            if link is None:
                if now - self._last_try >= LINK_RETRY:
                    await self._open_link()
                if not self.ready and now - self.started > self.ha.resync_timeout:
                    self._set_ready(True, "no sync link: standing alone")
                continue
            if self.ready:
                continue
            # An ALIVE sent before the peer saw our RESYNC may still be on
            # its way: only one that left well after it ends the bulk.
            if link.last_alive > self.resync_at + IN_FLIGHT or (
                    link.ha.mode == "notrack" and link.last_data > self.resync_at and
                    now - link.last_data > 0.5):
                self._set_ready(True, "synced")
            elif now - self.resync_at > link.ha.resync_timeout:
                heard = link.channel.last_heard > self.resync_at
                self._set_ready(True, "peer silent: standing alone" if not heard else
                                "resync not finished in time: taking what came")

    def _set_ready(self, ready: bool, reason: str) -> None:
        self.ready = ready
        ha = self.ha or self._cfg().ha
        if ready:
            self.log.info("ha.ready", reason=reason,
                          cached=len(self.link.external) if self.link else 0)
            self.publish({"type": "HA", "event": "ready", "reason": reason})
        if ha.track_file:
            directory, name = os.path.split(ha.track_file)
            try:
                dfd = safepath.open_dir(directory, create=0o755)
                try:
                    safepath.write_new(name, dfd, b"0\n" if ready else b"1\n", mode=0o644)
                finally:
                    os.close(dfd)
            except (OSError, safepath.UnsafePath) as e:
                self.log.error("ha.track_file_unwritable", path=ha.track_file, reason=str(e))

    # -- what routerctl ha status shows ----------------------------------------

    def status(self) -> dict[str, Any]:
        ha = self._cfg().ha
        if self.link is None:
            return {"mode": ha.mode, "role": self.role, "ready": self.ready,
                    "sync": "down" if self.ha else "off", "error": self.link_error}
        link, ch = self.link, self.link.channel
        now = time.monotonic()
        st = ch.stats
        return {
            "mode": ha.mode, "role": self.role, "ready": self.ready, "sync": "up",
            "since": round(self.since, 3), "local": ha.local, "peer": ha.peer, "port": ha.port,
            "last_heard": round(now - ch.last_heard, 3) if ch.last_heard else None,
            "lag": round(ch.lag(now), 3), "pending": ch.pending, "unacked": ch.unacked,
            "handshake": ch.hello, "peer_seq": ch.last_recv,
            "sent": st.sent, "sent_bytes": st.sent_bytes, "datagrams": st.datagrams,
            "received": st.received, "lost": st.lost, "resent": st.resent,
            "duplicates": st.duplicates, "nacks_sent": st.nacks_sent,
            "resyncs_asked": st.resyncs_asked, "resyncs_deferred": self.resyncs_deferred,
            "resend_overflow": st.resend_overflow,
            "malformed": dict(st.malformed), "foreign": link.foreign,
            "send_errors": link.send_errors, "events_lost": self.events_lost,
            "expectations_ignored": link.expectations,
            "internal": len(link.internal), "external": len(link.external),
            "external_full": link.external.full, "commits": self.commits, "bulks": self.bulks,
            "last_commit": self.last_commit or None,
            "watch": sorted(self.watch.here) if self.watch else [],
        }

    def cache(self) -> list[SyncCt]:
        return list(self.link.external.entries.values()) if self.link else []
