"""Restored connections pass the firewall decision a new connection of
their original direction would: a state file (forged or just old) opens no
hole the running config would not."""

from __future__ import annotations

from dataclasses import replace

from router.datapath import CtEntry
from tests.native.conftest import LAN_HOST, ROUTER_LAN, ROUTER_WAN, SERVER, WAN, make_lab
from tests.native.test_dnat import FORWARDS
from tests.packets import IP, TCP


def est(src: tuple[str, str], dst: tuple[str, str], sport: tuple[int, int],
        dport: tuple[int, int], status: int = 0x6) -> CtEntry:
    """An ESTABLISHED, ASSURED TCP entry with 5 days left."""
    return CtEntry(slot=0, family=4, proto=6, state="ESTABLISHED", status=status, src=src,
                   dst=dst, sport=sport, dport=dport, timeout_ms=400_000_000, age_ms=1000,
                   packets=(5, 5), bytes=(500, 500))


INBOUND = est((SERVER, LAN_HOST), (LAN_HOST, SERVER), (4444, 22), (22, 4444))


def test_an_inbound_hole_the_policy_forbids_is_not_restored() -> None:
    """A WAN host reaching a LAN port with forward = drop and no policy
    from wan: the entry is refused (-3), and its packets stay out."""
    lab = make_lab()
    assert lab.dp.restore(INBOUND, lab.now) == -3
    assert lab.entries() == []
    r = lab.send(WAN, bytes(IP(src=SERVER, dst=LAN_HOST) / TCP(sport=4444, dport=22, flags="A")))
    assert r.out_iface == -1


def test_an_outbound_connection_is_restored() -> None:
    lab = make_lab()
    e = est((LAN_HOST, SERVER), (SERVER, ROUTER_WAN), (40000, 443), (443, 40000),
            status=0x6 | 0x10)  # SRC_NAT
    assert lab.dp.restore(e, lab.now) == 0
    assert len(lab.entries()) == 1


def test_a_policy_or_rule_that_allows_it_restores_it() -> None:
    allow = '\n[[firewall.policy]]\nfrom = "wan"\nto = "lan"\naction = "accept"\n'
    assert make_lab(allow).dp.restore(INBOUND, 1_000_000) == 0
    rule = ('\n[[firewall.rule]]\nfrom = "wan"\nprotocol = "tcp"\nport = 22\n'
            'action = "accept"\n')
    assert make_lab(rule).dp.restore(INBOUND, 1_000_000) == 0
    deny = ('\n[[firewall.policy]]\nfrom = "wan"\nto = "lan"\naction = "accept"\n'
            '\n[[firewall.rule]]\nfrom = "wan"\nprotocol = "tcp"\nport = 22\n'
            'action = "drop"\n')
    assert make_lab(deny).dp.restore(INBOUND, 1_000_000) == -3


def test_a_port_forward_restores_only_while_it_exists() -> None:
    e = est((SERVER, LAN_HOST), (ROUTER_WAN, SERVER), (4444, 80), (8080, 4444),
            status=0x6 | 0x20)  # DST_NAT
    assert make_lab(FORWARDS).dp.restore(e, 1_000_000) == 0
    assert make_lab().dp.restore(e, 1_000_000) == -3


def test_the_routers_own_services_follow_the_input_chain() -> None:
    to_router = est((SERVER, ROUTER_WAN), (ROUTER_WAN, SERVER), (4444, 22), (22, 4444))
    closed = '\n[firewall]\ninput = "drop"\n'
    assert make_lab(closed).dp.restore(to_router, 1_000_000) == -3
    from_lan = est((LAN_HOST, ROUTER_LAN), (ROUTER_LAN, LAN_HOST), (4444, 53), (53, 4444))
    lan_ok = closed + '\n[[firewall.rule]]\nchain = "input"\nfrom = "lan"\naction = "accept"\n'
    assert make_lab(lan_ok).dp.restore(from_lan, 1_000_000) == 0


def test_without_nat_the_reply_must_be_the_inverse() -> None:
    lab = make_lab()
    e = est((LAN_HOST, SERVER), (SERVER, ROUTER_WAN), (40000, 443), (443, 40000))  # no SRC_NAT
    assert lab.dp.restore(e, lab.now) == -1
    assert lab.dp.restore(replace(e, dst=(SERVER, LAN_HOST)), lab.now) == 0
