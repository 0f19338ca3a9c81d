"""The UPnP Internet Gateway Device: SSDP discovery, the device and service
descriptions, and the SOAP actions clients use, on each LAN link's address.

async-upnp-client does the protocol (its device server: SSDP responder and
announcer, descriptions, SOAP parsing with defusedxml, UPnP errors, on
aiohttp); this module declares the devices and answers the actions from the
mapping table (``table.py``), which decides everything.  It is imported only
when ``portmap.upnp`` is on.

No ``from __future__ import annotations`` here: the library reads the
action methods' annotations as types.
"""

import contextlib
import contextvars
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from types import MappingProxyType
from typing import Any, cast

import voluptuous as vol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import Application, AppRunner, Request, Response, TCPSite
from async_upnp_client.const import DeviceInfo, ServiceInfo
from async_upnp_client.exceptions import UpnpActionError, UpnpError
from async_upnp_client.server import (
    SsdpAdvertisementAnnouncer,
    SsdpSearchResponder,
    UpnpServer,
    UpnpServerDevice,
    UpnpServerService,
    _create_error_action_response,
    action_handler,
    callable_action,
    create_state_var,
    to_xml,
)
from async_upnp_client.ssdp import (
    SsdpProtocol,
    decode_ssdp_packet,
    get_ssdp_socket,
    is_valid_ssdp_packet,
)

from router import __version__
from router.portmap import neighbours
from router.portmap.server import LanLink
from router.portmap.table import CONFLICT, NOT_FOUND, Ask, Mapping, Refused, Table

# The control point's address, set for each SOAP request (the library hands
# actions their arguments only).
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("upnp_client")
MAX_DESCRIPTION = 256
HTTP_KEEPALIVE = 15.0  # seconds
PROTOCOLS = {"TCP": 6, "UDP": 17}
PROTO_NAME = {6: "TCP", 17: "UDP"}

# UPnP IGD error codes (WANIPConnection:2 and WANIPv6FirewallControl:1).
INVALID_ARGS = 402
ARG_OUT_OF_RANGE = 601
ACTION_FAILED = 501
NOT_AUTHORIZED = 606
ARRAY_INDEX_INVALID = 713
NO_SUCH_ENTRY = 714
WILDCARD_EXT_PORT = 716
CONFLICT_IN_MAPPING = 718
NO_PORT_MAPS = 728
PINHOLE_SPACE_EXHAUSTED = 701
NO_SUCH_PINHOLE = 704
PROTOCOL_NOT_SUPPORTED = 705


def _error(code: int, message: str) -> UpnpActionError:
    return UpnpActionError(error_code=code, error_desc=message)


def _refusal(r: Refused) -> UpnpActionError:
    code = {CONFLICT: CONFLICT_IN_MAPPING, NOT_FOUND: NO_SUCH_ENTRY}.get(
        r.code, NO_PORT_MAPS if r.code in ("no_resources", "over_quota") else NOT_AUTHORIZED)
    return _error(code, r.reason)


def _client() -> IPv4Address | IPv6Address:
    return ip_address(CLIENT.get().split("%", 1)[0])


def _text(s: str) -> str:
    """A description as kept: printable, bounded."""
    return "".join(c for c in s if c.isprintable())[:MAX_DESCRIPTION]


def _service(sid: str, kind: str, path: str, scpd: str) -> ServiceInfo:
    """A service's identity and its URLs on the device's HTTP server."""
    return ServiceInfo(service_id=f"urn:upnp-org:serviceId:{sid}",
                       service_type=f"urn:schemas-upnp-org:service:{kind}",
                       control_url=f"/ctl/{path}", event_sub_url=f"/evt/{path}",
                       scpd_url=f"/{scpd}.xml", xml=ET.Element("server_service"))


