"""The port mapping table and the PCP and NAT-PMP servers, against a real
data plane (the native lab): who may map what, which port a mapping gets,
limits, lifetimes, deletes, the state file, and the bytes of each answer."""

from __future__ import annotations

import struct
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any

import pytest
import toml

from router.config import parse, to_dict
from router.config.model import Portmap, PortmapRule
from router.portmap import natpmp_wire, pcp_wire, store
from router.portmap.natpmp import NatPmpServer
from router.portmap.pcp import PcpServer
from router.portmap.table import Ask, Refused, Table
from router.state import StateError
from tests.helpers import POOL, SERVICES_LAN, TWO_LINKS, refused
from tests.native.conftest import LAN, LAN_HOST, LAN_HOST2, ROUTER_WAN, WAN, make_lab
from tests.packets import IP, UDP

HOST6 = ip_address("2001:db8:1::2")
LANS = [IPv4Network("192.168.1.0/24"), IPv6Network("2001:db8:1::/64")]
ON = Portmap(pcp=True, natpmp=True, interface="wan0")


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def make(cfg: Portmap = ON, extra: str = "") -> tuple[Any, Table, list[tuple[str, dict[str, Any]]],
                                                      Clock]:
    lab = make_lab(extra)
    seen: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    holder = {"cfg": cfg}
    t = Table(lambda: holder["cfg"], lambda: LANS, lambda: WAN, lab.dp, lambda: lab.now,
              lambda what, f: seen.append((what, f)), clock=clock)
    t.holder = holder  # type: ignore[attr-defined]
    return lab, t, seen, clock


def ask(port: int = 6000, host: str = LAN_HOST, client: str | None = None, **kw: Any) -> Ask:
    a = ip_address(host)
    return Ask(via=kw.pop("via", "pcp"), client=ip_address(client or host),
               proto=kw.pop("proto", 17), int_addr=a, int_port=kw.pop("int_port", port),
               lifetime=kw.pop("lifetime", 600), ext_port=port, **kw)


def test_grant_reaches_the_data_plane_and_expires() -> None:
    lab, t, seen, clock = make()
    m = t.grant(ask(7000, int_port=6000))
    assert m.ext_port == 7000 and m.left(clock()) == 600
    r = lab.send(WAN, bytes(IP(src="198.51.100.7", dst=ROUTER_WAN) / UDP(sport=1, dport=7000)))
    assert r.out_iface == LAN and IP(r.data).dst == LAN_HOST
    assert seen[-1][0] == "granted" and seen[-1][1]["external_port"] == 7000
    clock.t += 601
    assert t.expire() == 1 and not t.maps
    r = lab.send(WAN, bytes(IP(src="198.51.100.8", dst=ROUTER_WAN) / UDP(sport=1, dport=7000)))
    assert r.out_iface != LAN
    assert seen[-1][0] == "expired"


def test_a_host_maps_only_itself_unless_third_party_is_on() -> None:
    _, t, seen, _ = make()
    with pytest.raises(Refused, match="maps only its own address") as e:
        t.grant(ask(7001, host=LAN_HOST2, client=LAN_HOST))
    assert e.value.code == "not_authorized" and seen[-1][0] == "refused"
    t.holder["cfg"] = replace(ON, third_party=True)  # type: ignore[attr-defined]
    assert t.grant(ask(7001, host=LAN_HOST2, client=LAN_HOST)).int_addr == IPv4Address(LAN_HOST2)
    with pytest.raises(Refused, match="no LAN link"):
        t.grant(ask(7002, host="10.9.9.9"))


def test_low_ports_and_rules() -> None:
    _, t, _, _ = make()
    with pytest.raises(Refused, match="below 1024"):
        t.grant(ask(80, int_port=8080, exact=True))
    m = t.grant(ask(80, int_port=8080))  # not exact: another port
    assert m.ext_port >= 1024
    rules = (PortmapRule(allow=False, ports=(6881, 6889)),
             PortmapRule(allow=True, ports=(1024, 65535), hosts=IPv4Network("192.168.1.2/32"),
                         host_ports=(1024, 65535)))
    t.holder["cfg"] = replace(ON, rules=rules)  # type: ignore[attr-defined]
    with pytest.raises(Refused, match="deny rule"):
        t.grant(ask(6881, exact=True))
    with pytest.raises(Refused, match=r"no portmap\.rule"):
        t.grant(ask(7000, host=LAN_HOST2))
    assert t.drop_refused() == 0  # the first mapping still passes the new rules
    t.holder["cfg"] = replace(ON, rules=rules[:1])  # type: ignore[attr-defined]
    assert t.drop_refused() == 1 and not t.maps


