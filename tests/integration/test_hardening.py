"""The router as an attacker's target, end to end: hostile files and local
clients (issue "Hardened for real networks").  Each test here failed on the
build before its fix."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import SERVER, USER, NetLab, run


def test_a_fifo_as_config_blocks_no_reload_and_no_stop(netlab: NetLab) -> None:
    """Reading the config ran on the event loop: a FIFO in its place blocked
    the loop for good, SIGTERM was ignored, and only SIGKILL (losing the
    table) ended the router."""
    text = netlab.config.read_text()
    netlab.config.unlink()
    os.mkfifo(netlab.config)
    r = netlab.ctl("reload", check=False)
    assert r.returncode != 0 and "not a regular file" in r.stderr
    assert netlab.ctl_json("status")["reloads"]["failed"] == 1  # the loop still serves
    netlab.config.unlink()
    netlab.config.write_text(text)
    assert netlab.stop_router() == 0
    assert netlab.events("ct.saved") and netlab.events("router.stopped")


# ---- the service user against root --------------------------------------

RACER = """
import os, sys, time
path, victim, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
tmp = path + ".x"
end = time.monotonic() + seconds
tries = planted = 0
while time.monotonic() < end:
    tries += 1
    try:
        os.symlink(victim, tmp)
        os.rename(tmp, path)
        planted += 1
    except OSError:
        pass
print(tries, planted, flush=True)
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A root-owned directory everyone may enter, for paths the router makes."""
    d = Path(tempfile.mkdtemp(prefix="rtharden-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_user(cmd: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", *cmd]


def test_the_service_user_cannot_turn_the_control_socket_into_root_access(
        netlab: NetLab, open_dir: Path, service_user: pwd.struct_passwd) -> None:
    """Root used to chmod/chown the socket by path after bind(), in a
    directory the service user owned: swapping in a symlink handed any
    root-owned file to the user.  A racing loop, run as the service user
    while the router restarts, must get nothing: the directory is root's."""
    victim = open_dir / "victim"
    victim.write_text("root only\n")
    os.chmod(victim, 0o600)
    sock = open_dir / "run" / "router.sock"
    netlab.stop_router()
    text = netlab.config.read_text().replace(f'"{netlab.socket}"', f'"{sock}"')
    netlab.socket = str(sock)
    netlab.config.write_text(text + f'\n[service]\nuser = "{USER}"\n')
    os.chmod(netlab.config.parent, 0o755)
    netlab.start_router()
    st = os.stat(sock.parent)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755  # root's, not the user's
    racer = subprocess.Popen(as_user([sys.executable, "-c", RACER, str(sock), str(victim),
                                      "6"]), stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(4):
            assert netlab.stop_router() == 0
            netlab.start_router()
    finally:
        out, _ = racer.communicate(timeout=30)
    tries, planted = map(int, out.split())
    assert tries > 100 and planted == 0
    v = os.stat(victim)
    assert v.st_uid == 0 and stat.S_IMODE(v.st_mode) == 0o600
    assert os.stat(sock).st_uid == service_user.pw_uid  # the socket itself is the user's


def test_a_socket_directory_the_user_owns_is_taken_back(
        netlab: NetLab, open_dir: Path, service_user: pwd.struct_passwd) -> None:
    """What an earlier version left: the directory belongs to the service
    user, with a symlink planted where the socket goes.  Root takes the
    directory back through its descriptor and removes the link unfollowed."""
    victim = open_dir / "victim"
    victim.write_text("root only\n")
    os.chmod(victim, 0o600)
    run_dir = open_dir / "run"
    run_dir.mkdir()
    os.chown(run_dir, service_user.pw_uid, service_user.pw_gid)
    (run_dir / "router.sock").symlink_to(victim)
    netlab.stop_router()
    sock = run_dir / "router.sock"
    text = netlab.config.read_text().replace(f'"{netlab.socket}"', f'"{sock}"')
    netlab.socket = str(sock)
    netlab.config.write_text(text + f'\n[service]\nuser = "{USER}"\n')
    os.chmod(netlab.config.parent, 0o755)
    netlab.start_router()
    assert os.stat(run_dir).st_uid == 0
    v = os.stat(victim)
    assert v.st_uid == 0 and stat.S_IMODE(v.st_mode) == 0o600
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)


# ---- the state file is untrusted input -----------------------------------

def _state(netlab: NetLab) -> Path:
    return netlab.workdir / "state" / "conntrack.json"


