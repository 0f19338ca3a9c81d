"""Least privilege: drop from root to the service user after setup.

Started as root with ``[service] user`` set, the router opens its TUN devices,
moves and configures them, binds its control socket and prepares its state
directory, and then becomes that user with nothing but CAP_NET_ADMIN (kept so
that a reload can still create and configure devices), or with no capability
at all (``keep_net_admin = false``).  The capability bounding set is cut to
the same, and no_new_privs is set, so nothing it executes can regain more.

The calls are plain Linux ones through ctypes: prctl(2) and capset(2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from router import safepath

CAP_NET_ADMIN = 12
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivError(Exception):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise PrivError(f"{what}: {os.strerror(err)}")


@dataclass(frozen=True)
class Account:
    user: str
    uid: int
    gid: int
    group: str


def lookup(user: str, group: str = "") -> Account:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivError(f"service.user: no user {user!r} on this system") from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivError(f"service.group: no group {group!r} on this system") from None
    else:
        gid = pw.pw_gid
    return Account(user, pw.pw_uid, gid, grp.getgrgid(gid).gr_name)


def hand_over(path: str, acct: Account, mode: int) -> None:
    """Makes directory ``path`` (created if missing) the service user's,
    never following a symlink (safepath.hand_over)."""
    safepath.hand_over(path, acct.uid, acct.gid, mode)


def drop(acct: Account, keep_net_admin: bool) -> None:
    """Becomes ``acct`` for good.  Must run as root, before any thread."""
    if os.geteuid() != 0:
        raise PrivError("dropping privileges needs to start as root")
    libc = _libc()
    keep = 1 << CAP_NET_ADMIN if keep_net_admin else 0
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for cap in range(last + 1):
        if not keep >> cap & 1:
            _check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"dropping capability {cap}")
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([acct.gid])
    os.setresgid(acct.gid, acct.gid, acct.gid)
    os.setresuid(acct.uid, acct.uid, acct.uid)
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = keep
    _check(libc.capset(ctypes.byref(hdr), data), "capset")
    _check(libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS, 0)")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivError("still able to become root after dropping privileges")


def status() -> dict[str, str]:
    """Uid, Gid and capability lines of /proc/self/status, for the log."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs"):
            out[k] = " ".join(v.split())
    return out