class Gateway:
    """What the services answer from: the table, the external address, the
    LAN links (for pinholes: who is who on the link)."""

    def __init__(self, table: Table, external: Callable[[], IPv4Address | None],
                 links: Sequence[LanLink], counters: Callable[[], dict[str, int]]) -> None:
        self.table = table
        self.external = external
        self.counters = counters  # the external interface's
        self.links = links
        self.pinholes: dict[int, tuple[int, int, Any, int]] = {}  # UniqueID -> table key
        self._next_id = 1

    def v4_mappings(self) -> list[Mapping]:
        return sorted((m for m in self.table.maps.values() if m.int_addr.version == 4),
                      key=lambda m: (m.proto, m.ext_port))

    def new_pinhole_id(self, key: tuple[int, int, Any, int]) -> int:
        for uid, k in self.pinholes.items():
            if k == key:
                return uid
        for _ in range(65535):
            uid, self._next_id = self._next_id, self._next_id % 65535 + 1
            if uid not in self.pinholes or self.pinholes[uid] not in self.table.maps:
                self.pinholes[uid] = key
                return uid
        raise _error(PINHOLE_SPACE_EXHAUSTED, "no pinhole identifier left")


class WanIpConnection(UpnpServerService):
    """WANIPConnection:2, which answers version 1 clients as well."""

    gw: Gateway
    SERVICE_DEFINITION = _service("WANIPConn1", "WANIPConnection:2", "IPConn", "WANIPCn")
    STATE_VARIABLE_DEFINITIONS = MappingProxyType({
        "ConnectionType": create_state_var("string", default="IP_Routed"),
        "PossibleConnectionTypes": create_state_var("string", default="IP_Routed"),
        "ConnectionStatus": create_state_var("string", default="Connected"),
        "Uptime": create_state_var("ui4", default="0"),
        "LastConnectionError": create_state_var("string", default="ERROR_NONE"),
        "ExternalIPAddress": create_state_var("string"),
        "RemoteHost": create_state_var("string"),
        "ExternalPort": create_state_var("ui2"),
        "InternalPort": create_state_var("ui2"),
        "PortMappingProtocol": create_state_var("string", allowed=["TCP", "UDP"]),
        "InternalClient": create_state_var("string"),
        "PortMappingDescription": create_state_var("string"),
        "PortMappingEnabled": create_state_var("boolean"),
        "PortMappingLeaseDuration": create_state_var("ui4"),
        "PortMappingNumberOfEntries": create_state_var("ui2"),
        "A_ARG_TYPE_PortListing": create_state_var("string"),
    })
    MAPPING_IN = MappingProxyType({"NewRemoteHost": "RemoteHost", "NewExternalPort": "ExternalPort",
                  "NewProtocol": "PortMappingProtocol", "NewInternalPort": "InternalPort",
                  "NewInternalClient": "InternalClient", "NewEnabled": "PortMappingEnabled",
                  "NewPortMappingDescription": "PortMappingDescription",
                  "NewLeaseDuration": "PortMappingLeaseDuration"})
    ENTRY_OUT = MappingProxyType({"NewInternalPort": "InternalPort",
                                  "NewInternalClient": "InternalClient",
                                  "NewEnabled": "PortMappingEnabled",
                 "NewPortMappingDescription": "PortMappingDescription",
                 "NewLeaseDuration": "PortMappingLeaseDuration"})
    KEY_IN = MappingProxyType({"NewRemoteHost": "RemoteHost", "NewExternalPort": "ExternalPort",
              "NewProtocol": "PortMappingProtocol"})

    @callable_action("GetExternalIPAddress", {}, {"NewExternalIPAddress": "ExternalIPAddress"})
    async def get_external_ip_address(self) -> dict[str, Any]:
        ext = self.gw.external()
        return {"NewExternalIPAddress": str(ext) if ext else ""}

    @callable_action("GetStatusInfo", {}, {"NewConnectionStatus": "ConnectionStatus",
                                           "NewLastConnectionError": "LastConnectionError",
                                           "NewUptime": "Uptime"})
    async def get_status_info(self) -> dict[str, Any]:
        up = self.gw.external() is not None
        return {"NewConnectionStatus": "Connected" if up else "Disconnected",
                "NewLastConnectionError": "ERROR_NONE", "NewUptime": 0}

    @callable_action("GetConnectionTypeInfo", {}, {
        "NewConnectionType": "ConnectionType",
        "NewPossibleConnectionTypes": "PossibleConnectionTypes"})
    async def get_connection_type_info(self) -> dict[str, Any]:
        return {"NewConnectionType": "IP_Routed", "NewPossibleConnectionTypes": "IP_Routed"}

    def _ask(self, remote: str, ext: int, proto: str, port: int, client: str, desc: str,
             lease: int, exact: bool) -> Ask:
        _in_range(ext=ext, port=port)
        if proto not in PROTOCOLS:
            raise _error(INVALID_ARGS, f"protocol {proto!r}: TCP or UDP")
        if ext == 0 and exact:
            raise _error(WILDCARD_EXT_PORT, "external port 0 (a wildcard) is not mapped")
        try:
            inside = ip_address(client)
            filters = ((IPv4Network(remote), 0),) if remote not in ("", "*") else ()
        except ValueError:
            raise _error(INVALID_ARGS, "not an IPv4 address") from None
        if inside.version != 4 or port == 0:
            raise _error(INVALID_ARGS, "the internal client must be an IPv4 address and port")
        # A lease of 0 means "as long as may be" (IGD:2): the cap.
        return Ask(via="upnp", client=_client(), proto=PROTOCOLS[proto], int_addr=inside,
                   int_port=port, lifetime=lease or self.gw.table.config().max_lifetime,
                   ext_port=ext, exact=exact, description=_text(desc), filters=filters)

    @callable_action("AddPortMapping", MAPPING_IN, {})
    async def add_port_mapping(self, NewRemoteHost: str, NewExternalPort: int,
                               NewProtocol: str, NewInternalPort: int, NewInternalClient: str,
                               NewEnabled: bool, NewPortMappingDescription: str,
                               NewLeaseDuration: int) -> dict[str, Any]:
        ask = self._ask(NewRemoteHost, NewExternalPort, NewProtocol, NewInternalPort,
                        NewInternalClient, NewPortMappingDescription, NewLeaseDuration, True)
        try:
            self.gw.table.grant(ask)
        except Refused as r:
            raise _refusal(r) from None
        return {}

    @callable_action("AddAnyPortMapping", MAPPING_IN, {"NewReservedPort": "ExternalPort"})
    async def add_any_port_mapping(self, NewRemoteHost: str, NewExternalPort: int,
                                   NewProtocol: str, NewInternalPort: int,
                                   NewInternalClient: str, NewEnabled: bool,
                                   NewPortMappingDescription: str,
                                   NewLeaseDuration: int) -> dict[str, Any]:
        ask = self._ask(NewRemoteHost, NewExternalPort, NewProtocol, NewInternalPort,
                        NewInternalClient, NewPortMappingDescription, NewLeaseDuration, False)
        try:
            m = self.gw.table.grant(ask)
        except Refused as r:
            raise _refusal(r) from None
        return {"NewReservedPort": m.ext_port}

    def _find(self, ext: int, proto: str) -> Mapping:
        m = self.gw.table.by_external(PROTOCOLS.get(proto, 0), ext)
        if m is None:
            raise _error(NO_SUCH_ENTRY, "no such mapping")
        return m

    @callable_action("DeletePortMapping", KEY_IN, {})
    async def delete_port_mapping(self, NewRemoteHost: str, NewExternalPort: int,
                                  NewProtocol: str) -> dict[str, Any]:
        m = self._find(NewExternalPort, NewProtocol)
        try:
            self.gw.table.delete(m.key, "deleted by its client (UPnP)", by=_client())
        except Refused as r:
            raise _refusal(r) from None
        return {}

    def _entry(self, m: Mapping) -> dict[str, Any]:
        now = self.gw.table.clock()
        return {"NewInternalPort": m.int_port, "NewInternalClient": str(m.int_addr),
                "NewEnabled": True, "NewPortMappingDescription": m.description,
                "NewLeaseDuration": m.left(now)}

    @callable_action("GetSpecificPortMappingEntry", KEY_IN, ENTRY_OUT)
    async def get_specific_port_mapping_entry(self, NewRemoteHost: str,
                                              NewExternalPort: int,
                                              NewProtocol: str) -> dict[str, Any]:
        return self._entry(self._find(NewExternalPort, NewProtocol))

    @callable_action("GetGenericPortMappingEntry",
                     {"NewPortMappingIndex": "PortMappingNumberOfEntries"},
                     {**KEY_IN, **ENTRY_OUT})
    async def get_generic_port_mapping_entry(self, NewPortMappingIndex: int
                                             ) -> dict[str, Any]:
        maps = self.gw.v4_mappings()
        if NewPortMappingIndex >= len(maps):
            raise _error(ARRAY_INDEX_INVALID, "no mapping at that index")
        m = maps[NewPortMappingIndex]
        remote = str(m.filters[0][0].network_address) if m.filters else ""
        return {"NewRemoteHost": remote, "NewExternalPort": m.ext_port,
                "NewProtocol": PROTO_NAME[m.proto], **self._entry(m)}


