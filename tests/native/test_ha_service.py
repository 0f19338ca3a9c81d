"""The high-availability service in one process, on loopback: two routers'
data planes and services talking conntrackd's protocol over 127.0.0.1 and
127.0.0.2 — a connection of one reaches the other's external cache and is
committed there with its binding; a sync link that cannot open leaves a
router that can still be made active."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from typing import Any

from router import events
from router.config import parse
from router.ha import wire
from router.ha.entries import from_entry
from router.ha.service import COMMIT_CHUNK, HaService
from router.ha.wire import T_CT_NEW, SyncCt
from tests.native.conftest import (
    BASE,
    LAN,
    LAN_HOST,
    NO_SHARE,
    ROUTER_WAN,
    SERVER,
    WAN,
    Lab,
    make_lab,
)
from tests.packets import IP, UDP

PORT = 37800


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((event, kw))


def service(lab: Lab, local: str, peer: str) -> tuple[HaService, Log]:
    text = BASE + f'\n[ha]\nmode = "ftfw"\nlocal = "10.99.0.1"\npeer = "10.99.0.2"\n' \
        f'port = {PORT}\nresync_timeout = 1.0\n'
    cfg = parse(text.encode(), "ha.toml")
    # Loopback, which the config refuses for a real pair: two in one process.
    cfg = dataclasses.replace(cfg, ha=dataclasses.replace(cfg.ha, local=local, peer=peer))
    log = Log()
    hub = events.EventHub(lab.dp, log, lambda: ["lan0", "wan0"], lambda n: "")
    svc = HaService(lambda: cfg, lab.dp, log, hub, lambda: lab.now)
    return svc, log


def udp(sport: int) -> bytes:
    return bytes(IP(src=LAN_HOST, dst=SERVER) / UDP(sport=sport, dport=53) / b"q")


async def until(what: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not what():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def test_a_connection_travels_and_is_committed_with_its_binding() -> None:
    async def main() -> None:
        a_lab, b_lab = make_lab(seed=1), make_lab(seed=2)
        a, _ = service(a_lab, "127.0.0.1", "127.0.0.2")
        b, _ = service(b_lab, "127.0.0.2", "127.0.0.1")
        await a.start()
        await b.start()
        try:
            await a.become_active("test")
            # A standby opens nothing; the active does, and says so.
            assert b_lab.send(LAN, udp(7000)).reason == "ha_standby"
            r = a_lab.send(LAN, udp(7000))
            ext = IP(r.data)[UDP].sport
            drain = asyncio.ensure_future(a.hub.run())
            await until(lambda: len(b.cache()) == 1)
            await until(lambda: b.ready)
            drain.cancel()
            commit = await b.become_active("test")
            assert commit["committed"] == 1 and b.role == "active"
            r = b_lab.send(WAN, bytes(IP(src=SERVER, dst=ROUTER_WAN) / UDP(sport=53, dport=ext) /
                                      b"a"))
            assert r.out_iface == LAN and IP(r.data)[UDP].dport == 7000
            st = a.status()
            assert st["sent"] > 0 and st["internal"] == 1 and st["sync"] == "up"
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_a_sync_link_that_cannot_open_leaves_a_router_that_can_take_over() -> None:
    async def main() -> None:
        lab = make_lab()
        svc, log = service(lab, "192.0.2.77", "192.0.2.78")  # on no interface here
        await svc.start()
        try:
            st = svc.status()
            assert st["sync"] == "down" and "assign" in st["error"].lower()
            assert any(e == "ha.sync_unavailable" for e, _ in log.lines)
            assert lab.send(LAN, udp(7001)).reason == "ha_standby"
            await svc.become_active("keepalived MASTER")
            assert lab.send(LAN, udp(7001)).out_iface == WAN
            await until(lambda: svc.ready, 3.0)  # alone, after resync_timeout
        finally:
            await svc.stop()
    asyncio.run(main())


def test_a_reload_keeps_the_role_and_the_cache() -> None:
    async def main() -> None:
        lab = make_lab()
        svc, _ = service(lab, "127.0.0.1", "127.0.0.2")
        await svc.start()
        try:
            await svc.become_active("test")
            cfg = svc._cfg()
            new = dataclasses.replace(cfg, ha=dataclasses.replace(cfg.ha, rate=100_000))
            svc._cfg = lambda: new
            await svc.reconfigure()
            assert svc.role == "active" and svc.status()["sync"] == "up"
        finally:
            await svc.stop()
    asyncio.run(main())


def test_a_large_commit_goes_a_chunk_per_loop_turn() -> None:
    """5000 connections committed while another task keeps running: the
    loop is never held for the whole table."""
    async def main() -> None:
        a_lab, b_lab = make_lab(NO_SHARE, capacity=16384, seed=1), \
            make_lab(NO_SHARE, capacity=16384, seed=2)
        b, _ = service(b_lab, "127.0.0.1", "127.0.0.2")
        await b.start()
        try:
            for port in range(10000, 15000):
                a_lab.send(LAN, bytes(IP(src=f"192.168.1.{2 + port % 50}", dst=SERVER) /
                                      UDP(sport=port, dport=53) / b"q"))
            assert b.link is not None
            for e in a_lab.entries():
                ct = from_entry(e)
                assert ct is not None
                b.link.external.apply(T_CT_NEW, ct)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)
            t = asyncio.ensure_future(ticker())
            commit = await b.become_active("test")
            t.cancel()
            assert commit["committed"] == 5000 and b.role == "active"
            assert ticks >= 5000 // COMMIT_CHUNK  # the loop turned between chunks
        finally:
            await b.stop()
    asyncio.run(main())


def test_the_sync_port_takes_only_the_peers_datagrams_and_survives_garbage() -> None:
    """Hostile input on the sync port: a datagram from another address is
    counted and dropped unread; garbage from the peer's is counted as
    malformed by reason; a valid message afterwards is still taken."""
    async def main() -> None:
        lab = make_lab()
        svc, _ = service(lab, "127.0.0.1", "127.0.0.2")
        await svc.start()
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            other.bind(("127.0.0.3", 0))
            peer.bind(("127.0.0.2", 0))
            ct = SyncCt(4, 17, "192.168.1.2", SERVER, 9000, 53, 0x0A, 30)
            other.sendto(wire.ct_msg(wire.T_CT_NEW, 0, 1, ct), ("127.0.0.1", PORT))
            peer.sendto(b"\x10\x00\x00\x04garbage", ("127.0.0.1", PORT))
            peer.sendto(b"\x20" + wire.ct_msg(wire.T_CT_NEW, 0, 2, ct)[1:], ("127.0.0.1", PORT))
            peer.sendto(wire.ct_msg(wire.T_CT_NEW, 0, 3, ct), ("127.0.0.1", PORT))
            await until(lambda: svc.status()["external"] == 1)
            st = svc.status()
            assert st["foreign"] == 1
            assert st["malformed"]["bad_size"] == 1 and st["malformed"]["bad_version"] == 1
        finally:
            other.close()
            peer.close()
            await svc.stop()
    asyncio.run(main())
