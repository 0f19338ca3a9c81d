"""routerctl's command line: the options every command takes work before the
command's name and after it, as conntrack-tools users type them."""

from __future__ import annotations

import argparse

import pytest

from router.ctl import DEFAULT_SOCKET, conntrack, main, parser

COMMANDS = [["conntrack", "list"], ["conntrack", "get"], ["conntrack", "delete"],
            ["conntrack", "events"], ["conntrack", "count"], ["conntrack", "flush"],
            ["conntrack", "update", "-t", "30"], ["conntrack", "stats"],
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


@pytest.mark.parametrize(("letter", "name"), [("-L", "list"), ("-G", "get"), ("-D", "delete"),
                                              ("-U", "update"), ("-E", "events"),
                                              ("-C", "count"), ("-F", "flush"),
                                              ("-S", "stats")])
def test_conntrack_letters_name_the_subcommand(letter: str, name: str) -> None:
    argv = conntrack.letters_to_names(["conntrack", letter, "-p", "tcp"])
    assert argv == ["conntrack", name, "-p", "tcp"]


def test_conntrack_s_before_a_path_stays_the_socket() -> None:
    argv = ["conntrack", "-S", "/tmp/r.sock", "list"]
    assert conntrack.letters_to_names(argv) == argv
    assert conntrack.letters_to_names(["conntrack", "-S"]) == ["conntrack", "stats"]


def test_conntrack_tools_options_parse_as_conntrack_names_them() -> None:
    a = parser().parse_args(["conntrack", "list", "-f", "ipv6", "-u", "ASSURED", "-n",
                             "-g", "203.0.113.1:80", "-m", "0/0xff", "-w", "0", "-r",
                             "198.51.100.1", "-q", "10.0.0.1", "-o", "extended,id",
                             "--fw-zone", "lan", "--json"])
    assert (a.family, a.status, a.src_nat, a.dst_nat, a.mark, a.zone) == \
        ("ipv6", "ASSURED", "", "203.0.113.1:80", "0/0xff", "0")
    assert (a.reply_src, a.reply_dst, a.output, a.fw_zone, a.json) == \
        ("198.51.100.1", "10.0.0.1", "extended,id", "lan", True)
    assert a.any_nat is None


def test_capture_takes_a_tcpdump_expression_after_its_options(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The words left over are the filter (main() hands them over); any
    other command refuses words it does not know."""
    p = parser()
    a, extra = p.parse_known_args(["capture", "wan0", "-w", "-", "udp", "port", "53"])
    assert (a.interface, a.write, extra) == ("wan0", "-", ["udp", "port", "53"])
    with pytest.raises(SystemExit):
        main(["status", "udp", "port", "53"])
    assert "unrecognized arguments: udp port 53" in capsys.readouterr().err