class Ipv6Firewall(UpnpServerService):
    """WANIPv6FirewallControl:1: pinholes for the LAN's IPv6 hosts."""

    gw: Gateway
    SERVICE_DEFINITION = _service("WANIPv6Firewall1", "WANIPv6FirewallControl:1", "IP6FCtl",
                                  "WANIP6FC")
    STATE_VARIABLE_DEFINITIONS = MappingProxyType({
        "FirewallEnabled": create_state_var("boolean", default="1"),
        "InboundPinholeAllowed": create_state_var("boolean", default="1"),
        "A_ARG_TYPE_IPv6Address": create_state_var("string"),
        "A_ARG_TYPE_Port": create_state_var("ui2"),
        "A_ARG_TYPE_Protocol": create_state_var("ui2"),
        "A_ARG_TYPE_LeaseTime": create_state_var("ui4", allowed_range={"min": "1",
                                                                        "max": "86400"}),
        "A_ARG_TYPE_UniqueID": create_state_var("ui2"),
    })

    @callable_action("GetFirewallStatus", {}, {"FirewallEnabled": "FirewallEnabled",
                                               "InboundPinholeAllowed": "InboundPinholeAllowed"})
    async def get_firewall_status(self) -> dict[str, Any]:
        return {"FirewallEnabled": True, "InboundPinholeAllowed": True}

    @callable_action("AddPinhole", {
        "RemoteHost": "A_ARG_TYPE_IPv6Address", "RemotePort": "A_ARG_TYPE_Port",
        "InternalClient": "A_ARG_TYPE_IPv6Address", "InternalPort": "A_ARG_TYPE_Port",
        "Protocol": "A_ARG_TYPE_Protocol", "LeaseTime": "A_ARG_TYPE_LeaseTime"},
        {"UniqueID": "A_ARG_TYPE_UniqueID"})
    async def add_pinhole(self, RemoteHost: str, RemotePort: int,
                          InternalClient: str, InternalPort: int, Protocol: int,
                          LeaseTime: int) -> dict[str, Any]:
        _in_range(port=InternalPort, remote_port=RemotePort)
        if Protocol not in (6, 17):
            raise _error(PROTOCOL_NOT_SUPPORTED, "TCP (6) or UDP (17)")
        try:
            inside = IPv6Address(InternalClient)
            remote = IPv6Network(RemoteHost) if RemoteHost not in ("", "*") else None
        except ValueError:
            raise _error(INVALID_ARGS, "not an IPv6 address") from None
        if InternalPort == 0:
            raise _error(INVALID_ARGS, "internal port 0 (a wildcard) is not opened")
        asker = await self._asker(inside)
        filters = ((remote, RemotePort),) if remote is not None else (
            ((IPv6Network("::/0"), RemotePort),) if RemotePort else ())
        try:
            m = self.gw.table.grant(Ask(via="upnp", client=asker, proto=Protocol,
                                        int_addr=inside, int_port=InternalPort,
                                        lifetime=LeaseTime, filters=filters))
        except Refused as r:
            raise _refusal(r) from None
        return {"UniqueID": self.gw.new_pinhole_id(m.key)}

    async def _asker(self, inside: IPv6Address) -> IPv4Address | IPv6Address:
        """Who asks, as the table sees it: a host asking over IPv4 about its
        own IPv6 address counts as that address if both are the same
        machine on the link (one MAC address in the neighbour tables of the
        router's own stack)."""
        client = _client()
        if client != inside and await neighbours.same_host(
                client, inside, [link.name for link in self.gw.links]):
            return inside
        return client

    def _pinhole(self, uid: int) -> tuple[int, int, Any, int]:
        key = self.gw.pinholes.get(uid)
        if key is None or key not in self.gw.table.maps:
            raise _error(NO_SUCH_PINHOLE, "no such pinhole")
        return key

    @callable_action("UpdatePinhole", {"UniqueID": "A_ARG_TYPE_UniqueID",
                                       "NewLeaseTime": "A_ARG_TYPE_LeaseTime"}, {})
    async def update_pinhole(self, UniqueID: int, NewLeaseTime: int
                             ) -> dict[str, Any]:
        m = self.gw.table.maps[self._pinhole(UniqueID)]
        asker = await self._asker(m.int_addr)  # type: ignore[arg-type]
        if asker not in (m.client, m.int_addr):
            raise _error(NOT_AUTHORIZED, "another machine's pinhole")
        try:
            self.gw.table.grant(Ask(via="upnp", client=asker, proto=m.proto,
                                    int_addr=m.int_addr, int_port=m.int_port,
                                    lifetime=NewLeaseTime, filters=m.filters))
        except Refused as r:
            raise _refusal(r) from None
        return {}

    @callable_action("DeletePinhole", {"UniqueID": "A_ARG_TYPE_UniqueID"}, {})
    async def delete_pinhole(self, UniqueID: int) -> dict[str, Any]:
        key = self._pinhole(UniqueID)
        asker = await self._asker(self.gw.table.maps[key].int_addr)  # type: ignore[arg-type]
        try:
            self.gw.table.delete(key, "deleted by its client (UPnP)", by=asker)
        except Refused as r:
            raise _refusal(r) from None
        del self.gw.pinholes[UniqueID]
        return {}