@pytest.mark.parametrize("content", [
    b'{"format": "tun-router-conntrack", "version": 3, "saved_at": NaN, "entries": 0}\n',
    b'{"format": "tun-router-conntrack", "version": 3, "saved_at": 1e300, "entries": 1}\n'
    b'{"family": 9}\n{"mac": "00"}\n',
    b'{"format": "tun-router-conntrack"' + b" " * 5_000_000 + b"}",
])
def test_a_forged_state_file_starts_the_router_empty_every_time(netlab: NetLab,
                                                                  content: bytes) -> None:
    """Such files crashed every start with a traceback (the name was kept);
    a big one took 540 MB.  Now: refused, renamed aside, logged, and the
    router runs, then and at the next start."""
    netlab.stop_router()
    _state(netlab).write_bytes(content)
    netlab.start_router()
    (ev,) = netlab.events("ct.state_refused")
    assert ev["reason"]
    assert _state(netlab).with_name("conntrack.json.refused").exists()
    assert netlab.ctl_json("conntrack", "list") == []
    r = netlab.ns(netlab.lan, "ping", "-c", "1", "-W", "2", SERVER)
    assert "1 received" in r.stdout
    assert netlab.stop_router() == 0
    netlab.start_router()
    assert len(netlab.events("ct.state_refused")) == 1
    assert netlab.ctl_json("status")["pid"] == netlab.router.pid  # type: ignore[union-attr]


def test_a_state_file_that_is_not_one_is_left_alone(netlab: NetLab) -> None:
    """state_file naming some other file: never renamed, never overwritten,
    and `router check` says why."""
    netlab.stop_router()
    other = netlab.workdir / "state" / "precious.txt"
    other.write_text("not a table\n")
    text = netlab.config.read_text().replace(f'"{_state(netlab)}"', f'"{other}"')
    netlab.config.write_text(text)
    r = subprocess.run([sys.executable, "-m", "router", "check", "-c", str(netlab.config)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not a conntrack state file" in r.stderr
    netlab.start_router()
    assert netlab.events("ct.state_disabled")
    assert netlab.stop_router() == 0
    assert other.read_text() == "not a table\n"
    assert not netlab.events("ct.saved")[1:]  # only the fixture's first run saved


# ---- local clients against the control plane ------------------------------

def _metrics_addr(netlab: NetLab) -> tuple[str, int]:
    host, _, port = netlab.ctl_json("status")["metrics"].rpartition(":")
    return host, int(port)


def test_slow_metrics_clients_cannot_take_the_control_socket(netlab: NetLab) -> None:
    """About 1,000 slow connections to the metrics endpoint used to use up a
    1024 open-file limit, after which the control socket failed with a
    traceback.  Now the metrics serve 16 at a time, refuse the rest at once
    (logged), and the control socket answers throughout."""
    netlab.stop_router()
    netlab.start_router(prefix=("prlimit", "--nofile=1024:1024", "--"))
    addr = _metrics_addr(netlab)
    conns = []
    try:
        for _ in range(1000):
            s = socket.create_connection(addr, timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")  # and never finishes
            conns.append(s)
        for _ in range(3):
            assert netlab.ctl_json("status")["conntrack"]["max"] > 0
        (ev, *_) = netlab.events("metrics.refused")
        assert ev["max_clients"] == 16 and ev["refused"] >= 1
    finally:
        for s in conns:
            s.close()
    # A real scrape works again.
    r = run("curl", "-sS", "--max-time", "10", f"http://{addr[0]}:{addr[1]}/metrics")
    assert "node_nf_conntrack_entries " in r.stdout


def test_a_client_dribbling_headers_is_cut_off(netlab: NetLab) -> None:
    """Each header line had its own 5 s timeout and the request none: one
    header every 4 s held a connection for ever.  The whole request now has
    5 seconds."""
    addr = _metrics_addr(netlab)
    s = socket.create_connection(addr, timeout=15)
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    start = time.monotonic()
    closed_after = None
    for _ in range(5):
        time.sleep(2)
        try:
            s.sendall(b"X-Slow: 1\r\n")
            s.settimeout(0.1)
            if s.recv(100) == b"":
                closed_after = time.monotonic() - start
                break
        except TimeoutError:
            continue
        except OSError:
            closed_after = time.monotonic() - start
            break
    s.close()
    assert closed_after is not None and closed_after < 9
