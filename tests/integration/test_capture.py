"""routerctl capture as tcpdump users use it: a filter compiled by libpcap
that picks one flow out of several, pcapng with each packet's interface and
direction (read by tshark), a live stream piped into tcpdump -r -, and a
filter libpcap refuses."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import LAN_HOST, PEERS, ROUTER_WAN, SERVER, NetLab, run
from tests.integration.test_operate import ctl_proc, wait_for_log

pytestmark = pytest.mark.netns


def test_filter_picks_one_flow_with_interface_and_direction(netlab: NetLab) -> None:
    netlab.server(netlab.wan, "udp-echo", SERVER, 41000)
    pcap = netlab.workdir / "any.pcapng"
    cap = ctl_proc(netlab, "capture", "any", "-w", str(pcap), "-t", "20", "-c", "4",
                   "udp", "and", "port", "41002")
    wait_for_log(netlab, "capture.started")
    for sport in (41001, 41002, 41003):   # three flows; the filter wants the second
        netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "41000", "x",
                  str(sport))
    _, err = cap.communicate(timeout=30)
    assert "4 packets captured on any" in err, err
    # The first flow, in and out on both links; the third came after the end.
    assert "4 not matching the filter" in err, err
    r = run("tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.interface_name",
            "-e", "frame.packet_flags_direction", "-e", "ip.src", "-e", "udp.srcport")
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    # In on lan0, out on wan0 (translated), in on wan0, out on lan0.
    inbound, outbound = "0x00000001", "0x00000002"
    assert rows == [["lan0", inbound, LAN_HOST, "41002"], ["wan0", outbound, ROUTER_WAN, "41002"],
                    ["wan0", inbound, SERVER, "41000"], ["lan0", outbound, SERVER, "41000"]], rows
    # Classic pcap when asked, which tcpdump reads the same.
    classic = netlab.workdir / "one.pcap"
    cap = ctl_proc(netlab, "capture", "lan0", "-w", str(classic), "--pcap", "-t", "10",
                   "-c", "1", "udp")
    wait_for_log(netlab, "capture.started", 2)
    netlab.ns(netlab.lan, sys.executable, PEERS, "udp-send", SERVER, "41000", "x", "41004")
    cap.communicate(timeout=20)
    out = run("tcpdump", "-n", "-r", str(classic)).stdout
    assert f"IP {LAN_HOST}.41004 > {SERVER}.41000: UDP" in out, out


def test_a_filter_libpcap_refuses_is_a_clear_error(netlab: NetLab) -> None:
    out = netlab.workdir / "never.pcapng"
    r = netlab.ctl("capture", "lan0", "-w", str(out), "udp", "port", "banana", check=False)
    assert r.returncode == 1
    assert "filter 'udp port banana'" in r.stderr and "banana" in r.stderr.split(":", 2)[2]
    assert not out.exists()
    # The refusal left nothing running: the next capture starts.
    r = netlab.ctl("capture", "lan0", "-w", str(out), "-t", "0.5", "icmp")
    assert out.exists() and "0 packets captured" in r.stderr


def test_live_stream_into_tcpdump(netlab: NetLab) -> None:
    """routerctl capture ... -w - | tcpdump -r -: tcpdump prints each ping
    while the capture still runs (no end of file needed)."""
    pipeline = (f"{sys.executable} -m router.ctl -S {netlab.socket} capture wan0 -w - "
                f"-t 0 icmp | tcpdump -n -l -r -")
    p = subprocess.Popen(["sh", "-c", pipeline], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    try:
        wait_for_log(netlab, "capture.started")
        pinger = netlab.spawn(netlab.lan, "ping", "-c", "20", "-i", "0.2", SERVER)
        assert p.stdout is not None
        seen = [p.stdout.readline() for _ in range(4)]
        if not all(seen):
            p.kill()
            raise AssertionError(f"the pipeline ended: {p.communicate()}")
        assert pinger.poll() is None, "tcpdump printed only after the pings ended"
        assert all(f"IP {ROUTER_WAN} > {SERVER}: ICMP echo request" in x or
                   f"IP {SERVER} > {ROUTER_WAN}: ICMP echo reply" in x for x in seen), seen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)   # the pipeline this test started
        p.wait(timeout=10)
    # The router saw the reader go and stopped capturing.
    wait_for_log(netlab, "capture.stopped")
    time.sleep(0.1)
    assert netlab.ctl_json("status")["pid"] > 0
