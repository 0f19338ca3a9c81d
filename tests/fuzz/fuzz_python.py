"""atheris harness over the Python-facing API: the config parser and
validator, and the control socket's request handling.

    python tests/fuzz/fuzz_python.py config  [libFuzzer flags] [corpus dirs]
    python tests/fuzz/fuzz_python.py control [libFuzzer flags] [corpus dirs]

config: any bytes must give a Config or a ConfigError (with a key and a
reason), never another exception; an accepted config must compile into data
plane tables, load into a data plane, and survive a round trip through
``routerctl config show``'s TOML (written with the toml package, read back
with tomllib) unchanged.

control: any request line must get a well-formed answer ({"ok": true,
"result": ...} or {"ok": false, "error": "..."}) or a stream, never an
exception, from a router built on a real data plane (no devices).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import toml

    from router import config, events, log
    from router.app import Router
    from router.control import Stream
    from router.datapath import Datapath
    from router.tables import compile_tables

ROOT = Path(__file__).resolve().parents[2]
_dp = Datapath(1024, batch=8)


def fuzz_config(data: bytes) -> None:
    try:
        cfg = config.parse(data, "fuzz.toml")
    except config.ConfigError as e:
        assert e.reason, "a ConfigError names its reason"
        return
    tables = compile_tables(cfg, {})
    _dp.load(tables)
    text = toml.dumps(config.to_dict(cfg))
    again = config.parse(text.encode(), "roundtrip.toml")
    assert config.to_dict(again) == config.to_dict(cfg), "config show does not round-trip"


_router: Router | None = None
_loop: asyncio.AbstractEventLoop | None = None
assert events  # instrumented through the handlers


def _make_router() -> Router:
    log.setup("error", "json")
    d = tempfile.mkdtemp(prefix="rtfuzz-")
    text = (ROOT / "conf/router.toml").read_text()
    text = text.replace('"/run/router/router.sock"', f'"{d}/router.sock"')
    text = text.replace('"/var/lib/router/state/conntrack.json"', f'"{d}/state/ct.json"')
    text = text.replace('"/var/lib/router/state.key"', f'"{d}/state.key"')
    path = Path(d) / "router.toml"
    path.write_text(text)
    router = Router(config.load(str(path)))
    router.dp.load(router.tables)  # as open_devices() does, without devices
    return router


COMMANDS = ["status", "conntrack.list", "conntrack.count", "conntrack.delete",
            "conntrack.get", "conntrack.update", "conntrack.events", "capture", "stats",
            "interfaces", "routes", "reload", "config.show", "nat.list", "lb.list",
            "firewall.list", "nope"]
KEYS = ["proto", "src", "dst", "sport", "dport", "state", "zone", "types", "interface",
        "count", "duration", "snaplen", "x", "family", "status", "src_nat", "dst_nat",
        "any_nat", "mark", "fw_zone", "reply_src", "reply_dst", "filter", "timeout"]


def _value(fdp: atheris.FuzzedDataProvider) -> object:
    kind = fdp.ConsumeIntInRange(0, 6)
    if kind == 0:
        return fdp.ConsumeInt(4)
    if kind == 1:
        return fdp.ConsumeUnicodeNoSurrogates(20)
    if kind == 2:
        return fdp.ConsumeBool()
    if kind == 3:
        return None
    if kind == 4:
        return [fdp.ConsumeUnicodeNoSurrogates(8) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 5:
        return fdp.ConsumeFloat()
    return {"k": fdp.ConsumeUnicodeNoSurrogates(5)}


def fuzz_control(data: bytes) -> None:
    global _router, _loop
    if _router is None:
        _router = _make_router()
        _loop = asyncio.new_event_loop()
    assert _loop is not None
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        line = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        cmd = COMMANDS[fdp.ConsumeIntInRange(0, len(COMMANDS) - 1)]
        args = {KEYS[fdp.ConsumeIntInRange(0, len(KEYS) - 1)]: _value(fdp)
                for _ in range(fdp.ConsumeIntInRange(0, 4))}
        line = json.dumps({"cmd": cmd, "args": args}).encode()

    async def one() -> None:
        assert _router is not None
        answer = await _router.control._dispatch(line)
        if isinstance(answer, Stream):
            gen = answer.messages
            try:
                first = await asyncio.wait_for(gen.__anext__(), 0.05)
                assert isinstance(first, dict) and "type" in first
            except (TimeoutError, StopAsyncIteration):
                pass
            finally:
                await gen.aclose()  # type: ignore[attr-defined]
            return
        assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
        if answer["ok"]:
            assert "result" in answer
            json.dumps(answer)  # the answer must be serialisable
        else:
            assert isinstance(answer.get("error"), str) and answer["error"]
            assert not answer["error"].startswith("internal error"), answer["error"]

    _loop.run_until_complete(one())


def main() -> None:
    target = sys.argv.pop(1) if len(sys.argv) > 1 else "config"
    fn = {"config": fuzz_config, "control": fuzz_control}[target]
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(sys.argv, fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
