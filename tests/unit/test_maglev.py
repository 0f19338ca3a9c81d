"""Maglev lookup tables: balance, weights, and few moves when backends change."""

from collections import Counter
from ipaddress import IPv4Address

from router.config import Backend
from router.tables import lookup_size, maglev


def backends(n: int, weights: list[int] | None = None) -> list[Backend]:
    return [Backend(IPv4Address(f"10.0.0.{i + 1}"), 80, (weights or [1] * n)[i])
            for i in range(n)]


def test_equal_weights_balance() -> None:
    t = maglev(backends(3), 4099)
    shares = Counter(t)
    assert set(shares) == {0, 1, 2} and len(t) == 4099
    for c in shares.values():
        assert abs(c / 4099 - 1 / 3) < 0.01


def test_weights_are_proportional() -> None:
    t = maglev(backends(3, [1, 2, 3]), 4099)
    shares = Counter(t)
    for i, w in enumerate([1, 2, 3]):
        assert abs(shares[i] / 4099 - w / 6) < 0.01


def test_removing_a_backend_moves_few_flows() -> None:
    five = backends(5)
    before = maglev(five, 4099)
    after = maglev(five[:2] + five[3:], 4099)  # backend 2 removed
    old = [five[i] for i in before]
    new = [(five[:2] + five[3:])[i] for i in after]
    moved = sum(1 for o, n in zip(old, new, strict=True) if o != n and o != five[2])
    assert moved / 4099 < 0.05  # only the removed backend's share moves, nearly
    assert sum(1 for o in old if o == five[2]) / 4099 > 0.15


def test_adding_a_backend_moves_few_flows() -> None:
    four = backends(4)
    five = backends(5)
    before = [four[i] for i in maglev(four, 4099)]
    after = [five[i] for i in maglev(five, 4099)]
    moved = sum(1 for o, n in zip(before, after, strict=True) if o != n)
    assert 0.15 < moved / 4099 < 0.25  # about 1/5 go to the new backend


def test_table_size() -> None:
    assert lookup_size(3) == 4099 and lookup_size(100) == 65537
    assert len(maglev(backends(40), lookup_size(40))) == 65537