def test_ports_held_elsewhere_are_never_given() -> None:
    lab, t, _, _ = make(extra='\n[[nat.forward]]\ninterface = "wan0"\nprotocol = "udp"\n'
                              'port = 7100\nto = "192.168.1.3"\n')
    with pytest.raises(Refused, match="port forward") as e:
        t.grant(ask(7100, exact=True))
    assert e.value.code == "conflict"
    assert t.grant(ask(7100)).ext_port != 7100
    t.grant(ask(7200, int_port=6001))
    with pytest.raises(Refused, match="mapped to"):
        t.grant(ask(7200, host=LAN_HOST2, exact=True))
    # A live outbound mapping of another host holds its port too.
    r = lab.send(LAN, bytes(IP(src=LAN_HOST2, dst="198.51.100.9") / UDP(sport=7300, dport=9)))
    held = IP(r.data)[UDP].sport
    with pytest.raises(Refused, match="another host"):
        t.grant(ask(held, int_port=6002, exact=True))


def test_an_endpoint_with_an_outbound_mapping_keeps_its_port() -> None:
    """MAP semantics: the mapping of an endpoint that already talks is the
    one it has."""
    lab, t, _, _ = make()
    r = lab.send(LAN, bytes(IP(src=LAN_HOST, dst="198.51.100.9") / UDP(sport=6500, dport=9)))
    port = IP(r.data)[UDP].sport
    assert t.grant(ask(40000, int_port=6500)).ext_port == port
    # UPnP's exact port, when it is not the one the endpoint has: refused.
    with pytest.raises(Refused, match="is mapped to"):
        t.grant(ask(port, int_port=6501, exact=True))


def test_limits() -> None:
    _, t, _, _ = make(replace(ON, per_host=2, total=3))
    t.grant(ask(7001, int_port=1101))
    t.grant(ask(7002, int_port=1102))
    with pytest.raises(Refused, match="per_host") as e:
        t.grant(ask(7003, int_port=1103))
    assert e.value.code == "over_quota"
    t.grant(ask(7004, host=LAN_HOST2, int_port=1104))
    with pytest.raises(Refused, match="total"):
        t.grant(ask(7005, host=LAN_HOST2, int_port=1105))
    t.grant(ask(7001, int_port=1101, lifetime=10 ** 9))  # renewing is no new mapping
    assert t.maps[(4, 17, ip_address(LAN_HOST), 1101)].left(t.clock()) == ON.max_lifetime


def test_delete_only_by_its_host() -> None:
    _, t, _, _ = make()
    m = t.grant(ask(7001))
    with pytest.raises(Refused, match="may not delete"):
        t.delete(m.key, "test", by=ip_address(LAN_HOST2))
    t.delete(m.key, "test", by=ip_address(LAN_HOST))
    assert not t.maps


def test_ipv6_pinhole() -> None:
    _, t, _, _ = make()
    m = t.grant(ask(8443, host=str(HOST6), proto=6))
    assert m.ext_port == 8443 and m.int_addr == HOST6


def test_state_file_round_trip_and_refusals() -> None:
    _, t, _, clock = make()
    t.grant(ask(7001, nonce=b"n" * 12, description="game",
                filters=((IPv4Network("198.51.100.0/24"), 0),)))
    key = b"k" * 32
    data = store.encode(123.0, list(t.maps.values()), key)
    saved = store.decode(data, key)
    assert saved.epoch_base == 123.0 and saved.maps[0].description == "game"
    _, t2, _, clock2 = make()
    clock2.t = clock.t + 100
    assert t2.restore(saved.maps) == {"restored": 1, "expired": 0, "refused": 0}
    (m,) = t2.maps.values()
    assert m.ext_port == 7001 and m.left(clock2()) == 500
    with pytest.raises(StateError, match="authentication"):
        store.decode(data, b"x" * 32)
    forged = data.replace(b'"external_port":7001', b'"external_port":80')
    with pytest.raises(StateError, match="authentication"):
        store.decode(forged, key)
    # A well-signed entry the config refuses now is not restored.
    low = store.encode(1.0, [replace(m, ext_port=80)], key)
    _, t3, _, _ = make()
    assert t3.restore(store.decode(low, key).maps)["refused"] == 1


