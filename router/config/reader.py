"""Walking a parsed TOML document with the path of every key it reads.

``Reader`` gets keys of a given type, range or choice, each failure a
``ConfigError`` with the key's path (``interface[1].address``) and the line
where it sits; the value readers turn strings into addresses and networks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, fields
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from typing import Any, TypeVar

from router.config.model import ConfigError, Interface

T = TypeVar("T")


@functools.cache
def _knob_fields(cls: type) -> dict[str, Field[Any]]:
    return {f.name: f for f in fields(cls) if f.metadata.get("knob")}


class Reader:
    """Walks a parsed TOML table with the path of every key it reads."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.path, key, reason, _find_line(self.lines, key))

    def table(self, parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        val = parent.get(key, {})
        if not isinstance(val, dict):
            raise self.fail(_join(where, key), "must be a table")
        return val

    def array(self, parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
        val = parent.get(key, [])
        if not isinstance(val, list):
            raise self.fail(_join(where, key), "must be an array")
        return val

    def tables(self, parent: Mapping[str, Any], key: str, where: str
               ) -> list[tuple[str, Mapping[str, Any]]]:
        """The elements of an array of tables, each with its key path."""
        out: list[tuple[str, Mapping[str, Any]]] = []
        for n, t in enumerate(self.array(parent, key, where)):
            w = f"{_join(where, key)}[{n}]"
            if not isinstance(t, dict):
                raise self.fail(w, "must be a table")
            out.append((w, t))
        return out

    def interface(self, tbl: Mapping[str, Any], where: str,
                  ifaces: Mapping[str, Interface]) -> str:
        """The required ``interface`` key, naming a configured interface."""
        name = self.get(tbl, "interface", where, str, required=True)
        if name not in ifaces:
            raise self.fail(f"{where}.interface", f"no interface named {name!r}")
        return str(name)

    def known(self, tbl: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for k in tbl:
            if k not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(_join(where, k), f"unknown key (known keys: {hint})")

    def get(
        self,
        tbl: Mapping[str, Any],
        key: str,
        where: str,
        typ: type | tuple[type, ...],
        default: Any = None,
        required: bool = False,
    ) -> Any:
        if key not in tbl:
            if required:
                raise self.fail(_join(where, key), "is required")
            return default
        val = tbl[key]
        # bool is an int in Python; never accept one for the other.
        if isinstance(val, bool) and bool not in _as_tuple(typ):
            raise self.fail(_join(where, key), f"must be {_typename(typ)}, not a boolean")
        if not isinstance(val, typ):
            raise self.fail(_join(where, key), f"must be {_typename(typ)}")
        return val

    def knob(self, tbl: Mapping[str, Any], cls: type, name: str, where: str) -> Any:
        """Key ``name`` of a table of dataclass ``cls``: its type, default
        and range or choices are the field's (``model.knob``)."""
        f = _knob_fields(cls)[name]
        default: Any = f.default if f.default_factory is MISSING else f.default_factory()
        lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
        if isinstance(default, bool):
            return self.get(tbl, name, where, bool, default)
        if isinstance(default, int):
            return self.integer(tbl, name, where, default, lo, hi)
        if isinstance(default, float):
            val = self.get(tbl, name, where, (int, float), default)
            if not lo <= val <= hi:
                raise self.fail(_join(where, name), f"must be between {lo} and {hi}, got {val}")
            return float(val)
        if isinstance(default, tuple):
            return tuple(self.get(tbl, name, where, list, list(default)))
        if choices:
            return self.choice(tbl, name, where, choices, default)
        return self.get(tbl, name, where, str, default)

    def section(self, doc: Mapping[str, Any], name: str, cls: type,
                more: frozenset[str] = frozenset()) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Table ``name`` of the document and the values of its knobs (keys
        ``more`` are the caller's to read)."""
        t = self.table(doc, name, "")
        knobs = _knob_fields(cls)
        self.known(t, name, set(knobs) | more)
        return t, {k: self.knob(t, cls, k, name) for k in knobs}

    def integer(
        self, tbl: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int
    ) -> int:
        val = self.get(tbl, key, where, int, default)
        if not lo <= val <= hi:
            raise self.fail(_join(where, key), f"must be between {lo} and {hi}, got {val}")
        return int(val)

    def choice(
        self, tbl: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: str
    ) -> str:
        val = self.get(tbl, key, where, str, default)
        if val not in choices:
            raise self.fail(_join(where, key), f"must be one of {', '.join(choices)}, got {val!r}")
        return str(val)

    def network(self, val: Any, key: str) -> IPv4Network:
        return _value(self, lambda v: IPv4Network(v, strict=True), val, key,
                      "a string like '192.168.1.0/24'", "an IPv4 network")

    def iface_addr(self, val: Any, key: str) -> IPv4Interface:
        if not isinstance(val, str) or "/" not in val:
            raise self.fail(key, "must be an address with a prefix length, like '192.168.1.1/24'")
        try:
            addr = IPv4Interface(val)
        except ValueError as e:
            raise self.fail(key, f"not an IPv4 address/prefix: {e}") from None
        if addr.network.prefixlen > 30 and addr.network.prefixlen != 32:
            raise self.fail(key, "prefix length must be at most 30 (or 32)")
        if addr.ip in (addr.network.network_address, addr.network.broadcast_address) and (
            addr.network.prefixlen <= 30
        ):
            raise self.fail(key, f"{addr.ip} is the network or broadcast address of the link")
        _check_unicast(self, addr.ip, key)
        return addr

    def address(self, val: Any, key: str) -> IPv4Address:
        addr = _value(self, IPv4Address, val, key, "a string like '192.0.2.1'",
                      "an IPv4 address")
        _check_unicast(self, addr, key)
        return addr


def _check_unicast(r: Reader, addr: IPv4Address, key: str) -> None:
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_reserved:
        raise r.fail(key, f"{addr} is not a unicast host address")


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _typename(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(x, x.__name__) for x in _as_tuple(t))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]")


def _find_line(lines: list[str], key: str) -> int | None:
    """Best-effort line of ``key`` (like ``interface[1].address``) in the file.

    tomllib reports positions only for syntax errors, so this follows table
    headers the way a reader would: the key's line inside its table; else,
    for a value inside an inline table or array, the key's name after the
    line that assigns its nearest written ancestor; else the table's header;
    else the first line outside a comment that names the key.  A key that
    is not in the file at all (a required one missing) has no line.
    """
    comps = re.findall(r"([A-Za-z0-9_-]+)(?:\[(\d+)\])?", key)
    if not comps:
        return None
    leaf = comps[-1][0]
    # An indexed last part is an array value (sources[0]) or an element of an
    # array of tables (route[0]): try the first reading, then the second.
    found = _line_in(lines, comps[:-1], leaf, assignment_only=True)
    if found is None and comps[-1][1]:
        found = _line_in(lines, comps, None)
    if found is None:
        found = _inline(lines, comps)
    if found is None and not comps[-1][1]:
        found = _line_in(lines, comps[:-1], leaf)
    if found is not None and comps[-1][1] and \
            re.search(rf"\b{re.escape(leaf)}\s*=", lines[found - 1].split("#")[0]):
        # sources[1]: the element's own line, when the array spans several.
        line = lines[found - 1]
        at = re.search(rf"\b{re.escape(leaf)}\s*=", line)
        assert at is not None
        lines2 = [*lines[:found - 1], line[at.start():], *lines[found:]]
        span = _element(lines2, found, int(comps[-1][1]))
        if span is not None:
            found = span[0]
    if found is None and len(comps) > 1:
        # Last resort, inside a section that is there: the first line that
        # names the key.  A top-level key that is absent has no line (the
        # word elsewhere, say a route's "interface", is not it).
        found = next((n for n, line in enumerate(lines, 1)
                      if re.search(rf"\b{re.escape(leaf)}\b", line.split("#")[0])), None)
    return found


def _inline(lines: list[str], comps: list[tuple[str, str]]) -> int | None:
    """For a key inside an inline table or array (``policy = [{ ... }]``):
    the line of the key's name within the element the key path indexes (or
    at or after the line that assigns its nearest ancestor), before the
    next table header."""
    leaf = comps[-1][0]
    for cut in range(len(comps) - 1, 0, -1):
        start = _line_in(lines, comps[:cut - 1], comps[cut - 1][0], assignment_only=True)
        if start is None:
            continue
        first, last = start, len(lines)
        if comps[cut - 1][1]:
            span = _element(lines, start, int(comps[cut - 1][1]))
            if span is not None:
                first, last = span
        for n in range(first, last + 1):
            line = lines[n - 1]
            if n > start and _HEADER.match(line):
                break
            if n == start and first == start:
                line = line.split("=", 1)[1] if "=" in line else line
            if re.search(rf"\b{re.escape(leaf)}\b", line.split("#")[0]):
                return n
        return first
    return None


def _element(lines: list[str], start: int, index: int) -> tuple[int, int] | None:
    """The first and last line of element ``index`` of the inline array
    assigned on line ``start`` (strings and comments skipped)."""
    depth, count, quote, expect = 0, -1, "", False
    begin: int | None = None
    text = lines[start - 1].split("=", 1)[1] if "=" in lines[start - 1] else ""
    n = start
    while True:
        i = 0
        while i < len(text):
            ch = text[i]
            if quote:
                if ch == "\\" and quote == '"':
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch == "#":
                break
            elif depth == 1 and expect and ch not in " \t]":
                expect = False
                count += 1
                if count == index:
                    begin = n
                    if ch not in "[{":
                        return n, n       # a plain value starts on this line
                if ch in "[{":
                    depth += 1
                elif ch in "\"'":
                    quote = ch
            elif ch in "\"'":
                quote = ch
            elif ch in "[{":
                depth += 1
                expect = depth == 1
            elif ch in "]}":
                depth -= 1
                if depth == 1 and begin is not None:
                    return begin, n
                if depth <= 0:
                    return None
            elif ch == "," and depth == 1:
                expect = True
            i += 1
        n += 1
        if n > len(lines):
            return None
        text = lines[n - 1]


def _line_in(lines: list[str], table: list[tuple[str, str]], leaf: str | None,
             assignment_only: bool = False) -> int | None:
    """The line of ``leaf = ...`` in ``table`` (or of the header of table
    ``table.leaf``); unless ``assignment_only``, else the table's header."""
    want = ".".join(c for c, _ in table)
    want_idx = next((int(i) for _, i in reversed(table) if i), None)
    sub = f"{want}.{leaf}" if want and leaf else leaf
    counts: dict[str, int] = {}
    in_table = want == ""
    header_line = None
    for n, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            name = m.group(2)
            if m.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
            if sub and name == sub and not assignment_only:
                return n
            in_table = name == want and (want_idx is None or counts.get(name) == want_idx)
            if in_table and header_line is None:
                header_line = n
            continue
        if in_table and leaf and re.match(rf"^\s*{re.escape(leaf)}\s*=", line):
            return n
    return None if assignment_only else header_line


def iface6(r: Reader, val: Any, key: str) -> IPv6Interface:
    if not isinstance(val, str) or "/" not in val:
        raise r.fail(key, "must be an IPv6 address with a prefix length, like '2001:db8:1::1/64'")
    try:
        return IPv6Interface(val)
    except ValueError as e:
        raise r.fail(key, f"not an IPv6 address: {e}") from None


def net6(r: Reader, val: Any, key: str) -> IPv6Network:
    return _value(r, lambda v: IPv6Network(v, strict=True), val, key,
                  "a string like '2001:db8::/32'", "an IPv6 network")


def _value(r: Reader, make: Callable[[str], T], val: Any, key: str, like: str, what: str) -> T:
    """``make(val)`` for a string ``val``; else, or when ``make`` refuses
    it, the error for ``key``: it "must be LIKE", or is "not WHAT"."""
    if not isinstance(val, str):
        raise r.fail(key, f"must be {like}")
    try:
        return make(val)
    except ValueError as e:
        raise r.fail(key, f"not {what}: {e}") from None


def any_net(r: Reader, val: Any, key: str) -> IPv4Network | IPv6Network:
    """An IPv4 or an IPv6 network (a rule matches packets of its family)."""
    if isinstance(val, str) and ":" in val:
        return net6(r, val, key)
    return r.network(val, key)


def plain_path(p: str) -> bool:
    """Absolute, no '..' component, no control character (a path with a
    newline or form feed in it is a mistake, and does not survive being
    written back by `routerctl config show`)."""
    return (p.startswith("/") and ".." not in p.split("/") and
            not any(ord(c) < 32 or ord(c) == 127 for c in p))




