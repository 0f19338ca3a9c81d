"""Config validation: every error names the file, the key, the line and why."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Network
from pathlib import Path

import pytest

import router.config.source as source
from router.config import ConfigError, load, parse, to_dict, warnings
from router.config.model import MAX_CONFIG_BYTES
from tests.helpers import TWO_LINKS
from tests.helpers import refused as err

ROOT = Path(__file__).resolve().parents[2]

MIN = TWO_LINKS


def test_default_config_is_valid() -> None:
    cfg = load(ROOT / "conf/router.toml")
    assert [i.name for i in cfg.interfaces] == ["lan0", "wan0"]
    assert cfg.zones == ("lan", "wan")
    assert cfg.nat.rules[0].interface == "wan0" and cfg.nat.rules[0].to is None
    assert cfg.conntrack.timeouts["tcp_established"] == 432000


def test_minimal_config_defaults() -> None:
    cfg = parse(MIN.encode())
    assert cfg.firewall.forward == "drop" and cfg.firewall.policies == ()
    assert cfg.conntrack.max == 65536 and cfg.conntrack.tcp_loose
    assert cfg.control.socket == "/run/router/router.sock"
    assert cfg.interfaces[0].mtu == 1500
    assert cfg.dataplane.queues == 1 and cfg.dataplane.workers  # one queue, moved by a worker
    assert parse((MIN + "\n[dataplane]\nqueues = 4\n").encode()).dataplane.queues == 4


def test_config_is_immutable() -> None:
    cfg = parse(MIN.encode())
    with pytest.raises(AttributeError):
        cfg.dataplane.batch = 5  # type: ignore[misc]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as e:
        load("/nonexistent/router.toml")
    assert "/nonexistent/router.toml" in str(e.value) and "cannot read" in str(e.value)


def test_syntax_error_has_line() -> None:
    e = err(MIN + "\n[conntrack\nmax = 5\n")
    assert e.line == 12 and "TOML syntax" in e.reason and str(e).startswith("cfg.toml:12:")


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ("\n[bogus]\nx = 1\n", "bogus", "unknown key"),
    ("\n[conntrack]\nmax = 'big'\n", "conntrack.max", "must be an integer"),
    ("\n[conntrack]\nmax = true\n", "conntrack.max", "not a boolean"),
    ("\n[conntrack]\nmax = 3\n", "conntrack.max", "between 16 and"),
    ("\n[conntrack]\ngc_interval = 0\n", "conntrack.gc_interval", "between 0.1 and 300"),
    ("\n[conntrack.timeouts]\nudp = 0\n", "conntrack.timeouts.udp", "between 1 and"),
    ("\n[conntrack.timeouts]\nudpp = 5\n", "conntrack.timeouts.udpp", "unknown key"),
    ("\n[nat]\nport_min = 2000\nport_max = 1000\n", "nat.port_min", "must not exceed"),
    ("\n[nat]\nport_max = 70000\n", "nat.port_max", "between 1 and 65535"),
    ("\n[[nat.masquerade]]\ninterface = 'eth9'\n", "nat.masquerade[0].interface",
     "no interface named 'eth9'"),
    ("\n[[nat.masquerade]]\n", "nat.masquerade[0].interface", "is required"),
    ("\n[[nat.masquerade]]\ninterface = 'wan0'\nsources = ['10.0.0.1/8']\n",
     "nat.masquerade[0].sources[0]", "has host bits set"),
    ("\n[[nat.masquerade6]]\ninterface = 'wan0'\n", "nat.masquerade6[0].interface",
     "wan0 has no address6"),
    ("\n[[nat.masquerade6]]\ninterface = 'eth9'\n", "nat.masquerade6[0].interface",
     "no interface named 'eth9'"),
    ("\n[[nat.masquerade6]]\nsources = []\n", "nat.masquerade6[0].interface", "is required"),
    ("\n[[nat.snat]]\ninterface = 'wan0'\n", "nat.snat[0].to", "is required"),
    ("\n[[nat.snat]]\ninterface = 'wan0'\nto = '224.0.0.1'\n", "nat.snat[0].to",
     "not a unicast"),
    ("\n[firewall]\nforward = 'maybe'\n", "firewall.forward", "one of accept, drop"),
    ("\n[[firewall.policy]]\nfrom = 'lan'\nto = 'dmz'\n", "firewall.policy[0].to",
     "no interface is in zone 'dmz'"),
    ("\n[[firewall.policy]]\nfrom = 'lan'\nto = 'wan'\n[[firewall.policy]]\nfrom = 'lan'\n"
     "to = 'wan'\n", "firewall.policy[1]", "duplicate policy"),
    ("\n[[route]]\ndestination = '10.0.0.0/8'\n", "route[0]", "needs an interface"),
    ("\n[[route]]\ndestination = '10.0.0.0/8'\ngateway = '10.1.1.1'\n", "route[0].gateway",
     "not on any interface's network"),
    ("\n[[route]]\ndestination = '10.0.0.0/8'\ngateway = '192.168.1.1'\n", "route[0].gateway",
     "router's own address"),
    ("\n[[route]]\ndestination = '10.0.0.0/8'\ninterface = 'lan0'\ngateway = '203.0.113.9'\n",
     "route[0].gateway", "not on lan0's network"),
    ("\n[[route]]\ndestination = '10.0.0.0/33'\ninterface = 'lan0'\n", "route[0].destination",
     "not an IPv4 network"),
    ("\n[[route]]\ndestination = '10.0.0.0/8'\ninterface = 'x'\n", "route[0].interface",
     "no interface named 'x'"),
    ("\n[control]\nsocket = 'rel.sock'\n", "control.socket", "absolute path"),
    ("\n[log]\nlevel = 'loud'\n", "log.level", "one of debug"),
    ("\n[dataplane]\nbatch = 0\n", "dataplane.batch", "between 1 and 1024"),
    ("\n[dataplane]\nqueues = 0\n", "dataplane.queues", "between 1 and 64"),
    ("\n[dataplane]\nqueues = 65\n", "dataplane.queues", "between 1 and 64"),
])
def test_bad_values(extra: str, key: str, reason: str) -> None:
    e = err(MIN + extra)
    assert e.key == key
    assert reason in e.reason
    assert e.path == "cfg.toml"
    assert e.line is not None


IFACE_CASES = [
    ({"name": "'a b'"}, "interface[0].name", "1-15 letters"),
    ({"name": "'wan0'"}, "interface[1].name", "duplicate interface name"),
    ({"address": "'192.168.1.1'"}, "interface[0].address", "with a prefix length"),
    ({"address": "'192.168.1.0/24'"}, "interface[0].address", "network or broadcast"),
    ({"address": "'203.0.113.5/24'"}, "interface[1].address", "overlaps the network of lan0"),
    ({"address": "'127.0.0.1/8'"}, "interface[0].address", "not a unicast"),
    ({"zone": "'1lan'"}, "interface[0].zone", "must start with a letter"),
    ({"mtu": "100"}, "interface[0].mtu", "between 576 and 65535"),
    ({"netns": "'bad/ns'"}, "interface[0].netns", "network namespace name"),
    ({"host_address": "'10.0.0.2/24'"}, "interface[0].host_address", "must be in"),
    ({"host_address": "'192.168.1.1/24'"}, "interface[0].host_address", "must differ"),
    ({"host_routes": "['0.0.0.0/0']"}, "interface[0].host_routes", "needs host_address"),
    ({"speed": "1"}, "interface[0].speed", "unknown key"),
]


@pytest.mark.parametrize(("change", "key", "reason"), IFACE_CASES)
def test_bad_interfaces(change: dict[str, str], key: str, reason: str) -> None:
    lines = MIN.split("\n")
    first = {"name": 2, "address": 3, "zone": 4}
    text = MIN
    for k, v in change.items():
        if k in first:
            lines[first[k]] = f"{k} = {v}"
            text = "\n".join(lines)
        else:
            text = text.replace('zone = "lan"', f'zone = "lan"\n{k} = {v}', 1)
    e = err(text)
    assert (e.key, e.path) == (key, "cfg.toml")
    assert reason in e.reason


def test_no_interfaces() -> None:
    e = err("[conntrack]\nmax = 100\n")
    assert e.key == "interface" and "at least one" in e.reason


def test_error_line_points_at_the_key() -> None:
    text = MIN + '\n[[firewall.policy]]\nfrom = "lan"\nto = "wan"\naction = "maybe"\n'
    e = err(text)
    assert e.key == "firewall.policy[0].action"
    assert text.splitlines()[e.line - 1].startswith("action")  # type: ignore[operator]


def test_error_line_in_second_array_element() -> None:
    text = MIN.replace('address = "203.0.113.1/24"', 'address = "203.0.113.1"')
    e = err(text)
    assert e.key == "interface[1].address"
    assert text.splitlines()[e.line - 1] == 'address = "203.0.113.1"'  # type: ignore[operator]


@pytest.mark.parametrize(("extra", "key", "holds"), [
    # A value inside an inline table or array: the line that holds it, not
    # an earlier line that happens to name the key.
    ('[nat]\nmasquerade = [ { interface = "eth9" } ]\n', "nat.masquerade[0].interface",
     'interface = "eth9"'),
    ('[[loadbalancer]]\nname = "web"\ninterface = "wan0"\nport = 80\n'
     'backend = [ { address = "192.168.1.9", port = 0 } ]\n',
     "loadbalancer[0].backend[0].port", "port = 0"),
    ('[firewall]\npolicy = [ { from = "lan", to = "wan", action = "maybe" } ]\n',
     "firewall.policy[0].action", '"maybe"'),
    ("[conntrack]\ntimeouts = { udp = 0 }\n", "conntrack.timeouts.udp", "udp = 0"),
])
def test_error_line_inside_an_inline_table(extra: str, key: str, holds: str) -> None:
    text = MIN + extra
    e = err(text)
    assert e.key == key and e.line is not None
    assert holds in text.splitlines()[e.line - 1]


def test_a_missing_key_has_no_line_and_comments_are_not_taken() -> None:
    e = err("# the interface definitions follow\n[conntrack]\nmax = 100\n")
    assert e.key == "interface" and e.line is None
    assert str(e).startswith("cfg.toml: interface:")


def test_attached_interface() -> None:
    cfg = parse(MIN.replace('zone = "lan"', 'zone = "lan"\nattach = "eth1"').encode())
    assert cfg.interfaces[0].attach == "eth1" and cfg.interfaces[1].attach is None
    assert to_dict(cfg)["interface"][0]["attach"] == "eth1"


@pytest.mark.parametrize(("change", "reason"), [
    ('attach = "eth 1"', "must be an interface name"),
    ('attach = "lan0"', "names the router's own TUN device"),
    ('attach = "eth1"\nnetns = "x"', "netns do not apply"),
    ('attach = "eth1"\nhost_address = "192.168.1.2/24"', "host_address do not apply"),
    ('attach = "eth1"\nprecreated = true', "precreated do not apply"),
])
def test_attached_interface_refused(change: str, reason: str) -> None:
    e = err(MIN.replace('zone = "lan"', f'zone = "lan"\n{change}'))
    assert e.key == "interface[0].attach" and reason in e.reason


V6 = MIN.replace('zone = "wan"', 'zone = "wan"\naddress6 = "2001:db8:51::2/64"')


def test_ipv6_gateway_needs_an_attached_interface() -> None:
    route = '\n[[route]]\ndestination = "::/0"\ninterface = "wan0"\ngateway = "fe80::1"\n'
    e = err(V6 + route)
    assert e.key == "route[0].gateway" and "needs an attached interface" in e.reason
    cfg = parse((V6.replace('zone = "wan"', 'zone = "wan"\nattach = "eth2"') + route).encode())
    (r,) = cfg.routes6
    assert str(r.gateway) == "fe80::1" and r.interface == "wan0"
    e = err(V6.replace('zone = "wan"', 'zone = "wan"\nattach = "eth2"')
            + route.replace("fe80::1", "ff02::1"))
    assert e.key == "route[0].gateway" and "not a unicast address" in e.reason


def test_an_address_by_dhcp() -> None:
    text = MIN.replace('address = "203.0.113.1/24"\nzone = "wan"',
                       'address = "dhcp"\nattach = "eth2"\nzone = "wan"')
    cfg = parse(text.encode())
    wan = cfg.interfaces[1]
    assert wan.dhcp and str(wan.address) == "0.0.0.0/32"  # none until a lease
    assert to_dict(cfg)["interface"][1]["address"] == "dhcp"
    e = err(MIN.replace('address = "203.0.113.1/24"', 'address = "dhcp"'))
    assert e.key == "interface[1].address" and "needs an attached interface" in e.reason
    # With a service user, a root helper process runs the client (helpers.py).
    assert parse((text + '\n[service]\nuser = "router"\n').encode()).interfaces[1].dhcp


def test_one_kernel_interface_is_attached_once() -> None:
    text = MIN.replace('zone = "lan"', 'zone = "lan"\nattach = "eth1"').replace(
        'zone = "wan"', 'zone = "wan"\nattach = "eth1"')
    e = err(text)
    assert e.key == "interface[1].attach" and "attached to another interface" in e.reason


def test_not_utf8() -> None:
    with pytest.raises(ConfigError) as e:
        parse(b"\xff\xfe", "x.toml")
    assert "not UTF-8" in str(e.value)


def test_to_dict_round_trips_through_toml() -> None:
    import toml

    from router.config import to_dict

    cfg = load(ROOT / "conf/router.toml")
    text = toml.dumps(to_dict(cfg))
    again = parse(text.encode(), "shown.toml")
    assert to_dict(again) == to_dict(cfg)
    assert again.interfaces == cfg.interfaces and again.nat == cfg.nat


FWD = MIN + """
[[nat.forward]]
interface = "wan0"
protocol = "both"
port = "8000-8001"
to = "192.168.1.5"
to_port = 80
"""


def test_port_forward_parsed() -> None:
    cfg = parse(FWD.encode())
    assert [(f.protocol, f.port_min, f.port_max, str(f.to), f.to_port, str(f.address))
            for f in cfg.nat.forwards] == [
        ("tcp", 8000, 8001, "192.168.1.5", 80, "203.0.113.1"),
        ("udp", 8000, 8001, "192.168.1.5", 80, "203.0.113.1")]


@pytest.mark.parametrize(("change", "key", "reason"), [
    (('port = "8000-8001"', 'port = "9-8"'), "nat.forward[0].port", "ascending"),
    (('port = "8000-8001"', 'port = "x"'), "nat.forward[0].port", "must be a port"),
    (('to = "192.168.1.5"', 'to = "192.168.1.1"'), "nat.forward[0].to", "router's own"),
    (('to_port = 80', 'to_port = 65535'), "nat.forward[0].to_port", "passes 65535"),
    (('protocol = "both"', 'protocol = "sctp"'), "nat.forward[0].protocol", "one of tcp"),
    (('interface = "wan0"\nprotocol', 'interface = "wan9"\nprotocol'),
     "nat.forward[0].interface", "no interface named"),
])
def test_bad_port_forwards(change: tuple[str, str], key: str, reason: str) -> None:
    e = err(FWD.replace(*change))
    assert e.key == key and reason in e.reason


def test_overlapping_port_forwards() -> None:
    e = err(FWD + '\n[[nat.forward]]\ninterface = "wan0"\nport = 8001\nto = "192.168.1.6"\n')
    assert e.key == "nat.forward[1].port" and "overlap" in e.reason


LBCFG = MIN + """
[[loadbalancer]]
name = "web"
interface = "wan0"
port = 80
[[loadbalancer.backend]]
address = "192.168.1.10"
weight = 3
"""


def test_load_balancer_parsed() -> None:
    (lb,) = parse(LBCFG.encode()).loadbalancers
    assert (lb.name, lb.protocol, str(lb.address), lb.port) == ("web", "tcp", "203.0.113.1", 80)
    assert [(str(b.address), b.port, b.weight) for b in lb.backends] == [("192.168.1.10", 80, 3)]


@pytest.mark.parametrize(("change", "key", "reason"), [
    (("weight = 3", "weight = 0"), "loadbalancer[0].backend[0].weight", "between 1 and 100"),
    (('address = "192.168.1.10"', 'address = "192.168.1.1"'),
     "loadbalancer[0].backend[0].address", "router's own"),
    (('name = "web"', 'name = "9"'), "loadbalancer[0].name", "unique name"),
    (("port = 80", "port = 0"), "loadbalancer[0].port", "between 1 and 65535"),
])
def test_bad_load_balancers(change: tuple[str, str], key: str, reason: str) -> None:
    e = err(LBCFG.replace(*change))
    assert e.key == key and reason in e.reason


def test_load_balancer_needs_backends() -> None:
    text = LBCFG[: LBCFG.index("[[loadbalancer.backend]]")]
    e = err(text)
    assert e.key == "loadbalancer[0].backend" and "at least one" in e.reason


def test_snat_pool() -> None:
    cfg = parse((MIN + '\n[[nat.snat]]\ninterface = "wan0"\nto = ["203.0.113.5", "203.0.113.6"]\n'
                 ).encode())
    (rule,) = cfg.nat.rules
    assert [str(a) for a in rule.pool] == ["203.0.113.5", "203.0.113.6"]
    e = err(MIN + '\n[[nat.snat]]\ninterface = "wan0"\nto = ["203.0.113.5", "203.0.113.5"]\n')
    assert e.key == "nat.snat[0].to" and "twice" in e.reason


FWRULE = MIN + """
[[firewall.rule]]
from = "wan"
protocol = "tcp"
port = 22
action = "reject"
state = ["new"]
"""


def test_firewall_rule_parsed() -> None:
    cfg = parse(FWRULE.encode())
    (r,) = cfg.firewall.rules
    assert (r.chain, r.action, r.from_zone, r.protocol, r.port_min, r.states) == (
        "forward", "reject", "wan", 6, 22, ("new",))
    assert cfg.firewall.input == "accept"
    assert cfg.interfaces[0].rp_filter == "strict"


@pytest.mark.parametrize(("change", "key", "reason"), [
    (('action = "reject"', 'action = "maybe"'), "firewall.rule[0].action", "one of accept"),
    (('protocol = "tcp"', 'protocol = "icmp"'), "firewall.rule[0].port", "needs protocol tcp"),
    (('protocol = "tcp"', 'protocol = "xtp"'), "firewall.rule[0].protocol", "must be one of"),
    (('state = ["new"]', 'state = ["old"]'), "firewall.rule[0].state[0]", "must be one of"),
    (('from = "wan"', 'from = "dmz"'), "firewall.rule[0].from", "no interface is in zone"),
    (('from = "wan"', 'chain = "input"\nto = "lan"'), "firewall.rule[0].to", "no output zone"),
])
def test_bad_firewall_rules(change: tuple[str, str], key: str, reason: str) -> None:
    e = err(FWRULE.replace(*change))
    assert e.key == key and reason in e.reason


def test_bad_rp_filter() -> None:
    e = err(MIN.replace('zone = "lan"', 'zone = "lan"\nrp_filter = "paranoid"'))
    assert e.key == "interface[0].rp_filter" and "one of strict" in e.reason


def test_metrics_listen() -> None:
    assert parse(MIN.encode()).metrics.listen == "127.0.0.1:9188"  # loopback by default
    assert parse((MIN + '\n[metrics]\nlisten = ""\n').encode()).metrics.listen == ""
    e = err(MIN + '\n[metrics]\nlisten = "9188"\n')
    assert e.key == "metrics.listen" and "ADDRESS:PORT" in e.reason


def test_masquerade6_parsed_and_checked() -> None:
    v6 = MIN.replace('address = "203.0.113.1/24"',
                     'address = "203.0.113.1/24"\naddress6 = "2001:db8:2::1/64"')
    cfg = parse((v6 + "\n[[nat.masquerade6]]\ninterface = 'wan0'\n"
                 "sources = ['fd00:1::/64']\n").encode())
    (m,) = cfg.nat.masquerade6
    assert m.interface == "wan0" and [str(s) for s in m.sources] == ["fd00:1::/64"]
    e = err(v6 + "\n[[nat.masquerade6]]\ninterface = 'wan0'\nsources = ['10.0.0.0/8']\n")
    assert e.key == "nat.masquerade6[0].sources[0]" and "not an IPv6 network" in e.reason


@pytest.mark.parametrize("change", [
    'name = "lan0\\n"', 'zone = "lan\\n"', 'netns = "lab\\n"',
])
def test_names_ending_in_a_newline_are_refused(change: str) -> None:
    """A "$" anchor matched before a trailing newline: such names passed
    the check and failed at run time."""
    key = change.split(" ")[0]
    if key == "netns":
        text = MIN.replace('zone = "lan"', f'zone = "lan"\n{change}', 1)
    else:
        text = MIN.replace(change.replace("\\n", ""), change, 1)
    assert text != MIN
    assert err(text).key.endswith(key)


def test_metrics_on_a_public_address_is_a_warning() -> None:
    for listen, loud in (("0.0.0.0:9188", True), ("[::]:9188", True), ("192.0.2.1:9188", True),
                         ("127.0.0.1:9188", False), ("[::1]:9188", False),
                         ("localhost:9188", False), ("", False)):
        cfg = parse((MIN + f'\n[metrics]\nlisten = "{listen}"\n').encode())
        (w,) = warnings(cfg) or [None]
        assert (w is not None) == loud, listen
        if loud:
            assert w.startswith("metrics.listen:") and "no authentication" in w


def test_check_prints_the_warning(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text(MIN + '\n[metrics]\nlisten = "0.0.0.0:9188"\n')
    r = subprocess.run([sys.executable, "-m", "router", "check", "-c", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "warning" in r.stderr and "metrics.listen" in r.stderr


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "router.toml"
    os.mkfifo(fifo)
    got: list[BaseException] = []

    def read() -> None:
        try:
            load(fifo)
        except ConfigError as e:
            got.append(e)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert "not a regular file" in str(got[0])
    assert "not a regular file" in str(err_of(lambda: load(tmp_path)))  # a directory


def err_of(f: Callable[[], object]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        f()
    return e.value


def test_size_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "big.toml"
    f.write_bytes(MIN.encode() + b"#" * (MAX_CONFIG_BYTES + 1))
    assert "at most" in str(err_of(lambda: load(f)))


def test_deep_nesting_is_a_config_error() -> None:
    e = err(MIN + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deep" in e.reason


def test_route_validation_is_near_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicate routes were found by comparing each with all before it
    (20,000 routes: 57 s).  Counted in comparisons, not seconds."""
    n = 3000
    routes = "".join(f'\n[[route]]\ndestination = "10.{i >> 8}.{i & 255}.0/24"\n'
                     f'gateway = "203.0.113.9"\n' for i in range(n))
    calls = [0]
    eq = IPv4Network.__eq__

    def counting(a: IPv4Network, b: object) -> bool:
        calls[0] += 1
        return eq(a, b)
    monkeypatch.setattr(IPv4Network, "__eq__", counting)
    cfg = parse((MIN + routes).encode())
    assert len(cfg.routes) == n
    assert calls[0] < 10 * n
    monkeypatch.undo()
    dup = routes + '\n[[route]]\ndestination = "10.0.5.0/24"\ngateway = "203.0.113.9"\n'
    assert "duplicate route" in err(MIN + dup).reason


