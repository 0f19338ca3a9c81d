"""atheris harness over what LAN hosts send the port mapping services.

    python tests/fuzz/fuzz_portmap.py udp   [libFuzzer flags] [corpus dirs]
    python tests/fuzz/fuzz_portmap.py soap  ...
    python tests/fuzz/fuzz_portmap.py ssdp  ...
    python tests/fuzz/fuzz_portmap.py state ...

udp: any datagram to port 5351 (PCP or NAT-PMP, by its first byte) from a
LAN address gets no answer or a well-formed one (PCP: version 2, the
response bit, at most 1100 bytes, a multiple of 4; NAT-PMP: version 0, an
opcode of 128 or more), never an exception; every mapping made is of the
asking host's own address, within the configured ports and lifetimes.
Against a real data plane, which takes every table the requests make.

soap: any body of a SOAP action to the UPnP device (the library parses it
with defusedxml; the actions are router/portmap/upnp.py's) gets a response
or aiohttp's 400, never another exception, with the same invariants.  The
HTTP request is a stand-in with the headers, body and remote address: the
harness fuzzes the parsing and the actions, not aiohttp's HTTP parser.

ssdp: any datagram to port 1900 is decoded by the library and, if it is an
M-SEARCH, answered by the device's search responder without an exception.

state: any body of a port mapping state file, signed with the right key so
that parsing is reached, gives a checked table or a StateError.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import struct
import sys
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address
from typing import Any

import atheris

with atheris.instrument_imports():
    from aiohttp.web import HTTPBadRequest
    from async_upnp_client.server import SsdpSearchResponder

    from router.config import parse
    from router.config.model import Portmap
    from router.datapath import Datapath
    from router.portmap import natpmp_wire, pcp_wire, store, upnp
    from router.portmap.natpmp import NatPmpServer
    from router.portmap.pcp import PcpServer
    from router.portmap.server import LanLink, PortServer
    from router.portmap.table import Ask, Table
    from router.state import StateError
    from router.tables import compile_tables

LANS = [IPv4Network("192.168.1.0/24"), IPv6Network("2001:db8:1::/64")]
CFG = Portmap(pcp=True, natpmp=True, upnp=True, interface="wan0", min_lifetime=2,
              max_lifetime=3600)
HOSTS = ["192.168.1.2", "192.168.1.3", "2001:db8:1::2", "10.0.0.1"]
LAB = """
[[interface]]
name = "lan0"
address = "192.168.1.1/24"
address6 = "2001:db8:1::1/64"
zone = "lan"

[[interface]]
name = "wan0"
address = "203.0.113.1/24"
zone = "wan"

[[nat.masquerade]]
interface = "wan0"
"""
_dp = Datapath(1024, batch=8)
_dp.load(compile_tables(parse(LAB.encode(), "lab.toml"), {}))
NOW = 1_000_000
_table = Table(lambda: CFG, lambda: LANS, lambda: 1, _dp, lambda: NOW,
               lambda what, fields: None)
_pcp = PcpServer(_table, lambda: CFG, lambda: IPv4Address("203.0.113.1"), lambda: 7)
_natpmp = NatPmpServer(_table, lambda: IPv4Address("203.0.113.1"), lambda: 7)
_server = PortServer(_pcp, _natpmp, lambda: LANS, type("Log", (), {
    "error": staticmethod(lambda *a, **k: None)})())


def check_table() -> None:
    for m in _table.maps.values():
        assert m.int_addr == m.client, m  # third_party is off
        assert any(m.int_addr in n for n in LANS), m
        assert m.left(_table.clock()) <= CFG.max_lifetime, m
        if m.int_addr.version == 4:
            assert m.ext_port >= 1024, m  # low_ports is off
    if len(_table.maps) > 200:
        _table.clear("fuzz")


def fuzz_udp(data: bytes) -> None:
    """Byte 0: the sender (HOSTS); the rest: the datagram."""
    if not data:
        return
    host, msg = HOSTS[data[0] % len(HOSTS)], data[1:]
    _server._buckets.clear()
    answer = _server.answer(msg, host)
    if answer is None:
        return
    assert isinstance(answer, bytes)
    if msg[0] == natpmp_wire.VERSION:
        assert answer[0] == 0 and answer[1] >= 128, answer
    else:
        assert answer[0] == pcp_wire.VERSION and answer[1] & 0x80, answer
        assert len(answer) <= pcp_wire.MAX_MESSAGE + 24 and len(answer) % 4 == 0, answer
    assert _server.counts["errors"] == 0, "a request raised"
    check_table()


class _Request:
    """What the library's SOAP handler reads of an aiohttp request."""

    def __init__(self, action: str, body: str, remote: str) -> None:
        self.headers = {"SOAPAction": f'"{action}"'}
        self._body = body
        self.remote = remote

    async def text(self) -> str:
        return self._body


_loop = asyncio.new_event_loop()
_gw = upnp.Gateway(_table, lambda: IPv4Address("203.0.113.1"),
                   [LanLink("lan-fuzz", IPv4Address("192.168.1.1"))], lambda: {})
_device = upnp.device_classes(_gw, "http://192.168.1.1:5000")(None, "http://192.168.1.1:5000")
_services = list(_device.all_services)


