"""Offloads end to end, with checksums verified on the receiving side.

Inside namespaces a receiving kernel trusts a packet marked CHECKSUM_PARTIAL,
so a wrong partial checksum would pass unnoticed.  Here the WAN namespace
forwards to a server namespace over a veth pair whose sending side has
checksum offload off (the kernel completes the checksum in software from the
partial field the router wrote) and whose receiving side has receive
offload off (the server's kernel verifies every checksum).  A wrong update
shows as InCsumErrors in the server namespace and a failed transfer.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.conftest import (
    ROUTER_WAN,
    NetLab,
    csum_errors,
    server_behind_wan,
    udp_gso_arrives,
)

pytestmark = pytest.mark.netns
SRV_IP = "198.18.0.2"


@pytest.fixture
def far_server(netlab: NetLab) -> Iterator[str]:
    with server_behind_wan(netlab, "s", "198.18.0.1/24", f"{SRV_IP}/24", "198.18.0.1") as srv:
        yield srv


def test_tcp_upload_with_tso_checked_by_receiver(netlab: NetLab, far_server: str) -> None:
    srv = far_server
    sink = netlab.spawn(srv, sys.executable, "-c",
                        "import socket,hashlib,sys\n"
                        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                        f"s.bind(('{SRV_IP}',9000));s.listen();s.settimeout(30)\n"
                        "print('ready',flush=True)\n"
                        "c,a=s.accept();h=hashlib.sha256();n=0\n"
                        "while True:\n"
                        "  d=c.recv(1<<16)\n"
                        "  if not d: break\n"
                        "  h.update(d);n+=len(d)\n"
                        "print(a[0],n,h.hexdigest(),flush=True)\n")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    payload = bytes(range(256)) * 32768  # 8 MiB
    want = hashlib.sha256(payload).hexdigest()
    sender = ("import socket,sys\n"
              f"s=socket.create_connection(('{SRV_IP}',9000),timeout=20)\n"
              "s.sendall(sys.stdin.buffer.read());s.close()\n")
    p = subprocess.run(["ip", "netns", "exec", netlab.lan, sys.executable, "-c", sender],
                       input=payload, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    line = sink.stdout.readline().split()
    assert line == [ROUTER_WAN, str(len(payload)), want]
    errs = csum_errors(netlab, srv)
    assert errs.get("TcpInCsumErrors", 0) == 0, errs
    c = netlab.ctl_json("stats")["counters"]
    assert c["gso_packets"] > 0 and c["csum_partial"] > 0, c
    # Window tracking keeps up with a real stack's scaled windows, SACK and
    # 64 KB super-packets: not one segment was judged out of window.
    drops = netlab.drops()
    assert drops["tcp_out_of_window"] == 0 and drops["tcp_invalid_rst"] == 0, drops


def test_udp_gso_checked_by_receiver(netlab: NetLab, far_server: str) -> None:
    udp_gso_arrives(netlab, far_server, SRV_IP, "9001")
    c = netlab.ctl_json("stats")["counters"]
    assert c["gso_packets"] >= 1 and c["gso_segments"] >= 8, c
