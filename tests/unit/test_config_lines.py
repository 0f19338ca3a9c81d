"""Every config error names the line it is about, or none when the key is
absent: inside inline tables and arrays of them, the element the key path
indexes; never a comment, never a like-named key of another table."""

from __future__ import annotations

from tests.helpers import TWO_LINKS
from tests.helpers import refused as err


def test_an_inline_array_error_points_at_its_element() -> None:
    text = TWO_LINKS + (
        "[firewall]\n"
        "policy = [\n"
        "  { from = \"lan\", to = \"wan\", action = \"accept\" },\n"
        "  # a comment with { a brace, and the word action\n"
        "  { from = \"wan\", to = \"lan\", action = \"maybe\" },\n"
        "]\n")
    e = err(text)
    assert e.key == "firewall.policy[1].action"
    assert text.splitlines()[e.line - 1].strip().startswith('{ from = "wan"'), e


def test_a_value_in_an_inline_table_has_its_line() -> None:
    text = TWO_LINKS + (
        "[nat]\n"
        "masquerade = [ { interface = \"wan0\", sources = [\"192.168.77.0/24\",\n"
        "                                              \"banana\"] } ]\n")
    e = err(text)
    assert e.key == "nat.masquerade[0].sources[1]"
    assert e.line is not None and "banana" in text.splitlines()[e.line - 1]


def test_a_missing_interface_points_nowhere_else() -> None:
    text = ("# The router's config\n# interface: none yet\n[[route]]\n"
            "destination = \"0.0.0.0/0\"\ninterface = \"wan0\"\n")
    e = err(text)
    assert e.key == "interface" and e.line is None
    assert str(e) == "cfg.toml: interface: at least one [[interface]] is required"
