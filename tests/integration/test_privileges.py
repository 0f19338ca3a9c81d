"""Least privilege: the router as an ordinary user.

Three ways, as the deployment notes describe them: started as root and
dropping to the service user (keeping only CAP_NET_ADMIN); started as an
ordinary user with only CAP_NET_ADMIN (setpriv); and with no capability at
all, attaching to TUN devices created beforehand for its user.  The last two
run inside a namespace of their own, with a private tun node the user owns
(this machine's /dev/net/tun is 0600 root).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LAN_OUT
from tests.integration.conftest import ROOT, SERVER, USER, NetLab, namespaces, run

pytestmark = pytest.mark.netns
CAP_NET_ADMIN = 1 << 12


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.split()[0] if v.split() else ""
    return out


def router_pid(parent: subprocess.Popen[str] | subprocess.Popen[bytes]) -> int:
    """The router process: the Popen itself or its (setpriv/ip netns) exec."""
    return parent.pid


@pytest.fixture
def userdir(service_user: pwd.struct_passwd) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rtpriv-"))
    os.chown(d, service_user.pw_uid, service_user.pw_gid)
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_root_start_drops_to_the_service_user(netlab: NetLab, userdir: Path,
                                              service_user: pwd.struct_passwd) -> None:
    netlab.stop_router()
    state = userdir / "state" / "conntrack.json"
    text = netlab.config.read_text()
    text = re.sub(r'state_file = "[^"]*"', f'state_file = "{state}"', text)
    # The config must be readable by the user for reloads, as /etc/router is.
    netlab.config = userdir / "router.toml"
    netlab.config.write_text(text + f'\n[service]\nuser = "{USER}"\n')
    netlab.start_router()
    assert netlab.router is not None
    # (router.started is in the log already, from the fixture's first run.)
    deadline = time.monotonic() + 10
    while not netlab.events("router.privileges_dropped") and time.monotonic() < deadline:
        time.sleep(0.05)
    st = proc_status(netlab.router.pid)
    assert st["Uid"] == str(service_user.pw_uid) and st["Gid"] == str(service_user.pw_gid)
    assert int(st["CapEff"], 16) == CAP_NET_ADMIN
    assert int(st["CapPrm"], 16) == CAP_NET_ADMIN
    assert int(st["CapBnd"], 16) == CAP_NET_ADMIN
    assert st["NoNewPrivs"] == "1"
    # So does every thread: the data plane's worker starts after the drop.
    tasks = list(Path(f"/proc/{netlab.router.pid}/task").iterdir())
    assert len(tasks) >= 2
    for t in tasks:
        ts = proc_status(int(t.name))
        assert ts["Uid"] == str(service_user.pw_uid) and int(ts["CapEff"], 16) == CAP_NET_ADMIN
    # The control socket is the user's and not world-accessible.
    sock = os.stat(netlab.socket)
    assert sock.st_uid == service_user.pw_uid and oct(sock.st_mode & 0o777) == "0o660"
    # It forwards, answers, reloads ...
    out = netlab.ns(netlab.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)
    assert "2 received" in out.stdout
    assert netlab.ctl_json("reload")["applied"] is True
    assert netlab.ctl_json("status")["conntrack"]["count"] >= 1
    # ... and saves its table where it may write.
    assert netlab.stop_router() == 0
    assert state.exists() and state.stat().st_uid == service_user.pw_uid
    (ev,) = netlab.events("router.privileges_dropped")
    assert ev["user"] == USER and ev["keep_net_admin"] is True


def test_no_thread_left_to_the_user_falls_back_to_the_event_loop(
        netlab: NetLab, userdir: Path, service_user: pwd.struct_passwd) -> None:
    """A service user at its process limit (RLIMIT_NPROC counts threads)
    cannot get the worker thread: the event loop moves the packets."""
    netlab.stop_router()
    text = re.sub(r'state_file = "[^"]*"', 'state_file = ""', netlab.config.read_text())
    # No metrics: binding them resolves the address in a thread, which the
    # limit refuses too.
    text = text.replace('listen = "127.0.0.1:0"', 'listen = ""')
    netlab.config = userdir / "router.toml"
    netlab.config.write_text(text + f'\n[service]\nuser = "{USER}"\n')
    netlab.start_router(prefix=("prlimit", "--nproc=1:1", "--"))
    deadline = time.monotonic() + 10
    while not netlab.events("dp.workers_failed") and time.monotonic() < deadline:
        time.sleep(0.05)
    (ev,) = netlab.events("dp.workers_failed")
    assert ev["fallback"] == "event loop" and "Resource temporarily unavailable" in ev["reason"]
    out = netlab.ns(netlab.lan, "ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER)
    assert "2 received" in out.stdout
    assert netlab.ctl_json("status")["workers"] == []
    assert netlab.stop_router() == 0


def _unprivileged_config(d: Path, precreated: bool) -> Path:
    pre = "precreated = true\n" if precreated else ""
    cfg = d / "router.toml"
    cfg.write_text(f'''
[[interface]]
name = "lan0"
address = "192.168.77.1/24"
zone = "lan"
{pre}
[[interface]]
name = "wan0"
address = "203.0.113.1/24"
zone = "wan"
{pre}
{LAN_OUT}

[control]
socket = "{d}/router.sock"

[metrics]
listen = "127.0.0.1:0"

[conntrack]
state_file = "{d}/state/conntrack.json"
state_key = "{d}/state.key"

[dataplane]
tun_device = "{d}/tun"
''')
    return cfg


@pytest.fixture
def router_ns(netlab: NetLab) -> Iterator[str]:
    with namespaces(f"{netlab.lan[:-1]}r") as (ns,):
        yield ns


def _run_as_user(netlab: NetLab, ns: str, cfg: Path, caps: str) -> subprocess.Popen[bytes]:
    log = open(cfg.parent / "router.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, "setpriv", f"--reuid={USER}", f"--regid={USER}",
         "--clear-groups", f"--inh-caps=-all{caps}", f"--ambient-caps=-all{caps}",
         f"--bounding-set=-all{caps}", sys.executable, "-m", "router", "run", "-c", str(cfg)],
        stdout=log, stderr=log, cwd=ROOT)
    netlab.procs.append(p)  # type: ignore[arg-type]
    sock = cfg.parent / "router.sock"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not sock.exists():
        if p.poll() is not None:
            raise AssertionError((cfg.parent / "router.log").read_text())
        time.sleep(0.05)
    assert sock.exists(), (cfg.parent / "router.log").read_text()
    return p


def _fail_as_user(ns: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    """Runs the router as the user with no capability, expecting it to stop."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, "setpriv", f"--reuid={USER}", f"--regid={USER}",
         "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m",
         "router", "run", "-c", str(cfg)], capture_output=True, text=True, timeout=30,
        cwd=ROOT)


