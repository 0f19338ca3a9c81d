"""Opening files and directories without following paths others can change.

The router starts as root and touches a few paths that a less privileged
user may be able to write: the control socket's directory, the state
directory it hands to the service user, the state file.  Everything here
works on directory descriptors, one path component at a time with
O_NOFOLLOW, so a symlink swapped in anywhere makes the call fail instead of
sending root somewhere else; and the directories a file is trusted from are
checked: owned by root or by the process's own user, and writable by nobody
else (a sticky directory such as /tmp may be passed through, never used).
"""

from __future__ import annotations

import contextlib
import os
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path the router will not use, with the reason."""


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


MAX_LINKS = 8  # symlinks followed in one path at most


def open_dir(path: str, create: int | None = None, trusted: bool = True) -> int:
    """A descriptor of directory ``path`` (absolute), reached component by
    component.  A symlink is followed only where nobody but root (or this
    process's user) could have put it: the link is theirs and so is the
    directory holding it, writable by nobody else (so /var/run -> /run is
    fine, a link planted in another user's directory is refused).  With
    ``create`` (a mode), the last component is made if missing.  With
    ``trusted``, every directory passed must be owned by root or this
    process's user and writable by nobody else, except that a sticky
    directory may be passed through; the last may be neither group- nor
    world-writable."""
    if not path.startswith("/"):
        raise UnsafePath(f"{path}: not an absolute path")
    todo = [p for p in path.split("/") if p and p != "."]
    links = 0
    fd = os.open("/", DIR_FLAGS)
    where = ""
    try:
        if trusted and not todo:
            _check(fd, path, "/", final=True)
        while todo:
            name = todo.pop(0)
            last = not todo
            if name == "..":  # from a link's target (e.g. ../run): walk again to the parent
                todo = [p for p in where.split("/") if p][:-1] + todo
                os.close(fd)
                fd = os.open("/", DIR_FLAGS)
                where = ""
                continue
            here = f"{where}/{name}"
            try:
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not (last and create is not None):
                    raise UnsafePath(f"{path}: {here} does not exist") from None
                os.mkdir(name, create, dir_fd=fd)
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(f"{path}: {here}: {e.strerror}") from None
                links += 1
                if links > MAX_LINKS or not _trusted_owner(st) or not _safe_holder(fd):
                    raise UnsafePath(f"{path}: {here} is a symlink this process "
                                     "may not follow") from None
                target = os.readlink(name, dir_fd=fd)
                todo = [p for p in target.split("/") if p and p != "."] + todo
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", DIR_FLAGS)
                    where = ""
                continue
            if trusted:
                _check(nfd, path, here, final=last)
            os.close(fd)
            fd = nfd
            where = here
        return fd
    except BaseException:
        os.close(fd)
        raise


def _safe_holder(fd: int) -> bool:
    st = os.fstat(fd)
    return _trusted_owner(st) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _check(fd: int, path: str, where: str, final: bool) -> None:
    st = os.fstat(fd)
    if not _trusted_owner(st):
        raise UnsafePath(f"{path}: {where} belongs to uid {st.st_uid}, not to root or this "
                         "process's user")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and (final or not st.st_mode & stat.S_ISVTX):
        raise UnsafePath(f"{path}: {where} is writable by other users")


def take_over_dir(path: str, from_uid: int, mode: int) -> int:
    """Opens directory ``path`` like open_dir(create=mode); if it belongs to
    ``from_uid`` (the service user, as an earlier version left it), makes it
    root's with ``mode`` through the descriptor first.  Root only."""
    parent, name = os.path.split(path)
    pfd = open_dir(parent)
    try:
        fd = _open_or_make(name, pfd, mode, path)
    finally:
        os.close(pfd)
    st = os.fstat(fd)
    if st.st_uid == from_uid and from_uid != 0:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
    try:
        _check(fd, path, path, final=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def hand_over(path: str, uid: int, gid: int, mode: int) -> None:
    """Makes directory ``path`` (created if missing) belong to ``uid:gid``
    with ``mode``, through its descriptor: its parent may be any directory
    (the service user's own, say), and a symlink swapped in at any point
    makes this fail rather than change something else.  Root only."""
    parent, name = os.path.split(path)
    pfd = open_dir(parent, trusted=False)
    try:
        fd = _open_or_make(name, pfd, mode, path)
    finally:
        os.close(pfd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _open_or_make(name: str, dir_fd: int, mode: int, path: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as e:  # ELOOP: a symlink where the directory should be
        raise UnsafePath(f"{path}: {e.strerror}") from None
    os.mkdir(name, mode, dir_fd=dir_fd)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:  # swapped between the two calls
        raise UnsafePath(f"{path}: {e.strerror}") from None


def open_private(name: str, dir_fd: int, max_bytes: int) -> tuple[int, os.stat_result]:
    """Opens regular file ``name`` in ``dir_fd`` for reading: not a symlink,
    not a FIFO or device (opening never blocks), one link only (not a hard
    link to a file elsewhere), owned by this process's user, at most
    ``max_bytes``.  Returns the descriptor and its stat."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise UnsafePath(f"{name}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{name}: not a regular file")
        if st.st_nlink != 1:
            raise UnsafePath(f"{name}: has {st.st_nlink} links")
        if st.st_uid != os.geteuid():
            raise UnsafePath(f"{name}: belongs to uid {st.st_uid}, not to this process's user")
        if st.st_size > max_bytes:
            raise UnsafePath(f"{name}: {st.st_size} bytes, more than the {max_bytes} allowed")
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read_fd(fd: int, max_bytes: int) -> bytes:
    """Everything left in ``fd``, refusing more than ``max_bytes``."""
    chunks = []
    size = 0
    while chunk := os.read(fd, 1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise UnsafePath(f"more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def write_new(name: str, dir_fd: int, data: bytes, mode: int = 0o600) -> None:
    """Writes ``data`` to ``name`` in ``dir_fd`` atomically: a temporary file
    created there with ``mode`` (never following a symlink, never reusing a
    file someone left), synced, renamed over ``name``; on any failure the
    temporary file is removed."""
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # one a crash left behind; never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