# ---- PCP -------------------------------------------------------------------


def pcp(table: Table) -> PcpServer:
    return PcpServer(table, lambda: table.holder["cfg"],  # type: ignore[attr-defined]
                     lambda: IPv4Address(ROUTER_WAN), lambda: 42)


def map_req(port: int, lifetime: int = 600, client: str = LAN_HOST, proto: int = 17,
            ext: int = 0, opts: bytes = b"", nonce: bytes = b"N" * 12, op: int = 1) -> bytes:
    body = nonce + struct.pack("!B3xHH", proto, port, ext) + bytes(16)
    if op == 2:
        body += struct.pack("!H2x", 5555) + pcp_wire.mapped(ip_address("198.51.100.7"))
    return pcp_wire.request(op, lifetime, ip_address(client), body + opts)


def parse_answer(data: bytes) -> dict[str, Any]:
    ver, op, _, result, life, epoch = struct.unpack_from("!BBBBII", data)
    out = {"version": ver, "opcode": op, "result": result, "lifetime": life, "epoch": epoch}
    if len(data) >= 60:
        out["ext_port"] = struct.unpack_from("!H", data, 42)[0]
        out["ext_addr"] = pcp_wire.unmap(data[44:60])
    return out


def test_pcp_map_and_delete() -> None:
    _, t, _, _ = make()
    a = parse_answer(pcp(t).handle(map_req(6000, ext=7000), ip_address(LAN_HOST)) or b"")
    assert a == {"version": 2, "opcode": 0x81, "result": 0, "lifetime": 600, "epoch": 42,
                 "ext_port": 7000, "ext_addr": IPv4Address(ROUTER_WAN)}
    # Another nonce may not touch it; its own may delete it.
    a = parse_answer(pcp(t).handle(map_req(6000, 0, nonce=b"X" * 12), ip_address(LAN_HOST))
                     or b"")
    assert a["result"] == pcp_wire.NOT_AUTHORIZED and t.maps
    a = parse_answer(pcp(t).handle(map_req(6000, 0), ip_address(LAN_HOST)) or b"")
    assert a["result"] == 0 and a["lifetime"] == 0 and not t.maps


def test_pcp_lifetimes_are_clamped() -> None:
    _, t, _, _ = make()
    a = parse_answer(pcp(t).handle(map_req(6000, lifetime=5), ip_address(LAN_HOST)) or b"")
    assert a["lifetime"] == ON.min_lifetime
    a = parse_answer(pcp(t).handle(map_req(6001, lifetime=10 ** 8), ip_address(LAN_HOST))
                     or b"")
    assert a["lifetime"] == ON.max_lifetime


def test_pcp_errors() -> None:
    _, t, _, _ = make()
    h = pcp(t).handle
    src = ip_address(LAN_HOST)
    assert parse_answer(h(map_req(6000, client=LAN_HOST2), src) or b"")["result"] == \
        pcp_wire.ADDRESS_MISMATCH
    assert parse_answer(h(map_req(6000, proto=1), src) or b"")["result"] == \
        pcp_wire.UNSUPP_PROTOCOL
    assert parse_answer(h(map_req(0), src) or b"")["result"] == pcp_wire.MALFORMED_REQUEST
    assert parse_answer(h(map_req(6000)[:-4], src) or b"")["result"] == \
        pcp_wire.MALFORMED_REQUEST
    unknown = struct.pack("!BxH", 99, 0)
    assert parse_answer(h(map_req(6000, opts=unknown), src) or b"")["result"] == \
        pcp_wire.UNSUPP_OPTION
    optional = struct.pack("!BxH", 200, 0)
    assert parse_answer(h(map_req(6000, opts=optional), src) or b"")["result"] == 0
    third = struct.pack("!BxH", 1, 16) + pcp_wire.mapped(ip_address(LAN_HOST2))
    assert parse_answer(h(map_req(6001, opts=third), src) or b"")["result"] == \
        pcp_wire.NOT_AUTHORIZED
    v1 = bytes([1]) + map_req(6000)[1:]
    a = parse_answer(h(v1, src) or b"")
    assert a["result"] == pcp_wire.UNSUPP_VERSION and a["version"] == 2
    assert h(bytes([2, 0x81]) + bytes(22), src) is None  # a response: never answered