class WanCommonInterface(UpnpServerService):
    """WANCommonInterfaceConfig:1: the WAN link's kind and counters (the
    service by which clients such as miniupnpc recognise a gateway)."""

    gw: Gateway
    SERVICE_DEFINITION = _service("WANCommonIFC1", "WANCommonInterfaceConfig:1", "CmnIfCfg",
                                  "WANCfg")
    STATE_VARIABLE_DEFINITIONS = MappingProxyType({
        "WANAccessType": create_state_var("string", default="Ethernet"),
        "Layer1UpstreamMaxBitRate": create_state_var("ui4", default="0"),
        "Layer1DownstreamMaxBitRate": create_state_var("ui4", default="0"),
        "PhysicalLinkStatus": create_state_var("string", default="Up"),
        "TotalBytesSent": create_state_var("ui4"),
        "TotalBytesReceived": create_state_var("ui4"),
        "TotalPacketsSent": create_state_var("ui4"),
        "TotalPacketsReceived": create_state_var("ui4"),
    })

    @callable_action("GetCommonLinkProperties", {}, {
        "NewWANAccessType": "WANAccessType",
        "NewLayer1UpstreamMaxBitRate": "Layer1UpstreamMaxBitRate",
        "NewLayer1DownstreamMaxBitRate": "Layer1DownstreamMaxBitRate",
        "NewPhysicalLinkStatus": "PhysicalLinkStatus"})
    async def get_common_link_properties(self) -> dict[str, Any]:
        return {"NewWANAccessType": "Ethernet", "NewLayer1UpstreamMaxBitRate": 0,
                "NewLayer1DownstreamMaxBitRate": 0,
                "NewPhysicalLinkStatus": "Up" if self.gw.external() else "Down"}

    def _stat(self, key: str) -> int:
        return self.gw.counters().get(key, 0) & 0xFFFFFFFF  # ui4 wraps

    @callable_action("GetTotalBytesSent", {}, {"NewTotalBytesSent": "TotalBytesSent"})
    async def get_total_bytes_sent(self) -> dict[str, Any]:
        return {"NewTotalBytesSent": self._stat("tx_bytes")}

    @callable_action("GetTotalBytesReceived", {}, {"NewTotalBytesReceived": "TotalBytesReceived"})
    async def get_total_bytes_received(self) -> dict[str, Any]:
        return {"NewTotalBytesReceived": self._stat("rx_bytes")}

    @callable_action("GetTotalPacketsSent", {}, {"NewTotalPacketsSent": "TotalPacketsSent"})
    async def get_total_packets_sent(self) -> dict[str, Any]:
        return {"NewTotalPacketsSent": self._stat("tx_packets")}

    @callable_action("GetTotalPacketsReceived", {},
                     {"NewTotalPacketsReceived": "TotalPacketsReceived"})
    async def get_total_packets_received(self) -> dict[str, Any]:
        return {"NewTotalPacketsReceived": self._stat("rx_packets")}


