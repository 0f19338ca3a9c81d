"""Reading the config file on reload without blocking the event loop.

The loop never waits on the file system: the file is read and validated in
a thread of its own (config.load: regular files only, bounded), with a
deadline, so a hung mount costs a failed reload, not a router that ignores
SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from router import config
from router.config import Config, ConfigError

CONFIG_READ_TIMEOUT = 10.0  # seconds a reload waits for the file system


async def read_config(path: str, timeout: float = CONFIG_READ_TIMEOUT) -> Config:
    """Reads and validates the config file in a thread of its own, so that
    the event loop never waits on the file system: a hung mount, or a file
    that is slow to validate, costs the loop nothing, and after ``timeout``
    seconds the reload fails and the running config stays.  The thread is a
    daemon: one stuck in the kernel never holds up a stop."""
    global _config_reader
    if _config_reader is not None and _config_reader.is_alive():
        raise ConfigError(path, "", "an earlier read of this file has not returned yet "
                                    "(a hung file system?); the running config stays")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Config] = loop.create_future()

    def settle(result: Config | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = config.load(path), None
        except Exception as e:  # handed to the loop, which re-raises it
            result, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    _config_reader = threading.Thread(target=work, name="config-read", daemon=True)
    _config_reader.start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        # Whatever the read ends with later is of no interest any more.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise ConfigError(path, "", f"not read within {timeout:g} s (a hung file "
                                    "system?); the running config stays") from None


_config_reader: threading.Thread | None = None