def test_pcp_prefer_failure_and_filter() -> None:
    lab, t, _, _ = make()
    h = pcp(t).handle
    src = ip_address(LAN_HOST)
    t.grant(ask(7000, host=LAN_HOST2))
    prefer = struct.pack("!BxH", 2, 0)
    a = parse_answer(h(map_req(6000, ext=7000, opts=prefer), src) or b"")
    assert a["result"] == pcp_wire.CANNOT_PROVIDE_EXTERNAL
    filt = struct.pack("!BxHxBH", 3, 20, 128, 0) + pcp_wire.mapped(ip_address("198.51.100.7"))
    a = parse_answer(h(map_req(6000, ext=7001, opts=filt), src) or b"")
    assert a["result"] == 0 and a["ext_port"] == 7001
    assert len(h(map_req(6000, ext=7001, opts=filt), src) or b"") == 24 + 36 + 24  # echoed
    ok = lab.send(WAN, bytes(IP(src="198.51.100.7", dst=ROUTER_WAN) / UDP(sport=1, dport=7001)))
    no = lab.send(WAN, bytes(IP(src="198.51.100.8", dst=ROUTER_WAN) / UDP(sport=1, dport=7001)))
    assert ok.out_iface == LAN and no.out_iface != LAN


def test_pcp_peer_is_a_filtered_mapping() -> None:
    _, t, _, _ = make()
    a = parse_answer(pcp(t).handle(map_req(6000, op=2), ip_address(LAN_HOST)) or b"")
    assert a["result"] == 0 and a["opcode"] == 0x82
    (m,) = t.maps.values()
    assert m.peer and m.filters == ((IPv4Network("198.51.100.7/32"), 5555),)


# ---- NAT-PMP ---------------------------------------------------------------


def test_natpmp_address_map_delete() -> None:
    _, t, _, _ = make()
    s = NatPmpServer(t, lambda: IPv4Address(ROUTER_WAN), lambda: 42)
    src = ip_address(LAN_HOST)
    assert s.handle(natpmp_wire.request(0), src) == \
        bytes([0, 128, 0, 0, 0, 0, 0, 42]) + IPv4Address(ROUTER_WAN).packed
    a = s.handle(natpmp_wire.request(1, 6000, 7000, 3600), src) or b""
    assert struct.unpack("!BBHIHHI", a) == (0, 129, 0, 42, 6000, 7000, 3600)
    a = s.handle(natpmp_wire.request(2, 6000, 0, 0), src) or b""
    assert struct.unpack("!BBHIHHI", a)[2] == 0  # deleting what is not there: success
    a = s.handle(natpmp_wire.request(1, 0, 0, 0), src) or b""
    assert struct.unpack("!BBHIHHI", a)[2] == 0 and not t.maps  # all of its UDP ones
    assert s.handle(bytes([0, 9]), src) == bytes([0, 137, 0, 5, 0, 0, 0, 42])
    assert s.handle(bytes([0, 130]), src) is None
    assert s.handle(natpmp_wire.request(1, 6000, 7000, 60), HOST6) is None


# ---- the config ------------------------------------------------------------

HOME = SERVICES_LAN + POOL + """
[[interface]]
name = "wan0"
address = "203.0.113.1/24"
zone = "wan"
"""


