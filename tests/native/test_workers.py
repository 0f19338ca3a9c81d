"""Worker threads (rt_workers_start): worker k reads queue k of every device
and writes to queue k of the output device, sharing the connection table
under the data plane's lock.  Datagram socket pairs stand in for the queues
of multi-queue TUN devices (one read, one packet); the namespace tests run
the same code on real multi-queue TUNs."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from router.config import parse
from router.datapath import Datapath, DatapathError
from router.tables import compile_tables
from tests.native.conftest import BASE, LAN_HOST, ROUTER_WAN, SERVER
from tests.packets import IP, UDP, Raw, verify_checksums

QUEUES = 2


class Wired:
    """lan0 and wan0 with QUEUES socket pairs each: router ends and host ends."""

    def __init__(self) -> None:
        self.rt: dict[str, list[socket.socket]] = {"lan0": [], "wan0": []}
        self.host: dict[str, list[socket.socket]] = {"lan0": [], "wan0": []}
        for name in ("lan0", "wan0"):
            for _ in range(QUEUES):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                a.setblocking(False)
                b.setblocking(False)
                # Room for bursts: the router drops what a full queue refuses.
                b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                self.rt[name].append(a)
                self.host[name].append(b)
        self.dp = Datapath(capacity=4096, batch=64, seed=1)
        self.tables = compile_tables(parse(BASE.encode(), "t.toml"),
                                     {n: s[0].fileno() for n, s in self.rt.items()})
        self.dp.load(self.tables)

    def fds(self) -> list[list[int]]:
        return [[self.rt["lan0"][k].fileno(), self.rt["wan0"][k].fileno()]
                for k in range(QUEUES)]

    def close(self) -> None:
        self.dp.stop_workers()
        for socks in (*self.rt.values(), *self.host.values()):
            for s in socks:
                s.close()


@pytest.fixture
def wired() -> Iterator[Wired]:
    w = Wired()
    yield w
    w.close()


def recv(s: socket.socket, timeout: float = 5.0) -> bytes:
    r, _, _ = select.select([s], [], [], timeout)
    assert r, "nothing arrived"
    return s.recv(65536)


def query(sport: int, payload: bytes = b"q") -> bytes:
    return bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=sport, dport=53) / Raw(payload))


def test_each_worker_answers_on_its_own_queue(wired: Wired) -> None:
    wired.dp.start_workers(wired.fds(), budget=64)
    for k in range(QUEUES):
        wired.host["lan0"][k].send(query(5000 + k))
    for k in range(QUEUES):
        out = IP(recv(wired.host["wan0"][k]))
        assert out.src == ROUTER_WAN and out[UDP].sport == 5000 + k  # port kept
        # The answer comes back on the same queue of the WAN device...
        wired.host["wan0"][k].send(bytes(IP(src=SERVER, dst=ROUTER_WAN) /
                                         UDP(sport=53, dport=5000 + k) / Raw(b"a%d" % k)))
    for k in range(QUEUES):
        back = recv(wired.host["lan0"][k])  # ... and leaves on the same LAN queue
        verify_checksums(back)
        assert IP(back).dst == LAN_HOST and bytes(IP(back)[Raw]) == b"a%d" % k
    stats = wired.dp.worker_stats()
    assert len(stats) == QUEUES
    assert all(s["packets"] == 2 and s["errors"] == 0 for s in stats)
    assert wired.dp.counters()["tx_packets"] == 4
    assert wired.dp.iface_stats(0)["tx_packets"] == 2  # counted back under the lock
    assert wired.dp.count() == 2


def test_flows_through_both_workers_while_the_control_plane_reads(wired: Wired) -> None:
    """Both workers forward while the event loop's calls (dumps, counters,
    sweeps, reloads) run between their batches: every packet arrives, the
    table holds every flow once, and the counters add up."""
    wired.dp.start_workers(wired.fds(), budget=64)
    flows, rounds = 200, 5
    stop = threading.Event()
    seen_counts: list[int] = []

    def control() -> None:
        while not stop.is_set():
            seen_counts.append(len(wired.dp.conntrack(int(time.monotonic() * 1000))))
            wired.dp.counters()
            wired.dp.sweep(int(time.monotonic() * 1000), 1024)
            wired.dp.load(wired.tables)

    t = threading.Thread(target=control)
    t.start()
    got = [0] * QUEUES
    try:
        for _ in range(rounds):
            for i in range(flows):
                k = i % QUEUES
                wired.host["lan0"][k].send(query(10000 + i))
            for k in range(QUEUES):
                for _ in range(flows // QUEUES):
                    out = IP(recv(wired.host["wan0"][k]))
                    assert out[UDP].sport % QUEUES == k
                    got[k] += 1
    finally:
        stop.set()
        t.join()
    assert got == [flows * rounds // QUEUES] * QUEUES
    assert wired.dp.count() == flows
    assert seen_counts and max(seen_counts) <= flows
    c = wired.dp.counters()
    assert c["rx_packets"] == c["tx_packets"] == flows * rounds
    assert sum(s["packets"] for s in wired.dp.worker_stats()) == flows * rounds
    assert sum(s["batches"] for s in wired.dp.worker_stats()) >= QUEUES


def test_stop_waits_and_leaves_packets_queued(wired: Wired) -> None:
    wired.dp.start_workers(wired.fds(), budget=64)
    wired.dp.stop_workers()
    assert wired.dp.worker_stats() == []
    wired.host["lan0"][0].send(query(6000))
    r, _, _ = select.select([wired.host["wan0"][0]], [], [], 0.2)
    assert not r  # nobody forwards now
    wired.dp.stop_workers()  # twice is fine
    # Started again, the waiting packet goes.
    wired.dp.start_workers(wired.fds(), budget=64)
    assert IP(recv(wired.host["wan0"][0]))[UDP].sport == 6000


def test_bad_starts_are_refused(wired: Wired) -> None:
    with pytest.raises(DatapathError, match="Invalid argument"):
        wired.dp.start_workers([[wired.rt["lan0"][0].fileno()]], budget=64)  # 1 of 2 ifaces
    with pytest.raises(DatapathError, match="Bad file descriptor"):
        wired.dp.start_workers([[-1, -1]], budget=64)
    with pytest.raises(DatapathError, match="every interface"):
        wired.dp.start_workers([[1, 2], [3]], budget=64)
    wired.dp.start_workers(wired.fds(), budget=64)
    with pytest.raises(DatapathError, match="busy"):
        wired.dp.start_workers(wired.fds(), budget=64)
    assert len(wired.dp.worker_stats()) == QUEUES


def test_a_broken_queue_is_given_up_without_spinning(wired: Wired) -> None:
    """A queue whose reads fail (a device that went away) is counted and
    left out; the other queues keep working."""
    # A socket that was shut down for writing on the other end reads EOF
    # (0 bytes), not an error; a listening stream socket fails reads with
    # ENOTCONN and is always "readable" after a connect attempt: use one.
    bad = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bad.bind(("127.0.0.1", 0))
    bad.listen()
    bad.setblocking(False)
    probe = socket.create_connection(bad.getsockname())  # makes it readable
    fds = wired.fds()
    fds[1][0] = bad.fileno()  # worker 1 reads lan0 through the broken one
    try:
        wired.dp.start_workers(fds, budget=64)
        deadline = time.monotonic() + 5
        while wired.dp.worker_stats()[1]["errors"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert wired.dp.worker_stats()[1]["errors"] == 1
        wakeups = wired.dp.worker_stats()[1]["wakeups"]
        time.sleep(0.2)
        assert wired.dp.worker_stats()[1]["wakeups"] - wakeups < 5  # not spinning
        wired.host["lan0"][0].send(query(7000))
        assert IP(recv(wired.host["wan0"][0]))[UDP].sport == 7000
    finally:
        wired.dp.stop_workers()
        probe.close()
        bad.close()


def _nice_of_threads() -> list[int]:
    out = []
    for t in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{t}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out.append(int(fields[16]))  # field 19 of stat: nice
    return out


def test_a_background_worker_runs_at_the_lowest_priority(wired: Wired) -> None:
    """The worker of connection openers (dataplane.syn_queue) gives way to
    the worker of established traffic when the CPUs are busy."""
    before = _nice_of_threads()
    wired.dp.background_workers(0b10)
    wired.dp.start_workers(wired.fds(), budget=64)
    try:
        deadline = time.monotonic() + 5
        while _nice_of_threads().count(19) < before.count(19) + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _nice_of_threads().count(19) == before.count(19) + 1  # worker 1 only
    finally:
        wired.dp.stop_workers()
        wired.dp.background_workers(0)