def _ping_router(ns: str) -> None:
    # The kernel side of lan0 is this namespace: it reaches the router's own
    # address through the device, and the router answers from userspace.
    r = run("ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "2",
            "192.168.77.1", check=False)
    assert "2 received" in r.stdout, r.stdout + r.stderr


def _private_tun_node(d: Path, uid: int) -> None:
    os.mknod(d / "tun", 0o600 | 0o020000, os.makedev(10, 200))
    os.chown(d / "tun", uid, -1)


def _caps_of_router(p: subprocess.Popen[bytes]) -> dict[str, str]:
    # ip netns exec and setpriv exec in place: the Popen pid is the router.
    return proc_status(p.pid)


def test_ordinary_user_with_only_net_admin(netlab: NetLab, userdir: Path, router_ns: str,
                                           service_user: pwd.struct_passwd) -> None:
    _private_tun_node(userdir, service_user.pw_uid)
    cfg = _unprivileged_config(userdir, precreated=False)
    p = _run_as_user(netlab, router_ns, cfg, ",+net_admin")
    st = _caps_of_router(p)
    assert st["Uid"] == str(service_user.pw_uid)
    assert int(st["CapEff"], 16) == CAP_NET_ADMIN
    # It created and configured its devices itself.
    r = run("ip", "-n", router_ns, "-o", "link", "show", "lan0")
    assert "UP" in r.stdout and "mtu 1500" in r.stdout
    run("ip", "-n", router_ns, "addr", "add", "192.168.77.2/24", "dev", "lan0")
    _ping_router(router_ns)
    r2 = run(sys.executable, "-m", "router.ctl", "-S", str(userdir / "router.sock"), "status")
    assert "interfaces: 2" in r2.stdout
    p.terminate()
    assert p.wait(timeout=15) == 0


