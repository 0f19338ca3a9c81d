"""What tests of every layer share: the smallest lab a config describes.

``TWO_LINKS`` is a LAN and a WAN link, each in a zone of its own, with
nothing else: the unit tests of the config extend it key by key, and the
C core's lab (tests/native/conftest.py) adds its route, NAT and policy.
``LAN_OUT`` lets the LAN out to the WAN behind the WAN's address.
Packet builders and checksum checks are in ``tests/packets.py``.
"""

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
