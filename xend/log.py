"""Logging from the options ``logfile`` and ``loglevel`` (reference section 3.5).

The main log uses the original line format and a WatchedFileHandler, so a rename-based
logrotate loses no lines (the original's in-process rotation fought logrotate).
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import tempfile
from typing import Mapping

TRACE = logging.DEBUG - 1
logging.addLevelName(TRACE, "TRACE")

LOG_FORMAT = "[%(asctime)s %(process)d] %(levelname)s (%(module)s:%(lineno)d) %(message)s"
STDERR_FORMAT = "[%(name)s] %(levelname)s (%(module)s:%(lineno)d) %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

LOGGER_NAME = "xend"


def level_number(name: str) -> int:
    if name.upper() == "TRACE":
        return TRACE
    value = logging.getLevelName(name.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {name!r}")
    return value


LOG_MODE = 0o640        # a log file xend creates: the log names paths, peers and users


def open_log(path: str, encoding: str = "utf-8"):
    """``path`` opened for appending text, created with LOG_MODE when missing (an existing
    file keeps its mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_MODE)
    return os.fdopen(fd, "a", buffering=1, encoding=encoding)


class PrivateWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler whose file, when it (re)creates it, is LOG_MODE, not 0644."""

    def _open(self):
        return open_log(self.baseFilename, self.encoding or "utf-8")


def make_dir(path: str, mode: int = 0o700) -> None:
    """Create ``path`` (and parents) with ``mode`` if missing."""
    if path and not os.path.isdir(path):
        os.makedirs(path, mode, exist_ok=True)


class XendLog:
    """Owns the handlers of the ``xend`` logger; ``path`` is the file really written
    (a temp file when the configured one cannot be opened, as the original did)."""

    def __init__(self, opts: Mapping, debug_to_stderr: bool = False):
        self.logger = logging.getLogger(LOGGER_NAME)
        self.path = opts["logfile"]
        try:
            make_dir(os.path.dirname(self.path))
            handler: logging.Handler = PrivateWatchedFileHandler(self.path)
        except OSError:
            fd, self.path = tempfile.mkstemp(suffix="-xend.log")
            os.close(fd)
            handler = PrivateWatchedFileHandler(self.path)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        self.handlers = [handler]
        if debug_to_stderr:
            err = logging.StreamHandler()
            err.setFormatter(logging.Formatter(STDERR_FORMAT))
            self.handlers.append(err)
        for h in self.handlers:
            self.logger.addHandler(h)
        self.logger.setLevel(level_number(opts["loglevel"]))
        self.logger.propagate = False

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()