def test_port_mapping_is_off_by_default() -> None:
    cfg = parse(HOME.encode(), "home.toml")
    assert not cfg.portmap.enabled
    assert not (cfg.portmap.pcp or cfg.portmap.natpmp or cfg.portmap.upnp)


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ("[portmap]\npcp = true\n", "portmap.interface", "is required"),
    ('[portmap]\npcp = true\ninterface = "lan0"\n', "portmap.interface", "LAN link"),
    ('[portmap]\npcp = true\ninterface = "nope"\n', "portmap.interface", "no interface"),
    ('[portmap]\nupnp = true\ninterface = "wan0"\nmin_lifetime = 900\nmax_lifetime = 600\n',
     "portmap.min_lifetime", "more than max_lifetime"),
    ('[portmap]\nnatpmp = true\ninterface = "wan0"\nper_host = 20\ntotal = 10\n',
     "portmap.per_host", "more than total"),
    ('[portmap]\nupnp_port = 80\n', "portmap.upnp_port", "between 1024"),
    ('[[portmap.rule]]\nports = "1-2"\n', "portmap.rule[0].action", "is required"),
    ('[[portmap.rule]]\naction = "allow"\nhosts = "10.0.0.1/8"\n', "portmap.rule[0].hosts",
     "not a network"),
    ('[[portmap.rule]]\naction = "allow"\nports = "9-3"\n', "portmap.rule[0].ports",
     "ascending"),
])
def test_bad_port_mapping_settings_are_refused(extra: str, key: str, reason: str) -> None:
    e = refused(HOME + extra)
    assert e.key == key and reason in e.reason, e


def test_port_mapping_needs_a_lan_link() -> None:
    e = refused(TWO_LINKS + '[portmap]\npcp = true\ninterface = "wan0"\n')
    assert e.key == "portmap" and "[interface.lan]" in e.reason


def test_rules_parse_and_show_round_trips() -> None:
    text = HOME + ('[portmap]\nupnp = true\ninterface = "wan0"\n\n[[portmap.rule]]\n'
                   'action = "deny"\nports = 6881\n\n[[portmap.rule]]\naction = "allow"\n'
                   'hosts = "2001:db8:1::/64"\nhost_ports = "1024-2048"\n')
    cfg = parse(text.encode(), "home.toml")
    deny, allow = cfg.portmap.rules
    assert not deny.allow and deny.ports == (6881, 6881) and deny.hosts == IPv4Network("0.0.0.0/0")
    assert allow.allow and allow.hosts == IPv6Network("2001:db8:1::/64")
    assert allow.host_ports == (1024, 2048) and allow.ports == (1, 65535)
    again = parse(toml.dumps(to_dict(cfg)).encode(), "again.toml")
    assert again.portmap == cfg.portmap


# ---- the UPnP device: what the fuzzer found --------------------------------


def test_soap_arguments_that_do_not_parse_get_invalid_args() -> None:
    import asyncio

    from router.portmap import upnp
    from router.portmap.server import LanLink

    _, t, _, _ = make(replace(ON, upnp=True))
    gw = upnp.Gateway(t, lambda: IPv4Address(ROUTER_WAN),
                      [LanLink("eth1", IPv4Address("192.168.1.1"))], lambda: {})
    device = upnp.device_classes(gw, "http://192.168.1.1:5000")(None, "http://x")
    (svc,) = [s for s in device.all_services if "WANIPConnection" in s.service_type]

    class Req:
        remote = LAN_HOST

        def __init__(self, args: str) -> None:
            self.headers = {"SOAPAction": f'"{svc.service_type}#AddPortMapping"'}
            self.body = (f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
                         f'<s:Body><u:AddPortMapping xmlns:u="{svc.service_type}">{args}'
                         f'</u:AddPortMapping></s:Body></s:Envelope>')

        async def text(self) -> str:
            return self.body

    def call(args: str) -> Any:
        return asyncio.run(upnp._with_client(svc, Req(args)))  # type: ignore[arg-type]

    for args in ("<NewExternalPort>70x0</NewExternalPort>", "<NewProtocol>UDP</NewProtocol>"):
        r = call(args)
        assert r.status == 500 and b"<errorCode>402</errorCode>" in r.body, r.body
    good = ("<NewRemoteHost></NewRemoteHost><NewExternalPort>7000</NewExternalPort>"
            "<NewProtocol>UDP</NewProtocol><NewInternalPort>6000</NewInternalPort>"
            f"<NewInternalClient>{LAN_HOST}</NewInternalClient><NewEnabled>1</NewEnabled>"
            "<NewPortMappingDescription>x</NewPortMappingDescription>"
            "<NewLeaseDuration>0</NewLeaseDuration>")
    assert call(good).status == 200
    (m,) = t.maps.values()
    assert m.via == "upnp" and m.left(t.clock()) == ON.max_lifetime  # 0: the cap
    other = good.replace(f">{LAN_HOST}<", f">{LAN_HOST2}<").replace(">7000<", ">7001<")
    assert b"<errorCode>606</errorCode>" in call(other).body
    # A port past 16 bits (the fuzzer's: it reached the data plane's uint16
    # and raised OverflowError): Argument Value Out of Range, nothing mapped.
    for big in (good.replace(">7000<", ">70300<"), good.replace(">6000<", ">65536<")):
        r = call(big)
        assert r.status == 500 and b"<errorCode>601</errorCode>" in r.body, r.body
    assert len(t.maps) == 1


