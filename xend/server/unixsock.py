"""Unix-socket hygiene shared by every listener on a unix path.

A directory xend creates is owner-only (0700); the socket is bound under a temporary name,
chmod'ed and renamed into place; an existing socket is probed first, so a second xend never
steals a live xend's socket, and a stale one (nobody answering) is replaced.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Optional, Tuple


class SocketInUse(OSError):
    pass


def ensure_private_dir(path: str) -> None:
    """Create the socket's directory owner-only (0700) when it is missing. An existing one is
    left as it is: it may be shared (/tmp, /run), and the socket itself is 0600 anyway."""
    if os.path.isdir(path):
        return
    os.makedirs(path, 0o700, exist_ok=True)
    os.chmod(path, 0o700)       # makedirs leaves the umask's mark on it


def is_live(path: str, timeout: float = 1.0) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        return True
    except socket.timeout:
        return True  # something holds it and is busy: do not steal it
    except OSError:
        return False
    finally:
        probe.close()


def bind_unix(path: str, backlog: int = 64) -> socket.socket:
    """A listening, close-on-exec AF_UNIX socket at ``path`` (mode 0600, dir 0700)."""
    path = os.path.abspath(path)
    ensure_private_dir(os.path.dirname(path))
    if os.path.exists(path) or os.path.islink(path):
        if is_live(path):
            raise SocketInUse(errno.EADDRINUSE, f"{path} is in use by a running server")
        os.unlink(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return sock


def bound_inode(path: str) -> int:
    """The inode of the socket file at ``path`` right after bind_unix (to remove it later
    only if it is still ours)."""
    return os.stat(path).st_ino


def remove_if_ours(path: str, inode: int) -> None:
    """Unlink ``path`` only if it is still the socket file we bound."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def peer_credentials(sock: socket.socket) -> Optional[Tuple[int, int, int]]:
    """(pid, uid, gid) of the peer of a connected AF_UNIX socket (SO_PEERCRED), or None."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)


def peer_pid(sock: socket.socket) -> Optional[int]:
    creds = peer_credentials(sock)
    return creds[0] if creds else None


def peer_description(sock: socket.socket) -> str:
    """``unix:pid=P,uid=U`` of the peer of a connected AF_UNIX socket (SO_PEERCRED)."""
    creds = peer_credentials(sock)
    return f"unix:pid={creds[0]},uid={creds[1]}" if creds else "unix"
