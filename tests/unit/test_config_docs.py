"""docs/config.md's tables of keys and defaults against the model: one home
for every default (router/config/model.py), and a test that fails when the
documentation drifts from it."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from router.config.model import SECTIONS
from router.native.names import TIMEOUT_DEFAULTS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
# Defaults the docs describe in words rather than as a value.
IN_WORDS = {("service", "group"): "the user's primary group",
            ("firewall", "log_reasons"): "the firewall's and conntrack's"}


def doc_table(section: str) -> dict[str, str]:
    """Key -> default cell of the first table under the heading of
    ``section`` (``[name]`` or ``[[name]]``)."""
    head = re.search(rf"^#+ `\[\[?{re.escape(section)}\]\]?`.*$", DOC, re.M)
    assert head, f"docs/config.md has no section [{section}]"
    rest = DOC[head.end():]
    nxt = re.search(r"^#+ ", rest, re.M)
    body = rest[:nxt.start()] if nxt else rest
    out: dict[str, str] = {}
    for row in re.findall(r"^\| (`[^|]+`) \|(.*)$", body, re.M):
        keys = re.findall(r"`([a-z_0-9]+)`", row[0])
        cells = [c.strip() for c in row[1].split("|")]
        default = cells[0] if section == "conntrack.timeouts" else cells[1]
        values = [v.strip() for v in default.split(",")] if len(keys) > 1 else [default]
        for k, v in zip(keys, values, strict=True):
            out[k] = v
    return out


def render(value: Any) -> str:
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def knobs(cls: type) -> dict[str, Any]:
    return {f.name: f.default if f.default_factory is MISSING else f.default_factory()
            for f in fields(cls) if f.metadata.get("knob")}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_key_is_documented_with_its_default(section: str) -> None:
    documented = doc_table(section)
    for key, default in knobs(SECTIONS[section]).items():
        assert key in documented, f"[{section}] {key} is not in docs/config.md"
        want = IN_WORDS.get((section, key), render(default))
        assert documented[key] == want, f"[{section}] {key}: docs say {documented[key]}"


def test_timeouts_are_documented_with_their_defaults() -> None:
    documented = doc_table("conntrack.timeouts")
    assert documented == {k: str(v) for k, v in TIMEOUT_DEFAULTS.items()}


def test_the_check_notices_a_drift() -> None:
    """A wrong default in the docs is caught (the check compares at all)."""
    table = doc_table("dataplane")
    assert table["batch"] == render(knobs(SECTIONS["dataplane"])["batch"])
    assert render(65) != table["batch"]
