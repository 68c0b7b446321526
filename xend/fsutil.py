"""Small file-system helpers shared by the stores that must survive a crash."""
from __future__ import annotations

import os


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` durable; errors are ignored (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_durably(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a temporary file in the same directory, fsync'ed and
    renamed over it, then the directory fsync'ed. A crash leaves the old file or the new one."""
    import tempfile

    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