def _device(kind: str, name: str, udn: str, url: str = "") -> DeviceInfo:
    return DeviceInfo(device_type=f"urn:schemas-upnp-org:device:{kind}", friendly_name=name,
                      manufacturer="tun-router", manufacturer_url=None,
                      model_description="userspace NAT gateway", model_name="tun-router",
                      model_number=__version__, model_url=None, serial_number=None, udn=udn,
                      upc=None, presentation_url=None, url=url, icons=[],
                      xml=ET.Element("server_device"))


def device_classes(gw: Gateway, base: str) -> type[UpnpServerDevice]:
    """The device tree for one link: InternetGatewayDevice:2 > WANDevice:2 >
    WANConnectionDevice:2 > the two services; each class bound to ``gw``."""
    def udn(part: str) -> str:
        return f"uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{base}/{part}')}"
    ip_svc = type("WanIpConnectionHere", (WanIpConnection,), {"gw": gw})
    cif_svc = type("WanCommonInterfaceHere", (WanCommonInterface,), {"gw": gw})
    fw_svc = type("Ipv6FirewallHere", (Ipv6Firewall,), {"gw": gw})
    conn = type("WanConnectionDevice", (UpnpServerDevice,), {
        "DEVICE_DEFINITION": _device("WANConnectionDevice:2", "WAN connection", udn("conn")),
        "EMBEDDED_DEVICES": [], "SERVICES": [ip_svc, fw_svc]})
    wan = type("WanDevice", (UpnpServerDevice,), {
        "DEVICE_DEFINITION": _device("WANDevice:2", "WAN", udn("wan")),
        "EMBEDDED_DEVICES": [conn], "SERVICES": [cif_svc]})
    return type("Igd", (UpnpServerDevice,), {
        "DEVICE_DEFINITION": _device("InternetGatewayDevice:2", "tun-router", udn("igd"),
                                     "/rootDesc.xml"),
        "EMBEDDED_DEVICES": [wan], "SERVICES": []})


