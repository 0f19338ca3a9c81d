"""The LAN services' settings: what `router check` refuses, the host link a
LAN link brings, and the dnsmasq command line made of them."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from router import lanservices
from router.config import load, parse
from tests.helpers import POOL, SERVICES_LAN, refused

ROOT = Path(__file__).resolve().parents[2]

LAN = SERVICES_LAN + """{lan}
[[interface]]
name = "wan0"
attach = "eth0"
address = "dhcp"
zone = "wan"
{extra}"""


def cfg(lan: str = POOL, extra: str = "") -> str:
    return LAN.format(lan=lan, extra=extra)


def test_the_home_config_is_valid() -> None:
    c = load(ROOT / "conf/home.toml")
    (lan,) = [i for i in c.interfaces if i.lan is not None]
    assert lan.lan is not None and lan.lan.pool == (IPv4Address("192.168.1.100"),
                                                    IPv4Address("192.168.1.199"))
    assert [i.name for i in c.interfaces if i.host_link] == ["rt-self"]


def test_a_lan_link_brings_the_host_link() -> None:
    c = parse(cfg().encode(), "home.toml")
    host = c.interfaces[-1]
    assert (host.name, host.zone, host.host_link) == ("rt-self", "self", True)
    assert host.address == IPv4Interface("169.254.53.1/30")
    assert host.host_address == IPv4Interface("169.254.53.2/30")
    assert host.rp_filter == "off" and host.lan is None
    assert "self" in c.zones
    # Without a LAN link there is none.
    c = parse(cfg(lan="").encode(), "home.toml")
    assert not any(i.host_link for i in c.interfaces)


@pytest.mark.parametrize(("lan", "extra", "key", "reason"), [
    ('[interface.lan]\npool = "192.168.2.10-192.168.2.20"\n', "", "interface[0].lan.pool",
     "not a host address of the link's network"),
    ('[interface.lan]\npool = "192.168.1.20-192.168.1.10"\n', "", "interface[0].lan.pool",
     "comes after"),
    ('[interface.lan]\npool = "192.168.1.1-192.168.1.10"\n', "", "interface[0].lan.pool",
     "router's own address"),
    ('[interface.lan]\npool = "many"\n', "", "interface[0].lan.pool", "FIRST-LAST"),
    ('[interface.lan]\nlease = 5\n', "", "interface[0].lan.lease", "between 120"),
    ('[interface.lan]\nstatic = [{ mac = "nope", address = "192.168.1.9" }]\n', "",
     "interface[0].lan.static[0].mac", "MAC address"),
    ('[interface.lan]\nstatic = [{ mac = "52:54:00:00:00:01", address = "192.168.1.1" }]\n',
     "", "interface[0].lan.static[0].address", "router's own address"),
    ('[interface.lan]\nstatic = [{ mac = "52:54:00:00:00:01", address = "192.168.1.9" },'
     '{ mac = "52:54:00:00:00:01", address = "192.168.1.8" }]\n', "",
     "interface[0].lan.static[1]", "same MAC"),
    ('[interface.lan]\nstatic = [{ mac = "52:54:00:00:00:01", address = "192.168.1.9", '
     'name = "a b" }]\n', "", "interface[0].lan.static[0].name", "host name"),
    ('[interface.lan]\nrange = 1\n', "", "interface[0].lan.range", "unknown key"),
    (POOL, '[lan]\nupstream = ["dns.example"]\n', "lan.upstream[0]", "IPv4 or IPv6"),
    (POOL, '[lan]\ndomain = "-bad-"\n', "lan.domain", "domain name"),
    (POOL, '[lan]\nhost_link = "192.168.1.0/30"\n', "lan.host_link", "overlaps"),
    (POOL, '[lan]\nhost_link = "169.254.53.0/31"\n', "lan.host_link", "/30 or larger"),
    (POOL, '[lan]\nlease_file = "leases"\n', "lan.lease_file", "absolute path"),
])
def test_bad_lan_settings_are_refused(lan: str, extra: str, key: str, reason: str) -> None:
    e = refused(cfg(lan, extra), "home.toml")
    assert e.key == key and reason in e.reason, (e.key, e.reason)
    assert e.line is not None  # router check points at the line


def test_lan_services_need_an_attached_static_link() -> None:
    plain = cfg().replace('attach = "eth1"\n', "")
    assert refused(plain).reason.startswith("LAN services need an attached interface")
    wan = cfg(lan="", extra='[interface.lan]\npool = "192.168.1.2-192.168.1.3"\n')
    assert "a link whose address comes by DHCP is a WAN" in refused(wan).reason
    odd = cfg().replace("2001:db8:1::1/64", "2001:db8:1::1/56")
    assert "SLAAC needs a /64" in refused(odd).reason
    taken = cfg() + '\n[[interface]]\nname = "x"\naddress = "10.0.0.1/24"\nzone = "self"\n'
    assert refused(taken).key == "interface[2].zone"


def test_the_dnsmasq_command_line() -> None:
    c = parse(cfg('[interface.lan]\npool = "192.168.1.100-192.168.1.199"\nlease = 3600\n'
                  'static = [{ mac = "52:54:00:00:00:10", address = "192.168.1.10", '
                  'name = "nas" }]\n', '[lan]\nrebind_ok = ["isp.example"]\n').encode(), "h")
    argv = lanservices.argv(c, "/usr/sbin/dnsmasq", learned=("198.51.100.1",))
    assert argv[0] == "/usr/sbin/dnsmasq" and "--conf-file=/dev/null" in argv
    # The LAN interface and the host link, never the WAN's.
    assert [a for a in argv if a.startswith("--interface=")] == ["--interface=eth1",
                                                                 "--interface=rt-self"]
    assert "--no-dhcp-interface=rt-self" in argv and "eth0" not in " ".join(argv)
    assert "--dhcp-range=set:lan0,192.168.1.100,192.168.1.199,255.255.255.0,3600" in argv
    assert "--dhcp-host=52:54:00:00:00:10,192.168.1.10,nas" in argv
    assert "--dhcp-option=tag:lan06,option6:dns-server,[2001:db8:1::1]" in argv
    assert "--server=198.51.100.1" in argv and "--no-resolv" in argv
    assert "--rebind-domain-ok=/isp.example/" in argv and "--local=/home.arpa/" in argv
    # The config's own servers win over the lease's.
    own = parse(cfg(extra='[lan]\nupstream = ["9.9.9.9"]\n').encode(), "h")
    argv = lanservices.argv(own, learned=("198.51.100.1",))
    assert [a for a in argv if a.startswith("--server=")] == ["--server=9.9.9.9"]
    # No DNS: port 0, and so no DNS server announced.
    nodns = parse(cfg(extra="[lan]\ndns = false\n").encode(), "h")
    argv = lanservices.argv(nodns)
    assert "--port=0" in argv and not any("dns-server" in a for a in argv)
    assert lanservices.argv(parse(cfg(lan="").encode(), "h")) == []


def test_the_lease_servers_file_is_read_with_care(tmp_path: Path) -> None:
    f = tmp_path / "upstream-resolv.conf"
    assert lanservices.read_resolv(f) == ()
    f.write_text("nameserver 198.51.100.1\nnameserver 2001:db8::53\nnameserver x\n"
                 "search evil\n" + "nameserver 192.0.2.1\n" * 20)
    got = lanservices.read_resolv(f)
    assert got[:2] == ("198.51.100.1", "2001:db8::53") and len(got) == 8