def fuzz_soap(data: bytes) -> None:
    """Bytes 0-2: the service, the action and the sender; the rest: the
    body (UTF-8, errors replaced)."""
    if len(data) < 3:
        return
    service = _services[data[0] % len(_services)]
    names = [*sorted(service.actions), "Nope"]
    action = names[data[1] % len(names)]
    host = HOSTS[data[2] % 3]
    body = data[3:].decode("utf-8", "replace")
    req = _Request(f"{service.service_type}#{action}", body, host)
    try:
        resp = _loop.run_until_complete(upnp._with_client(service, req))  # type: ignore[arg-type]
    except HTTPBadRequest:
        return  # not SOAP, or no such action or argument: 400
    assert resp.status in (200, 500), resp.status
    check_table()


_responder = SsdpSearchResponder(_device, source=("192.168.1.1", 0), loop=_loop)


def fuzz_ssdp(data: bytes) -> None:
    decoded = upnp.decode_search(data, None, ("192.168.1.2", 1900))  # never raises
    if decoded is not None and decoded[0] == "M-SEARCH * HTTP/1.1":
        for r in _responder._build_responses(decoded[1]):
            assert r.startswith(b"HTTP/1.1 200 OK"), r


KEY = b"k" * 32


def fuzz_state(data: bytes) -> None:
    body = data if data.endswith(b"\n") else data + b"\n"
    mac = hmac.new(KEY, body, hashlib.sha256).hexdigest()
    signed = body + b'{"mac":"' + mac.encode() + b'"}\n'
    try:
        saved = store.decode(signed, KEY)
    except StateError:
        return
    t = Table(lambda: CFG, lambda: LANS, lambda: 1, _dp, lambda: NOW,
              lambda what, fields: None)
    t.restore(saved.maps)
    for m in t.maps.values():
        assert any(m.int_addr in n for n in LANS) and m.int_addr == m.client, m
    _table.sync()  # the shared table's entries again


SOAP = ('<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
        ' s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        '<u:{action} xmlns:u="{st}">{args}</u:{action}></s:Body></s:Envelope>')


def seeds() -> dict[str, list[bytes]]:
    """Valid inputs of each target, to start from (the command ``seeds DIR``
    writes them, as in tests/fuzz/python_corpus/)."""
    me = ip_address("192.168.1.2")
    body = b"N" * 12 + struct.pack("!B3xHH", 17, 6000, 7000) + bytes(16)
    filt = struct.pack("!BxHxBH", 3, 20, 128, 0) + pcp_wire.mapped(ip_address("198.51.100.7"))
    udp = [b"\x00" + natpmp_wire.request(0), b"\x00" + natpmp_wire.request(1, 6000, 7000, 60),
           b"\x00" + pcp_wire.request(1, 600, me, body),
           b"\x00" + pcp_wire.request(1, 600, me, body + filt),
           b"\x02" + pcp_wire.request(1, 600, ip_address("2001:db8:1::2"), body)]
    ip = "urn:schemas-upnp-org:service:WANIPConnection:2"
    add = ("<NewRemoteHost></NewRemoteHost><NewExternalPort>7000</NewExternalPort>"
           "<NewProtocol>UDP</NewProtocol><NewInternalPort>6000</NewInternalPort>"
           "<NewInternalClient>192.168.1.2</NewInternalClient><NewEnabled>1</NewEnabled>"
           "<NewPortMappingDescription>x</NewPortMappingDescription>"
           "<NewLeaseDuration>60</NewLeaseDuration>")
    soap = []
    for si, svc in enumerate(_services):
        names = [*sorted(svc.actions), "Nope"]
        for ai, action in enumerate(names):
            args = add if action in ("AddPortMapping", "AddAnyPortMapping") else ""
            soap.append(bytes([si, ai, 0]) + SOAP.format(action=action, st=svc.service_type,
                                                         args=args).encode())
    assert ip in {svc.service_type for svc in _services}
    ssdp = [b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
            b"MX: 1\r\nST: " + st.encode() + b"\r\n\r\n"
            for st in ("ssdp:all", "upnp:rootdevice",
                       "urn:schemas-upnp-org:device:InternetGatewayDevice:1", ip)]
    m = _table.grant(Ask(via="pcp", client=me, proto=17, int_addr=me, int_port=6000,
                              lifetime=60, ext_port=7000))
    state = store.encode(1.0, [m], KEY).rsplit(b"\n", 2)[0] + b"\n"
    _table.clear("seeds")
    return {"pmudp": udp, "soap": soap, "ssdp": ssdp, "pmstate": [state]}


def write_seeds(root: str) -> None:
    for target, items in seeds().items():
        os.makedirs(os.path.join(root, target), exist_ok=True)
        for n, item in enumerate(items):
            with open(os.path.join(root, target, f"seed-{n}"), "wb") as f:
                f.write(item)


def main() -> None:
    target = sys.argv.pop(1) if len(sys.argv) > 1 else "udp"
    if target == "seeds":
        write_seeds(sys.argv[1])
        return
    fn: Any = {"udp": fuzz_udp, "soap": fuzz_soap, "ssdp": fuzz_ssdp,
               "state": fuzz_state}[target]
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(sys.argv, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
