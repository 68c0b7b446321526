"""Shared pieces of the ``xm`` commands: the context a command runs in and its errors.

Each command is a function ``run(ctx, args) -> int`` in one of the modules of this package:
it parses its arguments (``ctx.parser``), makes its XML-RPC calls (``ctx.server``) and writes
its output (``ctx.out``). Errors are raised, never printed: :class:`UsageError` (message and
the command's usage, exit 1), :class:`CommandError` (message, exit status of its own), and the
XML-RPC faults and socket errors that ``xend.xm.main`` maps in one place.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Callable, List, Optional, TextIO


class UsageError(Exception):
    """Bad arguments: ``Error: <message>`` then the command's usage; exit 1."""


class CommandError(Exception):
    """A failure with its own message (printed after ``Error: ``) and exit status."""

    def __init__(self, message: str, status: int = 1, usage: bool = False):
        super().__init__(message)
        self.message = message
        self.status = status
        self.usage = usage


class Context:
    """What a command may use: its output streams, stdin, environment and the server."""

    def __init__(self, uri: Callable[[], str], config_path: Optional[str] = None,
                 out: Optional[TextIO] = None, err: Optional[TextIO] = None,
                 stdin: Optional[TextIO] = None, environ: Optional[dict] = None,
                 server_config: Optional[Callable[[], Any]] = None):
        self._uri = uri
        self._server_config = server_config
        self.config_path = config_path
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.stdin = stdin if stdin is not None else sys.stdin
        self.environ = environ if environ is not None else os.environ
        self._server: Any = None

    @property
    def uri(self) -> str:
        return self._uri()

    @property
    def server(self) -> Any:
        """The XML-RPC proxy, made on first use (so ``create -n`` never connects)."""
        if self._server is None:
            self._server = self.new_server()
        return self._server

    def new_server(self) -> Any:
        """A proxy with a connection of its own (progress polling runs beside a long call):
        the legacy XML-RPC interface, or the Xen-API when xm-config.xml names a Xen-API
        server (then the same calls are made through it: ``xend.xm.xenapi_proxy``)."""
        cfg = self._server_config() if self._server_config is not None else None
        if cfg is not None and cfg.xenapi:
            from xend.xm.xenapi_proxy import XenAPIProxy

            return XenAPIProxy(cfg, warn=self.warn)
        from xend.xm.client import make_proxy

        return make_proxy(self.uri)

    def write(self, text: str) -> None:
        self.out.write(text)

    def warn(self, message: str) -> None:
        self.err.write("Warning: " + message + "\n")

    def parser(self, command: str) -> Any:
        """An ``argparse`` parser that raises :class:`UsageError` instead of exiting."""
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message: str) -> None:  # type: ignore[override]
                raise UsageError(message)

        return Parser(prog="xm " + command, add_help=False, allow_abbrev=True)


def parse(parser: Any, args: List[str]) -> Any:
    """Options may come before, between or after the positionals (as the original's gnu_getopt)."""
    return parser.parse_intermixed_args(args)


def sxp_child_value(sxpr: Any, name: str, default: Any = None) -> Any:
    from xend.xm.formats import child_value

    return child_value(sxpr, name, default)


def domid_of(record: Any) -> int:
    """The domain id in a domain record, ``-1`` when the domain is not running."""
    from xend.xm.formats import to_int

    return to_int(sxp_child_value(record, "domid"), -1)


def read_sxp_file(path: str, what: str) -> list:
    """The first SXP list of a ``-F FILE`` (``what``: ``domain``, ``pool``); CommandError
    with the reason when it is unreadable or holds none."""
    from xend import sxp

    try:
        values = sxp.parse_file(path)
    except OSError as e:
        raise CommandError(f"Cannot read file {path}: {e.strerror}") from None
    except sxp.ParseError as e:
        raise CommandError(str(e)) from None
    if not values or not isinstance(values[0], list):
        raise CommandError(f"No {what} configuration in {path}")
    return values[0]
