"""The state file is untrusted input: authenticated, bounded, validated
field by field; written and read without following paths others control."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from router import safepath, state
from router.datapath import CtEntry

KEY = bytes(range(32))
E = CtEntry(slot=3, family=4, proto=6, state="ESTABLISHED", status=0x16,
            src=("192.168.1.2", "198.51.100.10"), dst=("198.51.100.10", "203.0.113.1"),
            sport=(40000, 443), dport=(443, 40000), timeout_ms=400_000_000, age_ms=5000,
            packets=(10, 9), bytes=(1000, 900),
            tcp_window=((1, 2, 3, 7, 0x22, 4), (5, 6, 7, 7, 0x22, 8)))
U = CtEntry(slot=4, family=6, proto=17, state=None, status=0x2,
            src=("2001:db8:1::2", "2001:db8:2::9"), dst=("2001:db8:2::9", "2001:db8:1::2"),
            sport=(5000, 53), dport=(53, 5000), timeout_ms=30_000, age_ms=0,
            packets=(1, 1), bytes=(60, 80))


def forge(items: list[dict[str, Any]], key: bytes = KEY, **head: Any) -> bytes:
    """A file written with the right key but the given (raw) contents."""
    h = {"format": state.FORMAT, "version": state.VERSION, "saved_at": 1_700_000_000.0,
         "entries": len(items), **head}
    lines = [json.dumps(h).encode()] + [json.dumps(e).encode() for e in items]
    body = b"".join(x + b"\n" for x in lines)
    import hashlib
    import hmac
    return body + json.dumps({"mac": hmac.new(key, body, hashlib.sha256).hexdigest()}).encode()


def test_round_trip() -> None:
    saved = state.decode(state.encode([E, U], KEY, 1_700_000_000.0), KEY, 100)
    assert saved.saved_at == 1_700_000_000.0 and saved.count == 2
    assert list(saved.entries()) == [E, U]


def test_another_key_or_a_changed_byte_is_refused() -> None:
    data = state.encode([E], KEY)
    with pytest.raises(state.StateError, match="authentication failed"):
        state.decode(data, bytes(32), 100)
    changed = data.replace(b"40000", b"40001", 1)
    with pytest.raises(state.StateError, match="authentication failed"):
        state.decode(changed, KEY, 100)
    with pytest.raises(state.StateError, match="no authentication line"):
        state.decode(data.rstrip(b"\n").rpartition(b"\n")[0], KEY, 100)


def good() -> dict[str, Any]:
    return json.loads(json.dumps(asdict(E)))


@pytest.mark.parametrize("field,value,why", [
    ("sport", [70000, 443], "sport"),
    ("packets", [-1, 0], "packets"),
    ("timeout_ms", 10**15, "timeout_ms"),
    ("timeout_ms", 0, "timeout_ms"),
    ("family", 5, "family"),
    ("family", True, "family"),
    ("state", "DANCING", "state"),
    ("src", ["999.1.1.1", "198.51.100.10"], "src"),
    ("src", ["2001:db8::1", "198.51.100.10"], "src"),
    ("dst", "198.51.100.10", "dst"),
    ("proto", 300, "proto"),
    ("age_ms", -5, "age_ms"),
    ("tcp_window", [[1, 2, 3, 99, 0, 0], [1, 2, 3, 0, 0, 0]], "tcp_window"),
    ("tcp_window", [[1, 2, 3]], "tcp_window"),
    ("status", 1.5, "status"),
])
def test_each_bad_field_refuses_the_whole_file(field: str, value: Any, why: str) -> None:
    bad = good()
    bad[field] = value
    with pytest.raises(state.StateError, match=f"entry 2: {why}"):
        state.decode(forge([good(), bad]), KEY, 100)


def test_unknown_and_missing_fields() -> None:
    extra = {**good(), "hole": 1}
    with pytest.raises(state.StateError, match="unknown fields"):
        state.decode(forge([extra]), KEY, 100)
    missing = good()
    del missing["dport"]
    with pytest.raises(state.StateError, match="missing"):
        state.decode(forge([missing]), KEY, 100)


@pytest.mark.parametrize("head,why", [
    ({"saved_at": float("nan")}, "NaN is not a number"),
    ({"saved_at": 1e300}, "saved_at"),
    ({"saved_at": "yesterday"}, "saved_at"),
    ({"entries": 7}, "entries"),
    ({"version": 2}, "version"),
])
def test_bad_headers(head: dict[str, Any], why: str) -> None:
    data = forge([good()], **head)
    with pytest.raises(state.StateError, match=why):
        state.decode(data, KEY, 100)


def test_nan_inside_an_entry() -> None:
    data = forge([good()]).replace(b'"age_ms": 5000', b'"age_ms": NaN')
    with pytest.raises(state.StateError):
        state.decode(data, KEY, 100)


def test_size_is_bounded_by_the_table() -> None:
    data = state.encode([E] * 20, KEY)
    state.decode(data, KEY, 20)
    with pytest.raises(state.StateError, match="more than a table of 2"):
        state.decode(data, KEY, 2)
    with pytest.raises(state.StateError, match="entries"):
        state.decode(data, KEY, 19)


def test_not_a_state_file() -> None:
    with pytest.raises(state.StateError, match="not a conntrack state file"):
        state.decode(b"root:x:0:0:root:/root:/bin/bash\n", KEY, 100)
    assert state.looks_like_state(b'{"format": "tun-router-conntrack", "version": 2}')
    assert not state.looks_like_state(b"[interface]\n")


def test_check_path(tmp_path: Path) -> None:
    assert state.check_path(str(tmp_path / "none.json")) is None
    assert "directory" in (state.check_path(str(tmp_path)) or "")
    other = tmp_path / "passwd"
    other.write_text("root:x:0:0::/root:/bin/sh\n")
    assert "not a conntrack state file" in (state.check_path(str(other)) or "")
    mine = tmp_path / "ct.json"
    mine.write_bytes(state.encode([E], KEY))
    assert state.check_path(str(mine)) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in (state.check_path(str(fifo)) or "")


def test_save_is_private_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "d" / "ct.json"
    state.save(str(path), [E], KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["ct.json"]
    # A save that fails removes its temporary file.
    os.chmod(path.parent, 0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(OSError):
                state.save(str(path), [E], KEY)
    finally:
        os.chmod(path.parent, 0o700)
    bad = tmp_path / "d" / "x.json"
    bad.mkdir()  # renaming over a directory fails after the temporary file is written
    with pytest.raises(OSError):
        state.save(str(bad), [E], KEY)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ct.json", "x.json"]


def test_save_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("precious\n")
    d = tmp_path / "d"
    d.mkdir(mode=0o700)
    (d / ".ct.json.tmp").symlink_to(target)   # a planted temporary file
    (d / "ct.json").symlink_to(target)
    state.save(str(d / "ct.json"), [E], KEY)
    assert target.read_text() == "precious\n"
    assert not (d / "ct.json").is_symlink()


def test_key_is_made_private_and_refused_when_readable(tmp_path: Path) -> None:
    kdir = tmp_path / "k"
    kdir.mkdir(mode=0o755)
    key = state.load_key(str(kdir / "state.key"))
    assert len(key) == 32 and state.load_key(str(kdir / "state.key")) == key
    assert stat.S_IMODE((kdir / "state.key").stat().st_mode) == 0o600
    os.chmod(kdir / "state.key", 0o644)
    with pytest.raises(state.StateError, match="readable by others"):
        state.load_key(str(kdir / "state.key"))
    os.chmod(kdir / "state.key", 0o600)
    os.chmod(kdir, 0o777)
    with pytest.raises(state.StateError, match="writable by other users"):
        state.load_key(str(kdir / "state.key"))


def test_open_dir_refuses_a_planted_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "open"
    os.chmod(tmp_path, 0o777)  # a directory others can write: links there are not followed
    try:
        link.symlink_to(tmp_path / "real")
        os.lchown(link, 65534, 65534)
        with pytest.raises(safepath.UnsafePath):
            safepath.open_dir(str(link / "x"), create=0o700, trusted=False)
    finally:
        os.chmod(tmp_path, 0o700)
    fd = safepath.open_dir("/var/run", trusted=False)  # root's own symlink: followed
    os.close(fd)


def test_open_dir_follows_a_relative_link_root_made(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("../run")
    fd = safepath.open_dir(str(tmp_path / "var" / "run"), trusted=False)
    try:
        assert os.fstat(fd).st_ino == (tmp_path / "run").stat().st_ino
    finally:
        os.close(fd)
