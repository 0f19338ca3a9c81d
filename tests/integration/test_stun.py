"""NAT behaviour as a real RFC 5780 client reports it.

coturn's turnserver runs in the WAN namespace on two addresses (what RFC 5780
needs to tell mapping and filtering behaviours apart); its
turnutils_natdiscovery runs on the LAN host, through the router.  Each mode
of the config must be reported as what it is.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import SERVER, NetLab

pytestmark = pytest.mark.netns
SERVER2 = "203.0.113.11"


@pytest.fixture
def stun(netlab: NetLab) -> NetLab:
    netlab.ns(netlab.wan, "ip", "addr", "add", f"{SERVER2}/24", "dev", "wan0")
    # Spawned directly (ip netns exec execs it), so that the fixture's
    # teardown ends turnserver itself by its pid.
    p = netlab.spawn(netlab.wan, "turnserver", "-L", SERVER, "-L", SERVER2,
                     "--no-tls", "--no-dtls", "--stun-only", "--no-cli", "-c", "/dev/null",
                     "--log-file", "stdout", "--simple-log")
    assert p.stdout is not None
    for _ in range(200):
        line = p.stdout.readline()
        if "Total General servers" in line or not line:
            break
    return netlab


def discover(lab: NetLab, *flags: str) -> str:
    r = lab.ns(lab.lan, "timeout", "40", "turnutils_natdiscovery", *flags, SERVER, check=False)
    return r.stdout + r.stderr


def set_nat(lab: NetLab, mapping: str, filtering: str, preserve: bool = True) -> None:
    text = lab.config.read_text()
    text = re.sub(r"(?m)^preserve_ports = (true|false)",
                  f"preserve_ports = {str(preserve).lower()}", text)
    text = re.sub(r'(?m)^mapping = "[a-z-]+"', f'mapping = "{mapping}"', text)
    text = re.sub(r'(?m)^filtering = "[a-z-]+"', f'filtering = "{filtering}"', text)
    lab.config.write_text(text)
    lab.ctl("reload")


@pytest.mark.parametrize(("filtering", "report"), [
    ("endpoint-independent", "NAT with Endpoint Independent Filtering!"),
    ("address-dependent", "NAT with Address Dependent Filtering!"),
    ("address-and-port-dependent", "NAT with Address and Port Dependent Filtering!"),
])
def test_filtering_behaviour(stun: NetLab, filtering: str, report: str) -> None:
    set_nat(stun, "endpoint-independent", filtering)
    out = discover(stun, "-m", "-f")
    assert "NAT with Endpoint Independent Mapping!" in out, out
    assert report in out, out


def test_address_and_port_dependent_mapping(stun: NetLab) -> None:
    # With port preservation a per-connection mapping keeps the same port for
    # every destination while it is free, which a STUN client cannot tell from
    # endpoint-independent mapping; without it, every destination gets its own.
    set_nat(stun, "address-and-port-dependent", "address-and-port-dependent", preserve=False)
    out = discover(stun, "-m")
    assert "NAT with Address and Port Dependent Mapping!" in out, out


def test_hairpinning(stun: NetLab) -> None:
    set_nat(stun, "endpoint-independent", "endpoint-independent")
    out = discover(stun, "-H")
    assert "Received a request (maybe a successful hairpinning)" in out, out