def test_undecodable_ssdp_datagrams_are_dropped() -> None:
    from router.portmap import upnp

    dup = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nHOST: x\r\n'
           b'MAN: "ssdp:discover"\r\nST: ssdp:all\r\n\r\n')
    assert upnp.decode_search(dup, None, ("192.168.1.2", 1900)) is None
    ok = upnp.decode_search(dup.replace(b"HOST: x\r\n", b""), None, ("192.168.1.2", 1900))
    assert ok is not None and ok[0] == "M-SEARCH * HTTP/1.1"


def test_router_check_warns_of_a_service_the_input_chain_drops() -> None:
    from router.config import warnings

    text = HOME + '[portmap]\npcp = true\nupnp = true\ninterface = "wan0"\n' \
        '[firewall]\ninput = "drop"\n'
    found = [w for w in warnings(parse(text.encode(), "home.toml")) if w.startswith("portmap")]
    assert [w.split(":")[0] for w in found] == ["portmap.pcp/natpmp", "portmap.upnp"]
    rules = ('\n[[firewall.rule]]\nchain = "input"\nfrom = "lan"\nprotocol = "udp"\n'
             'port = 5351\naction = "accept"\n')
    found = [w for w in warnings(parse((text + rules).encode(), "home.toml"))
             if w.startswith("portmap")]
    assert [w.split(":")[0] for w in found] == ["portmap.upnp"]
    home = (Path(__file__).parents[2] / "conf" / "home.toml").read_text()
    assert not [w for w in warnings(parse(home.encode(), "home.toml")) if "portmap" in w]


# ---- UDP 5351: who is answered -----------------------------------------------


def test_the_server_drops_off_lan_flooding_and_oversized_requests() -> None:
    from router.portmap.server import BURST, PortServer

    _, t, _, _ = make()
    nat = NatPmpServer(t, lambda: IPv4Address(ROUTER_WAN), lambda: 42)
    errors: list[str] = []

    class Log:
        def error(self, event: str, **fields: Any) -> None:
            errors.append(event)

    srv = PortServer(pcp(t), nat, lambda: LANS, Log())
    ask_address = natpmp_wire.request(0)
    assert srv.answer(ask_address, "203.0.113.9") is None  # the WAN, or anywhere off the LAN
    assert srv.answer(ask_address, "127.0.0.1") is None
    assert srv.counts["off_lan"] == 2
    answered = sum(srv.answer(ask_address, LAN_HOST) is not None for _ in range(int(BURST) + 20))
    assert answered < BURST + 5 and srv.counts["rate_limited"] >= 15  # a flood is cut off
    assert srv.answer(ask_address, LAN_HOST2) is not None  # ... and only its own
    assert srv.answer(b"\x00" * 2000, LAN_HOST2) is None  # larger than any request
    assert srv.answer(b"", LAN_HOST2) is None
    assert srv.answer(map_req(6000), f"{HOST6}%eth1") is not None  # a scoped IPv6 source
    assert srv.counts["errors"] == 0 and errors == []


def test_an_igd_whose_port_is_taken_raises_and_leaves_nothing_open() -> None:
    import asyncio
    import socket

    from router.portmap import upnp
    from router.portmap.server import LanLink

    _, t, _, _ = make(replace(ON, upnp=True))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    class Log:
        def info(self, *a: Any, **k: Any) -> None:
            pass

    async def start() -> None:
        igd = upnp.Igd(t, [LanLink("lo", IPv4Address("127.0.0.1"))], port,
                       lambda: IPv4Address(ROUTER_WAN), lambda: {}, Log(), ())
        with pytest.raises(OSError):
            await igd.start()
        await igd.stop()

    try:
        asyncio.run(start())
    finally:
        taken.close()
