"""Worker threads over multi-queue TUN devices (``dataplane.queues`` > 1).

One worker thread over single-queue devices is the default, so every other
module tests it; every gateway test also runs with two queues and with the
event loop moving the packets (test_gateway.py).  Here the queues
themselves: the devices really have them, both workers carry traffic, the
counters add up, and the operations that touch the devices (reloads adding
and removing interfaces, offloads checked on the receiving side, IPv6) work
with them.  Tests imported from the other modules run here with this
module's ``dataplane`` fixture, that is with two queues.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest

from tests.integration.conftest import SERVER, NetLab
from tests.integration.test_ipv6 import (  # noqa: F401 - collected here with 2 queues
    far_server6,
    test_ping6_tcp_udp_through_the_router,
    test_tcp6_upload_with_tso6_checked_by_receiver,
)
from tests.integration.test_offload import (  # noqa: F401
    far_server,
    test_tcp_upload_with_tso_checked_by_receiver,
    test_udp_gso_checked_by_receiver,
)
from tests.integration.test_operate import (  # noqa: F401
    test_reload_adds_and_removes_an_interface,
    test_tcp_stream_survives_ten_reloads,
)

pytestmark = pytest.mark.netns
QUEUES = 2


@pytest.fixture
def dataplane() -> dict[str, Any]:
    return {"queues": QUEUES}


def test_devices_have_queues_and_both_workers_carry_traffic(netlab: NetLab) -> None:
    st = netlab.ctl_json("status")
    assert st["queues"] == QUEUES and len(st["workers"]) == QUEUES
    for ns, dev in ((netlab.lan, "lan0"), (netlab.wan, "wan0")):
        q = netlab.ns(ns, "ls", f"/sys/class/net/{dev}/queues").stdout.split()
        assert sorted(q) == sorted([f"rx-{k}" for k in range(QUEUES)] +
                                   [f"tx-{k}" for k in range(QUEUES)])
    # TCP: four streams with offloads.
    netlab.spawn(netlab.wan, "iperf3", "-s", "-1", "-B", SERVER, "-p", "5211")
    time.sleep(0.5)
    r = netlab.ns(netlab.lan, "iperf3", "-c", SERVER, "-p", "5211", "-t", "2", "-P", "4",
                  "-J", timeout=30)
    res = json.loads(r.stdout)
    assert res["end"]["sum_received"]["bytes"] > 10_000_000
    # UDP: 64 flows, each answered.  The kernel spreads flows over the queues
    # by hash: with 64 flows both queues get some (all on one: 2^-63).
    netlab.server(netlab.wan, "udp-echo", SERVER, 5300)
    client = ("import socket\n"
              "ok=0\n"
              "for i in range(64):\n"
              "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)\n"
              "  s.bind(('', 41000 + i))\n"  # 64 distinct flows, not a port reused
              f"  s.sendto(b'x%d'%i,('{SERVER}',5300))\n"
              "  d,_=s.recvfrom(100); ok+=d.endswith(b'x%d'%i); s.close()\n"
              "print(ok)\n")
    assert netlab.ns(netlab.lan, sys.executable, "-c", client).stdout.strip() == "64"
    stats = netlab.ctl_json("stats")
    workers = netlab.ctl_json("status")["workers"]
    assert all(w["packets"] > 0 and w["errors"] == 0 for w in workers), workers
    # Every packet read was read by a worker; none was lost between them.
    assert sum(w["packets"] for w in workers) == stats["counters"]["rx_packets"]
    assert stats["counters"]["gso_packets"] > 0  # the queues took offloads too
    assert stats["drops"].get("tx_error", 0) == 0
    assert len(netlab.ctl_json("conntrack", "list", "-p", "udp", "--dport", "5300")) == 64


def test_workers_follow_reloads_without_restarting(netlab: NetLab) -> None:
    """A reload that leaves the devices alone loads tables under the lock:
    the workers keep running (started once)."""
    echo = netlab.echo(8071, lifetime=30)
    echo.check("one")
    base = netlab.config.read_text()
    for i in range(3):
        netlab.config.write_text(base + f'\n[[firewall.rule]]\nfrom = "wan"\nprotocol = "udp"'
                                 f'\nport = {7100 + i}\naction = "drop"\n')
        assert netlab.ctl_json("reload")["applied"]
        echo.check(f"r{i}")
    assert len(netlab.events("dp.workers_started")) == 1
    echo.close()


def test_stop_saves_the_table_the_workers_built(netlab: NetLab) -> None:
    echo = netlab.echo(8072, lifetime=30)
    echo.check("before")
    netlab.stop_router()  # workers stop first, then the table is saved
    assert netlab.events("ct.saved")[0]["entries"] >= 1
    netlab.start_router()
    (restored,) = netlab.events("ct.restored")
    assert restored["restored"] >= 1 and restored["failed"] == 0
    echo.check("after")
    echo.close()