def test_sha256_is_of_the_bytes_parsed() -> None:
    raw = MIN.encode()
    assert parse(raw).sha256 == hashlib.sha256(raw).hexdigest()


def test_a_hung_read_fails_the_reload_and_blocks_no_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config on a hung file system: the reload fails after its timeout,
    the event loop keeps running meanwhile, and a second reload is refused
    while the first read is still stuck."""
    release = threading.Event()

    def stuck(path: str) -> None:
        release.wait(30)
        raise ConfigError(path, "", "late")
    monkeypatch.setattr(source, "load", stuck)

    async def main() -> tuple[str, str, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        t = asyncio.create_task(tick())
        first = str(await _raises(source.read_config("/etc/x.toml", timeout=0.5)))
        second = str(await _raises(source.read_config("/etc/x.toml", timeout=0.5)))
        t.cancel()
        return first, second, ticks
    first, second, ticks = asyncio.run(main())
    release.set()
    assert "not read within 0.5 s" in first
    assert "has not returned yet" in second
    assert ticks >= 20  # the loop ran all along


async def _raises(coro: Awaitable[object]) -> ConfigError:
    try:
        await coro
    except ConfigError as e:
        return e
    raise AssertionError("no ConfigError")


@pytest.mark.parametrize("key,section", [("socket", "control"), ("tun_device", "dataplane"),
                                         ("state_file", "conntrack"), ("state_key", "conntrack")])
def test_paths_with_control_characters_or_dotdot_are_refused(key: str, section: str) -> None:
    """The config fuzzer found a socket path with a form feed that `config
    show` could not write back; such a path is a mistake in any case."""
    for bad in ("/run/rou\\fter/x", "/run/a\\nb", "/var/lib/../etc/x"):
        e = err(MIN + f'\n[{section}]\n{key} = "{bad}"\n')
        assert e.key == f"{section}.{key}" and "control characters" in e.reason
