"""atheris harness over what the sync peer (or anyone who reaches the sync
port) sends: datagrams of conntrackd's protocol.

    python tests/fuzz/fuzz_ha.py sync [libFuzzer flags] [corpus dirs]
    python tests/fuzz/fuzz_ha.py seeds DIR     writes the seed corpus

Any datagram is split into messages or counted as malformed by a known
reason, never an exception; every message goes through an FTFW channel and
into an external cache, and the invariants hold: the cache holds only
parsed connections (family 4 or 6, addresses of that family, ports in
range) and never more than its limit; the channel's queues stay bounded by
the resend queue and the table; what it sends back parses again.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from router.ha import wire
    from router.ha.caches import External, Internal
    from router.ha.channel import Channel
    from router.ha.entries import to_entry
    from router.ha.wire import SyncCt

LIMIT = 64
_t = [0.0]
_ch = Channel(True, 8, 32, 1500, first_seq=1)
_ext = External(LIMIT)
_int = Internal()
_ch.on_acked = _int.delivered
for _i in range(4):  # something in the resend queue for ACK/NACK to find
    _ch.queue(_int.update(SyncCt(4, 17, "192.168.1.10", "198.51.100.1", 1000 + _i, 53, 8, 30)),
              0.0)


def fuzz_sync(data: bytes) -> None:
    msgs, errors = wire.split(data)
    assert all(e in wire.ERRORS for e in errors)
    _t[0] += 0.05
    for m in msgs:
        what = _ch.receive(m, _t[0])
        if what == "data" and m.ct is not None:
            _ext.apply(m.type, m.ct)
            to_entry(m.ct)  # a commit's view of it: an entry or None, no exception
        elif what == "resync":
            for key in list(_int.live):
                _ch.queue(key, _t[0])
    assert len(_ext) <= LIMIT
    for ct in _ext.entries.values():
        assert ct.family in (4, 6) and 0 <= ct.sport <= 65535 and 0 <= ct.dport <= 65535
        assert (":" in ct.src) == (ct.family == 6)
    assert len(_ch.rs) <= _ch.resend_max
    assert len(_ch.obj_out) <= len(_int.live) + len(_int.dead)
    _ch.tick(_t[0] + 1.0)
    for d in _ch.build(_int.lookup, 1 << 20, _t[0]):
        back, errs = wire.split(d)
        assert not errs and back


def seeds() -> list[bytes]:
    ct = SyncCt(4, 6, "192.168.1.10", "198.51.100.1", 40000, 80, 0x1E, 300, state=3,
                snat="198.51.100.10", spat=61000)
    ct6 = SyncCt(6, 17, "2001:db8:1::10", "2001:db8:100::1", 5000, 53, 0x0A, 30)
    icmp = SyncCt(4, 1, "192.168.1.10", "198.51.100.1", 7, 8 << 8, 0x0A, 30,
                  snat="198.51.100.10", spat=9)
    return [wire.ct_msg(wire.T_CT_NEW, wire.F_HELLO, 2, ct),
            wire.ct_msg(wire.T_CT_UPD, 0, 3, ct6) + wire.ct_msg(wire.T_CT_DEL, 0, 4, icmp),
            wire.ctl(wire.F_ACK, 5, 1, 3), wire.ctl(wire.F_NACK, 6, 2, 4),
            wire.ctl(wire.F_RESYNC, 7), wire.ctl(wire.F_ALIVE | wire.F_HELLO_BACK, 8)]


def main() -> None:
    target = sys.argv.pop(1) if len(sys.argv) > 1 else "sync"
    if target == "seeds":
        os.makedirs(sys.argv[1], exist_ok=True)
        for n, item in enumerate(seeds()):
            with open(os.path.join(sys.argv[1], f"seed-{n}"), "wb") as f:
                f.write(item)
        return
    fn: Any = {"sync": fuzz_sync}[target]
    atheris.Setup(sys.argv, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
