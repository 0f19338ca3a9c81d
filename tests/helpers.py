"""What tests of every layer share: the smallest lab a config describes.

``TWO_LINKS`` is a LAN and a WAN link, each in a zone of its own, with
nothing else: the unit tests of the config extend it key by key, and the
C core's lab (tests/native/conftest.py) adds its route, NAT and policy.
``LAN_OUT`` lets the LAN out to the WAN behind the WAN's address.
``SERVICES_LAN`` is a LAN link attached to a kernel interface, with LAN
services (DHCP pool) on it: the start of a gateway's config.
Packet builders and checksum checks are in ``tests/packets.py``.
"""

from router.config import ConfigError, parse

TWO_LINKS = """
[[interface]]
name = "lan0"
address = "192.168.1.1/24"
zone = "lan"

[[interface]]
name = "wan0"
address = "203.0.113.1/24"
zone = "wan"
"""

LAN_OUT = """
[[nat.masquerade]]
interface = "wan0"

[[firewall.policy]]
from = "lan"
to = "wan"
action = "accept"
"""

SERVICES_LAN = """
[[interface]]
name = "lan0"
attach = "eth1"
address = "192.168.1.1/24"
address6 = "2001:db8:1::1/64"
zone = "lan"
"""
POOL = '[interface.lan]\npool = "192.168.1.100-192.168.1.199"\n'


def refused(text: str, path: str = "cfg.toml") -> ConfigError:
    """The error parsing config ``text`` raises (the test fails if none)."""
    try:
        parse(text.encode(), path)
    except ConfigError as e:
        return e
    raise AssertionError("the config was accepted")
