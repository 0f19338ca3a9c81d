"""routerctl's command line: the options every command takes work before the
command's name and after it, as conntrack-tools users type them."""

from __future__ import annotations

import argparse

import pytest

from router.ctl import DEFAULT_SOCKET, parser

COMMANDS = [["conntrack", "list"], ["conntrack", "get"], ["conntrack", "delete"],
            ["conntrack", "events"], ["conntrack", "count"], ["conntrack", "flush"],
            ["stats"], ["interfaces"], ["routes"], ["capture", "wan0", "-w", "-"], ["status"],
            ["reload"], ["nat", "list"], ["firewall", "list"], ["lb", "list"],
            ["config", "show"], ["portmap", "list"], ["portmap", "delete", "udp", "7000"],
            ["portmap", "events"], ["ha", "status"], ["ha", "cache"], ["ha", "resync"],
            ["ha", "master"], ["ha", "backup"], ["ha", "fault"],
            ["ha", "notify", "INSTANCE", "home", "MASTER", "100"], ["ha", "events"]]


def leaf_commands(p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {" ".join(prefix)}
    return {c for name, sp in subs[0].choices.items() for c in leaf_commands(sp, (*prefix, name))}


def test_the_list_is_every_command() -> None:
    assert {" ".join(c[:2]) if c[0] in ("conntrack", "portmap", "ha") else c[0]
            for c in COMMANDS} == \
        leaf_commands(parser())


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_json_and_socket_work_after_the_command(cmd: list[str]) -> None:
    a = parser().parse_args([*cmd, "--json", "-S", "/tmp/x.sock"])
    assert a.json and a.socket == "/tmp/x.sock"
    b = parser().parse_args(["--json", "-S", "/tmp/y.sock", *cmd])
    assert b.json and b.socket == "/tmp/y.sock"


def test_an_option_left_out_after_the_command_keeps_the_one_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTER_SOCKET", raising=False)
    a = parser().parse_args(["--json", "-S", "/tmp/z.sock", "conntrack", "list"])
    assert a.json and a.socket == "/tmp/z.sock"
    b = parser().parse_args(["stats"])
    assert not b.json and b.socket == DEFAULT_SOCKET
