"""Both directions of one sync channel: conntrackd's NOTRACK and FTFW modes
as a state machine, without sockets or clocks of its own (the caller
passes ``now``), so that tests can drive it message by message.

NOTRACK sends each change once and trusts the link.  FTFW (conntrackd's
"fault-tolerant firewall" mode) numbers every message, keeps what it sent
in a resend queue until the peer acknowledges it, and resends what the
peer reports missing:
- the receiver acknowledges every ``window`` messages in sequence, and on
  its once-a-second ALIVE tick whatever it has not acknowledged yet;
- a gap in the sequence numbers makes it ask for the missing range (NACK);
- a connection is resent in its current state (its latest change), not as
  the message that was lost; control messages are resent as they were;
- a node that starts says HELLO on its messages until the peer answers
  with HELLO_BACK: the peer then takes that sequence number as its start,
  and sends again what waited in its resend queue, which the restarted node
  will never acknowledge (conntrackd drops it: what was lost then stays
  lost);
- a RESYNC asks the peer to send its whole table again.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from router.ha import wire
from router.ha.wire import Msg, SyncCt

ALIVE_INTERVAL = 1.0  # conntrackd's ALIVE_INT
MASK = 0xFFFFFFFF

Key = tuple[int, int, str, str, int, int]
# What an object in the queue is now: (message type, connection), or None
# when there is nothing left to say about it.
Lookup = Callable[[Key], tuple[int, SyncCt] | None]


@dataclass
class Stats:
    sent: int = 0            # messages
    sent_bytes: int = 0
    datagrams: int = 0
    received: int = 0
    lost: int = 0            # gaps seen in the peer's sequence
    duplicates: int = 0      # old sequence numbers, dropped
    resent: int = 0          # messages sent again on the peer's NACK
    nacks_sent: int = 0
    resyncs_asked: int = 0   # by the peer
    resend_overflow: int = 0  # dropped unacknowledged from a full resend queue
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(wire.ERRORS, 0))


class Channel:
    def __init__(self, ftfw: bool, window: int, resend_max: int, mtu: int,
                 first_seq: int | None = None) -> None:
        self.ftfw = ftfw
        self.window = window
        self.resend_max = resend_max
        self.max_datagram = mtu - 28  # IPv4 and UDP headers
        self.seq = (int(time.time()) if first_seq is None else first_seq) & MASK
        self.stats = Stats()
        # sending
        self.hello = "init"        # init -> say -> done (FTFW)
        self.say_hello_back = False
        self.ctl_out: collections.deque[tuple[int, int, int]] = collections.deque()
        # Both in sending order, taken from the front: OrderedDicts, whose
        # first item is found at once (a dict's, after deletions at the
        # front, only by a scan over the holes).
        self.obj_out: collections.OrderedDict[Key, float] = collections.OrderedDict()
        self.rs: collections.OrderedDict[int, tuple[Key | None, int, int, int, float]] = \
            collections.OrderedDict()  # seq -> (key or None, ctl flags, from, to, queued)
        self.rs_of: dict[Key, int] = {}      # object -> its sequence number in rs
        self.last_sent = 0.0
        # receiving
        self.last_recv: int | None = None
        self.left = window           # messages until the next ACK
        self.ack_from: int | None = None
        self.last_heard = 0.0        # monotonic time of the peer's last message
        self.on_acked: Callable[[Key], None] = lambda k: None

    # -- what the caller queues ------------------------------------------

    def queue(self, key: Key, now: float) -> None:
        """Send the current state of ``key`` (again, if it is waiting for an
        acknowledgement: its newer state replaces it)."""
        seq = self.rs_of.pop(key, None)
        if seq is not None:
            self.rs.pop(seq, None)
        self.obj_out.setdefault(key, now)

    def ask_resync(self) -> None:
        self.ctl_out.append((wire.F_RESYNC, 0, 0))

    def alive(self) -> None:
        """An ALIVE now: after a bulk, it tells the peer the bulk is over."""
        if self.ftfw:
            self.ctl_out.append((wire.F_ALIVE, 0, 0))

    @property
    def pending(self) -> int:
        return len(self.obj_out) + len(self.ctl_out)

    @property
    def unacked(self) -> int:
        return len(self.rs)

    def lag(self, now: float) -> float:
        """Seconds the oldest change not yet sent (or, FTFW, not yet
        acknowledged) has waited."""
        oldest = next(iter(self.obj_out.values()), now)
        if self.rs:
            oldest = min(oldest, next(iter(self.rs.values()))[4])
        return max(0.0, now - oldest)

    # -- receiving ---------------------------------------------------------

    def receive(self, m: Msg, now: float) -> str | None:
        """Takes one message of the peer: "data" (the caller applies it),
        "resync" (the caller queues its whole table) or None."""
        self.stats.received += 1
        self.last_heard = now
        if m.flags & wire.F_HELLO_BACK and self.hello == "say":
            self.hello = "done"
        if self.ftfw and m.flags & wire.F_HELLO:
            if not self.say_hello_back and not self.ctl_out and not self.obj_out:
                self.ctl_out.append((wire.F_ALIVE, 0, 0))  # the HELLO_BACK, now
            self.say_hello_back = True
            if self.last_recv is None or not self._near(m.seq):
                self._peer_restarted(now)
        status = self._track(m.seq)
        if status == "before":
            self.stats.duplicates += 1
            return None
        if self.ftfw:
            self._acknowledge(m.seq, status)
        self.last_recv = m.seq
        if m.type != wire.T_CTL:
            return "data" if m.is_data else None
        if m.flags & wire.F_ACK and self.ftfw:
            self._acked(m.first, m.last)
        elif m.flags & wire.F_NACK and self.ftfw:
            self._nacked(m.first, m.last, now)
        elif m.flags & wire.F_RESYNC:
            self.stats.resyncs_asked += 1
            return "resync"
        return None

    def _near(self, seq: int) -> bool:
        """Whether ``seq`` can follow what came before: the next one, or a
        gap no longer than the peer's resend queue could fill."""
        assert self.last_recv is not None
        return ((seq - self.last_recv - 1) & MASK) <= self.resend_max

    def _peer_restarted(self, now: float) -> None:
        """A HELLO far out of sequence: the peer (re)started, its sequence
        starts here, and it will never acknowledge what waits in the resend
        queue.  Its connections are sent again rather than dropped (what was
        lost on the way would be lost for good); its control messages meant
        nothing to the new peer.  (A HELLO in sequence is a peer that has
        not heard our HELLO_BACK yet: it is answered again, nothing reset; a
        gap before it is a loss, asked for again as any other.)"""
        for key in self.rs_of:
            self.obj_out.setdefault(key, now)
        self.rs.clear()
        self.rs_of.clear()
        self.last_recv = None
        self.ack_from = None
        self.left = self.window

    def _track(self, seq: int) -> str:
        if self.last_recv is None:
            return "in_sync"
        expected = (self.last_recv + 1) & MASK
        if seq == expected:
            return "in_sync"
        if wire.before(expected, seq):
            self.stats.lost += (seq - expected) & MASK
            return "after"
        return "before"

    def _acknowledge(self, seq: int, status: str) -> None:
        if status == "after":
            assert self.last_recv is not None
            expected = (self.last_recv + 1) & MASK
            if self.ack_from is not None:
                self.ctl_out.append((wire.F_ACK, self.ack_from, (expected - 1) & MASK))
            self.ctl_out.append((wire.F_NACK, expected, (seq - 1) & MASK))
            self.stats.nacks_sent += 1
            self.left = self.window - 1
            self.ack_from = seq
            return
        if self.ack_from is None:
            self.ack_from = seq
        self.left -= 1
        if self.left <= 0:
            self.ctl_out.append((wire.F_ACK, self.ack_from, seq))
            self.left = self.window
            self.ack_from = None

    def _acked(self, first: int, last: int) -> None:
        if wire.before(last, first):
            self.stats.malformed["bad_type"] += 1
            return
        for seq in [s for s in self.rs if wire.between(s, first, last)]:
            key = self.rs.pop(seq)[0]
            if key is not None and self.rs_of.get(key) == seq:
                del self.rs_of[key]
                self.on_acked(key)

    def _nacked(self, first: int, last: int, now: float) -> None:
        if wire.before(last, first):
            self.stats.malformed["bad_type"] += 1
            return
        for seq in [s for s in self.rs if wire.between(s, first, last)]:
            key, flags, a, b, _t = self.rs.pop(seq)
            self.stats.resent += 1
            if key is None:
                self.ctl_out.append((flags, a, b))
            else:
                self.rs_of.pop(key, None)
                self.obj_out.setdefault(key, now)

    # -- sending -----------------------------------------------------------

    def tick(self, now: float) -> None:
        """FTFW's once-a-second message when nothing else went out: the
        acknowledgement still owed, else ALIVE."""
        if not self.ftfw or now - self.last_sent < ALIVE_INTERVAL or self.ctl_out:
            return
        if self.ack_from is not None and self.last_recv is not None:
            self.ctl_out.append((wire.F_ACK, self.ack_from, self.last_recv))
            self.ack_from = None
            self.left = self.window
        else:
            self.ctl_out.append((wire.F_ALIVE, 0, 0))

    def _next_seq(self) -> int:
        s = self.seq
        self.seq = (s + 1) & MASK
        return s

    def _hello_flags(self) -> int:
        if not self.ftfw:
            return 0
        f = 0
        if self.hello in ("init", "say"):
            self.hello = "say"
            f |= wire.F_HELLO
        if self.say_hello_back:
            f |= wire.F_HELLO_BACK
            self.say_hello_back = False
        return f

    def _remember(self, seq: int, item: tuple[Key | None, int, int, int, float]) -> None:
        self.rs[seq] = item
        if item[0] is not None:
            self.rs_of[item[0]] = seq
        while len(self.rs) > self.resend_max:
            old, item = self.rs.popitem(last=False)
            key = item[0]
            self.stats.resend_overflow += 1
            if key is not None and self.rs_of.get(key) == old:
                del self.rs_of[key]
                self.on_acked(key)  # given up on: as good as gone

    def build(self, lookup: Lookup, budget: int, now: float) -> list[bytes]:
        """Datagrams for what is queued, control messages first, at most
        about ``budget`` bytes (what is left waits for the next call)."""
        out: list[bytes] = []
        buf = bytearray()
        spent = 0

        def put(raw: bytes) -> None:
            nonlocal spent
            if len(buf) + len(raw) > self.max_datagram and buf:
                out.append(bytes(buf))
                buf.clear()
            buf.extend(raw)
            spent += len(raw)
            self.stats.sent += 1
            self.stats.sent_bytes += len(raw)

        while self.ctl_out and spent < budget:
            flags, a, b = self.ctl_out.popleft()
            seq = self._next_seq()
            put(wire.ctl(flags | self._hello_flags(), seq, a, b))
            if self.ftfw and flags & wire.RANGE_FLAGS:
                self._remember(seq, (None, flags, a, b, now))
        while self.obj_out and spent < budget:
            key, queued = self.obj_out.popitem(last=False)
            what = lookup(key)
            if what is None:
                continue
            seq = self._next_seq()
            put(wire.ct_msg(what[0], self._hello_flags(), seq, what[1]))
            if self.ftfw:
                self._remember(seq, (key, 0, 0, 0, queued))
            else:
                self.on_acked(key)
        if buf:
            out.append(bytes(buf))
        if out:
            self.stats.datagrams += len(out)
            self.last_sent = now
        return out
