"""The pid file (through lockfile's PIDLockFile) and the liveness check of a xend process.

lockfile has no stale-pid detection: a file left by a crashed xend would block every later
start. ``is_xend_alive`` tells a live xend from a dead pid, a zombie or a recycled pid of
another program; ``break_if_stale`` removes the file only when it names no live xend.
"""
from __future__ import annotations

import os
from typing import Optional

from lockfile.pidlockfile import PIDLockFile

# LSB status codes
RUNNING = 0
DEAD_PIDFILE = 1
NOT_RUNNING = 3
UNKNOWN = 4


class PidFileUnreadable(Exception):
    pass


def read_pid(path: str) -> Optional[int]:
    """The pid in the file, None when missing/empty/garbage; PidFileUnreadable on EACCES."""
    try:
        with open(path) as f:
            text = f.readline().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:  # EACCES, EISDIR, ...: LSB status 4
        raise PidFileUnreadable(str(e)) from e
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def is_xend_alive(pid: int) -> bool:
    """True if ``pid`` is a running (not zombie) process whose command line mentions xend."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X", "x"):
        return False
    return b"xend" in cmdline


def status(path: str) -> int:
    try:
        pid = read_pid(path)
    except PidFileUnreadable:
        return UNKNOWN
    if pid is None:
        return DEAD_PIDFILE if os.path.exists(path) and os.path.getsize(path) > 0 else NOT_RUNNING
    return RUNNING if is_xend_alive(pid) else DEAD_PIDFILE


def live_pid(path: str) -> Optional[int]:
    try:
        pid = read_pid(path)
    except PidFileUnreadable:
        return None
    return pid if pid is not None and is_xend_alive(pid) else None


def break_if_stale(path: str) -> bool:
    """Remove the pid file if it names no live xend. True if it was removed."""
    lock = PIDLockFile(path)
    if lock.is_locked() and live_pid(path) is None:
        try:
            lock.break_lock()
        except OSError:
            return False
        return True
    return False


def acquire(path: str) -> PIDLockFile:
    """Write our pid to ``path`` (O_EXCL through lockfile), breaking a stale file first."""
    break_if_stale(path)
    lock = PIDLockFile(path, timeout=5)
    lock.acquire()
    return lock


def release(lock: PIDLockFile) -> None:
    """Remove the file if it still holds our pid (a restarted xend may own it now)."""
    try:
        if lock.read_pid() == os.getpid():
            lock.break_lock()
    except OSError:
        pass
