"""Keeping the connection table across a restart: who reads and writes the
state file, when, where, and what the log says.

Three moments, each with the privileges it needs and no more:

1. ``prepare()``, as root before privileges drop: reads (or makes) the state
   key, which only root can read, and makes the state directory for the
   service user (through descriptors: safepath.hand_over).
2. ``restore()``, after the drop: reads the file the previous run saved, as
   the service user (root never opens it), checks it whole (state.decode),
   restores what passes the firewall, and removes it.  A bad file is
   renamed aside; a file that is not a state file at all is left alone and
   state is switched off, so it is never saved over.
3. ``save()``, at a clean stop.

The file format and its checks are state.py's; this module is the flow.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from router import privs, safepath, state
from router.config import Config
from router.datapath import Datapath


class StateKeeper:
    def __init__(self, cfg: Callable[[], Config], dp: Datapath, log: Any,
                 now_ms: Callable[[], int]) -> None:
        self._cfg = cfg          # the running config (it changes on reload)
        self._dp = dp
        self._log = log
        self._now_ms = now_ms
        self.key: bytes | None = None  # None: no state this run (and why was logged)

    def prepare(self, acct: privs.Account | None) -> None:
        """Before privileges drop (as whoever starts the router)."""
        ct = self._cfg().conntrack
        if not ct.state_file:
            return
        try:
            self.key = state.load_key(ct.state_key)
        except state.StateError as e:
            self._off(str(e))
            return
        if acct is not None:
            try:
                privs.hand_over(os.path.dirname(ct.state_file), acct, 0o700)
            except OSError as e:  # safepath.UnsafePath included
                self._off(f"state directory: {e}")

    def restore(self) -> None:
        """After privileges drop: puts back what the previous run saved."""
        cfg = self._cfg()
        path = cfg.conntrack.state_file
        if not path or self.key is None:
            return
        directory, name = os.path.split(path)
        try:
            dfd = safepath.open_dir(directory, create=0o700)
        except OSError as e:
            self._off(f"state directory: {e}")
            return
        try:
            saved = self._read(dfd, name, path, cfg.conntrack.max, self.key)
            if saved is not None:
                self._restore_entries(path, saved)
                os.unlink(name, dir_fd=dfd)
        finally:
            os.close(dfd)

    def save(self) -> None:
        """Writes the table for the next start (at a clean stop)."""
        path = self._cfg().conntrack.state_file
        if not path or self.key is None:
            return
        try:
            entries = self._dp.conntrack(self._now_ms())
            state.save(path, entries, self.key)
        except OSError as e:
            self._log.error("ct.state_not_saved", file=path, reason=str(e))
            return
        self._log.info("ct.saved", file=path, entries=len(entries))

    def _read(self, dfd: int, name: str, path: str, max_entries: int,
              key: bytes) -> state.Saved | None:
        """The checked state file, or None (none there, or refused)."""
        limit = state.max_bytes(max_entries)
        try:
            fd, _ = safepath.open_private(name, dfd, limit)
        except FileNotFoundError:
            return None
        except OSError as err:
            self._refuse(dfd, name, path, err)
            return None
        try:
            return state.decode(safepath.read_fd(fd, limit), key, max_entries)
        except (OSError, state.StateError) as err:
            self._refuse(dfd, name, path, err)
            return None
        finally:
            os.close(fd)

    def _refuse(self, dfd: int, name: str, path: str, err: Exception) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            try:
                ours = state.looks_like_state(os.read(fd, 256))
            finally:
                os.close(fd)
        except OSError:
            ours = False
        if not ours:
            self._off(f"{path} is not a conntrack state file: {err}; it is left alone, and "
                      "the table will not be saved over it")
            return
        self._log.error("ct.state_refused", file=path, reason=str(err),
                        moved_to=path + ".refused")
        os.replace(name, name + ".refused", src_dir_fd=dfd, dst_dir_fd=dfd)

    def _off(self, reason: str) -> None:
        self._log.error("ct.state_disabled", file=self._cfg().conntrack.state_file,
                        reason=reason)
        self.key = None

    def _restore_entries(self, path: str, saved: state.Saved) -> None:
        gone = max(0, int((time.time() - saved.saved_at) * 1000))
        now = self._now_ms()
        restored = expired = failed = refused = 0
        for entry in saved.entries():
            left = entry.timeout_ms - gone
            if left <= 0:
                expired += 1
                continue
            entry = dataclasses.replace(entry, timeout_ms=left, age_ms=entry.age_ms + gone)
            r = self._dp.restore(entry, now)
            if r == 0:
                restored += 1
            elif r == -3:
                refused += 1
            else:
                failed += 1
        self._log.info("ct.restored", file=path, restored=restored, expired=expired,
                       failed=failed, refused_by_firewall=refused, downtime_ms=gone)
