"""The router as an attacker's target, end to end: hostile files and local
clients (issue "Hardened for real networks").  Each test here failed on the
build before its fix."""

from __future__ import annotations

import os

from tests.integration.conftest import NetLab


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
