"""The DHCP client's script runs as root: router/wan.py runs it only from
where no less privileged user can change it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router import safepath, wan


def test_the_shipped_script_is_safe() -> None:
    wan.check_script()  # the package's own: root's, written by nobody else
    assert os.access(wan.SCRIPT, os.X_OK)


def test_a_script_others_may_change_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "udhcpc.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o757)  # anyone may write it
    with pytest.raises(safepath.UnsafePath, match="nobody else may write"):
        wan.check_script(script)
    script.chmod(0o755)
    tmp_path.chmod(0o777)  # or replace it: its directory is anyone's
    with pytest.raises(safepath.UnsafePath, match="writable by other users"):
        wan.check_script(script)
    tmp_path.chmod(0o700)
    wan.check_script(script)  # root's file in root's directory
