"""conf/router.service is a unit systemd accepts, starting the router as the
README installs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "conf" / "router.service"


def test_the_unit_runs_the_installed_router_with_the_documented_config() -> None:
    text = UNIT.read_text()
    assert "ExecStart=/opt/router/bin/router run -c /etc/router/router.toml" in text
    assert "ExecStartPre=/opt/router/bin/router check -c /etc/router/router.toml" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text  # reload is SIGHUP


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze (package systemd) is needed to check the unit")
    # The same unit with its commands where this checkout has them.
    router = Path(sys.executable).with_name("router")
    unit = tmp_path / "router.service"
    unit.write_text(UNIT.read_text().replace("/opt/router/bin/router", str(router)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