def test_no_capability_with_precreated_devices(netlab: NetLab, userdir: Path, router_ns: str,
                                               service_user: pwd.struct_passwd) -> None:
    _private_tun_node(userdir, service_user.pw_uid)
    for dev, addr in (("lan0", "192.168.77.2/24"), ("wan0", "203.0.113.10/24")):
        run("ip", "-n", router_ns, "tuntap", "add", "dev", dev, "mode", "tun", "user", USER)
        run("ip", "-n", router_ns, "addr", "add", addr, "dev", dev)
        run("ip", "-n", router_ns, "link", "set", dev, "up")
    cfg = _unprivileged_config(userdir, precreated=True)
    p = _run_as_user(netlab, router_ns, cfg, "")
    st = _caps_of_router(p)
    assert st["Uid"] == str(service_user.pw_uid)
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0
    _ping_router(router_ns)
    p.terminate()
    assert p.wait(timeout=15) == 0
    # Without the precreated flag, the same user cannot create devices.
    cfg2 = _unprivileged_config(userdir, precreated=False)
    cfg2.write_text(cfg2.read_text().replace('name = "lan0"', 'name = "lan9"'))
    r = _fail_as_user(router_ns, cfg2)
    assert r.returncode == 1 and "needs CAP_NET_ADMIN" in r.stderr, r.stderr


def test_precreated_devices_need_multi_queue_for_queues(
        netlab: NetLab, userdir: Path, router_ns: str, service_user: pwd.struct_passwd) -> None:
    """dataplane.queues on devices created beforehand: a device created
    without multi_queue is refused with the command that fixes it; created
    with it, the router attaches each queue with no capability at all."""
    _private_tun_node(userdir, service_user.pw_uid)
    run("ip", "-n", router_ns, "tuntap", "add", "dev", "lan0", "mode", "tun", "multi_queue",
        "user", USER)
    run("ip", "-n", router_ns, "tuntap", "add", "dev", "wan0", "mode", "tun", "user", USER)
    cfg = _unprivileged_config(userdir, precreated=True)
    cfg.write_text(cfg.read_text().replace("[dataplane]\n", "[dataplane]\nqueues = 2\n"))
    r = _fail_as_user(router_ns, cfg)
    assert r.returncode == 1
    assert "interface wan0" in r.stderr and "multi_queue" in r.stderr, r.stderr
    run("ip", "-n", router_ns, "tuntap", "del", "dev", "wan0", "mode", "tun")
    run("ip", "-n", router_ns, "tuntap", "add", "dev", "wan0", "mode", "tun", "multi_queue",
        "user", USER)
    for dev, addr in (("lan0", "192.168.77.2/24"), ("wan0", "203.0.113.10/24")):
        run("ip", "-n", router_ns, "addr", "add", addr, "dev", dev)
        run("ip", "-n", router_ns, "link", "set", dev, "up")
    p = _run_as_user(netlab, router_ns, cfg, "")
    assert int(_caps_of_router(p)["CapEff"], 16) == 0
    _ping_router(router_ns)
    st = run(sys.executable, "-m", "router.ctl", "-S", str(userdir / "router.sock"), "--json",
             "status")
    assert len(json.loads(st.stdout)["workers"]) == 2
    q = run("ip", "netns", "exec", router_ns, "ls", "/sys/class/net/lan0/queues").stdout.split()
    assert "rx-1" in q
    p.terminate()
    assert p.wait(timeout=15) == 0