def _in_range(**ports: int) -> None:
    """Ports are ui2 in the service description, but the library takes any
    integer: one past 65535 is Argument Value Out of Range (601), before it
    reaches the table (or the data plane's 16-bit fields)."""
    for name, value in ports.items():
        if not 0 <= value <= 65535:
            raise _error(ARG_OUT_OF_RANGE, f"{name} {value}: a port is 0-65535")


async def _with_client(service: UpnpServerService, request: Request) -> Response:
    """The library's SOAP handler, knowing the control point's address.  An
    argument its types refuse raises ValueError there (an integer that is
    not one, say) or an argument is missing: Invalid Args (402), as UPnP
    says, not a server error with a traceback in the log."""
    CLIENT.set(request.remote or "")
    try:
        return await action_handler(service, request)
    except (ValueError, TypeError, vol.Invalid, UpnpError) as e:  # a missing argument too
        return _create_error_action_response(_error(INVALID_ARGS, str(e)[:200]))


# What a hostile datagram to port 1900 makes the library's decoder raise
# (aiohttp's header parser: a duplicate header, say).
SSDP_DECODE_ERRORS = (HttpProcessingError, ValueError, UnicodeError)


def decode_search(data: bytes, local: Any, remote: Any) -> tuple[str, Any] | None:
    """An SSDP datagram decoded by the library, or None: invalid packets
    are dropped here instead of raising out of the protocol (which would
    log a traceback per packet a LAN host sends)."""
    if not is_valid_ssdp_packet(data):
        return None
    try:
        return decode_ssdp_packet(data, local, remote)
    except SSDP_DECODE_ERRORS:
        return None


