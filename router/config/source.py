"""The config file: its bytes read safely, and read off the event loop.

``read()`` takes regular files only, at most ``MAX_CONFIG_BYTES``, and never
blocks opening a FIFO or a device.  On reload the loop never waits on the file
system: ``read_config()`` reads and validates the file in a thread of its own,
with a deadline, so a hung mount costs a failed reload, not a router that
ignores SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
from pathlib import Path

from router.config.model import MAX_CONFIG_BYTES, Config, ConfigError
from router.config.parse import parse


def read(path: str | Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.
    Opening never blocks on a FIFO or a device (O_NONBLOCK), and anything
    but a regular file is refused before a byte is read."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(p, "", f"cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(p, "", "not a regular file")
        if st.st_size > limit:
            raise ConfigError(p, "", f"{st.st_size} bytes; a config may have {limit} at most")
        chunks = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > limit:  # it grew while being read
                raise ConfigError(p, "", f"more than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise ConfigError(p, "", f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def load(path: str | Path) -> Config:
    """Reads and validates the config file at ``path``."""
    return parse(read(path), str(path))


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
            result, error = load(path), None
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
