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