class _SsdpProtocol(SsdpProtocol):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        decoded = decode_search(data, self.local_addr, addr)
        if decoded is not None and self.on_data is not None:
            self.on_data(*decoded)


class _SearchResponder(SsdpSearchResponder):
    """The library's responder on a protocol that drops undecodable
    datagrams (its async_start, as the library has it, with that class)."""

    async def async_start(self) -> None:
        response_sock, _, _ = get_ssdp_socket(self.source, self.target)
        await self._loop.create_datagram_endpoint(
            lambda: _SsdpProtocol(self._loop, on_connect=self._on_connect_response),
            sock=response_sock)
        sock, _, _ = get_ssdp_socket(self.source, self.target)
        sock.bind(("", self.target[1]))
        await self._loop.create_datagram_endpoint(
            lambda: _SsdpProtocol(self._loop, on_connect=self._on_connect,
                                  on_data=self._on_data), sock=sock)


class _LinkServer(UpnpServer):
    """The library's server, with the control point's address known to the
    actions: its HTTP app is built here (as the library builds it) with the
    SOAP handler wrapped."""

    async def _async_start_http_server(self) -> None:
        device = cast(UpnpServerDevice, self._device)
        app = Application(client_max_size=64 * 1024)
        app.router.add_get(device.device_url, partial(to_xml, device))
        for svc in device.all_services:
            service = cast(UpnpServerService, svc)
            app.router.add_get(service.SERVICE_DEFINITION.scpd_url, partial(to_xml, service))
            app.router.add_post(service.SERVICE_DEFINITION.control_url,
                                partial(_with_client, service))
        # An idle kept-alive connection of a LAN host is closed after 15 s
        # (aiohttp's default is an hour), so idle sockets cannot pile up.
        runner = AppRunner(app, access_log=None, keepalive_timeout=HTTP_KEEPALIVE)
        await runner.setup()
        self._site = TCPSite(runner, self.source[0], self.http_port, reuse_address=True)
        await self._site.start()
        self._runner = runner

    async def _async_start_ssdp(self) -> None:
        device = cast(UpnpServerDevice, self._device)
        self._search_responder = _SearchResponder(device, source=self.source,
                                                  target=self.target)
        self._advertisement_announcer = SsdpAdvertisementAnnouncer(
            device, source=self.source, target=self.target)
        await self._search_responder.async_start()
        await self._advertisement_announcer.async_start()

    async def _async_stop_http_server(self) -> None:
        await super()._async_stop_http_server()
        runner = getattr(self, "_runner", None)
        if runner is not None:
            await runner.cleanup()


class Igd:
    """One IGD per LAN link, at http://ADDRESS:upnp_port/rootDesc.xml."""

    def __init__(self, table: Table, links: Sequence[LanLink], port: int,
                 external: Callable[[], IPv4Address | None],
                 counters: Callable[[], dict[str, int]], log: Any,
                 settings: tuple[Any, ...]) -> None:
        self.settings = settings
        self._log = log
        self._port = port
        self._links = list(links)
        self.gw = Gateway(table, external, self._links, counters)
        self._servers: list[_LinkServer] = []

    async def start(self) -> None:
        for link in self._links:
            base = f"http://{link.address}:{self._port}"
            server = _LinkServer(device_classes(self.gw, base), source=(str(link.address), 0),
                                 http_port=self._port)
            try:
                await server.async_start()
            except OSError:
                with contextlib.suppress(Exception):  # what of it did start
                    await server.async_stop()
                raise
            self._servers.append(server)
            self._log.info("portmap.upnp_serving", link=link.name,
                           description=f"{base}/rootDesc.xml")

    async def stop(self) -> None:
        for s in self._servers:
            await s.async_stop()
        self._servers = []

