"""The container image, built with podman here and run between two network
namespaces: non-root, NET_ADMIN only, JSON logs, SIGHUP reload, health check,
state saved on stop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, namespaces, run

pytestmark = pytest.mark.netns
IMAGE = "localhost/tun-router:latest"
PODMAN = ["podman", "--runtime", "runc"]


@pytest.fixture(scope="module")
def image() -> str:
    r = subprocess.run(["bash", str(ROOT / "scripts/container.sh"), "build"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return IMAGE


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout,
                          check=check)


def logs(name: str) -> list[dict[str, object]]:
    """The container's log lines (its stdout and stderr), each JSON."""
    out = []
    r = podman("logs", name)
    for line in (r.stdout + r.stderr).splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line JSON: fails the test otherwise
    return out


def wait_log(name: str, event: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in logs(name):
            if ev.get("event") == event:
                return ev
        time.sleep(0.2)
    r = podman("logs", name)
    raise AssertionError(f"no {event}: {(r.stdout + r.stderr)[-2000:]}")


@pytest.fixture
def nets() -> Iterator[tuple[str, str, str]]:
    tag = f"rc{os.getpid() % 100000}"
    with namespaces(f"{tag}r", f"{tag}l", f"{tag}w") as names:
        yield names


def test_container_routes_between_namespaces(image: str, nets: tuple[str, str, str]) -> None:
    rtr, lan, wan = nets
    name = f"tun-router-test-{os.getpid()}"
    cfgdir = Path(tempfile.mkdtemp(prefix="rtctr-"))
    os.chmod(cfgdir, 0o755)
    (cfgdir / "router.toml").write_text((ROOT / "conf/container.toml").read_text())
    podman("rm", "-f", name, check=False)
    try:
        podman("run", "-d", "--name", name, "--network", f"ns:/var/run/netns/{rtr}",
               "--cap-add=NET_ADMIN", "--device", "/dev/net/tun",
               "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
               "-v", f"{cfgdir}:/etc/router:ro", image)
        wait_log(name, "router.started")
        dropped = wait_log(name, "router.privileges_dropped")
        assert dropped["user"] == "router"
        assert dropped["CapEff"] == "0000000000001000"  # CAP_NET_ADMIN and nothing else
        top = podman("top", name, "user", "args").stdout
        assert "router" in top.splitlines()[1].split()[0]
        # Connect its links: lan0 to the LAN namespace, wan0 to the WAN one.
        for dev, ns, addr in (("lan0", lan, "192.168.77.2/24"), ("wan0", wan, "203.0.113.10/24")):
            run("ip", "-n", rtr, "link", "set", dev, "netns", ns)
            run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", lan, "route", "add", "default", "via", "192.168.77.1")
        r = run("ip", "netns", "exec", lan, "ping", "-c", "3", "-i", "0.2", "-W", "2",
                "203.0.113.10")
        assert "3 received" in r.stdout
        srv = subprocess.Popen(["ip", "netns", "exec", wan, "python3", "-m", "http.server",
                                "8080", "--bind", "203.0.113.10", "--directory", str(cfgdir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(50):
                r = run("ip", "netns", "exec", lan, "curl", "-sS", "-m", "2",
                        "http://203.0.113.10:8080/router.toml", check=False)
                if r.returncode == 0:
                    break
                time.sleep(0.1)
            assert "[[interface]]" in r.stdout
        finally:
            srv.kill()
            srv.wait()
        listing = podman("exec", name, "routerctl", "conntrack", "list").stdout
        assert "src=192.168.77.2 dst=203.0.113.10" in listing and "dst=203.0.113.1 " in listing
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        podman("kill", "--signal", "HUP", name)
        wait_log(name, "config.reloaded")
        podman("stop", "-t", "15", name)
        assert podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
        saved = wait_log(name, "ct.saved")
        assert int(str(saved["entries"])) >= 1
    finally:
        podman("rm", "-f", name, check=False)
        shutil.rmtree(cfgdir, ignore_errors=True)


def test_container_on_podman_macvlan_networks_serves_the_simulated_home(
        image: str, tmp_path: Path) -> None:
    """As docs/deployment.md runs it: the container on two podman macvlan
    networks (their parents cabled to the home's switches), conf/home.toml
    mounted: the LAN machines get leases and a resolver from it, resolve
    and load a page through it, and the WAN address is the ISP's lease."""
    name = f"hc{os.getpid() % 10000}"
    home = ["bash", str(ROOT / "scripts/home-lab.sh"), "--podman", "--name", name,
            "--work", str(tmp_path)]
    os.chmod(tmp_path, 0o755)
    try:
        run(*home, "up", timeout=60)
        run(*home, "container", timeout=60)
        ctr = f"{name}-router"
        wait_log(ctr, "router.started", timeout=30)
        run(*home, "clients")
        c1 = f"{name}-c1"
        deadline = time.monotonic() + 40
        while "192.168.1." not in run("ip", "-n", c1, "-4", "addr").stdout:
            assert time.monotonic() < deadline, podman("logs", ctr).stderr[-3000:]
            time.sleep(0.3)
        wan = str(wait_log(ctr, "wan.address")["address"]).split("/")[0]
        assert wan.startswith("198.51.100.")
        r = run("ip", "netns", "exec", c1, "curl", "-4", "-sS", "-m", "5",
                "http://www.isp.example/")
        assert r.stdout.strip() == f"you are {wan}"
        assert any(e.get("event") == "dnsmasq" for e in logs(ctr))  # its lines, as JSON
        listing = podman("exec", ctr, "routerctl", "conntrack", "list").stdout
        assert "dport=53" in listing and f"dst={wan} " in listing
    finally:
        run(*home, "down", timeout=60, check=False)
    assert name not in podman("network", "ls").stdout
