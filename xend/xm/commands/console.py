"""``xm console DOM``: print the domain's buffered console output, then follow it.

The output comes from ``xend.domain.console(dom, offset)`` (offset ``'0'``: from the oldest
byte still buffered; the reply is ``[next_offset, Binary data]``), polled every 0.2 s.
On a terminal, Ctrl-] leaves (the terminal mode is restored). With stdin not a terminal, xm
leaves at end of stdin; in both cases it also leaves when the domain is gone.
"""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, List, Optional

from xend.xm.commands import CommandError, Context, domid_of, parse
from xend.xm.xenconsole import SERVED_BY_XENCONSOLED

ESCAPE = b"\x1d"  # Ctrl-]
POLL_INTERVAL = 0.2


def console(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("console")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-n", "--num", default="0")  # accepted for compatibility: one console only
    p.add_argument("domain", metavar="Domain")
    o = parse(p, args)
    import xmlrpc.client

    try:
        record = ctx.server.xend.domain(o.domain)
    except xmlrpc.client.Fault:
        if o.quiet:
            return 1
        raise
    if domid_of(record) == -1:
        if o.quiet:
            return 1
        raise CommandError(f"Domain '{o.domain}' is not started", usage=True)
    return attach(ctx, o.domain, num=int(o.num) if str(o.num).isdigit() else 0)


def _stdin_fd(ctx: Context) -> Optional[int]:
    try:
        return ctx.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class _RawInput:
    """Character-at-a-time, no-echo input on a terminal; restored on exit."""

    def __init__(self, fd: int):
        self.fd = fd
        self.saved: Any = None

    def __enter__(self) -> "_RawInput":
        import termios

        try:
            self.saved = termios.tcgetattr(self.fd)
        except termios.error:
            return self
        mode = termios.tcgetattr(self.fd)
        mode[0] &= ~(termios.IXON | termios.ICRNL)
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.IEXTEN)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, mode)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def _write(ctx: Context, data: bytes) -> None:
    buffer = getattr(ctx.out, "buffer", None)
    if buffer is not None:
        ctx.out.flush()
        buffer.write(data)
        buffer.flush()
    else:
        ctx.out.write(data.decode("utf-8", "replace"))
        ctx.out.flush()


def attach(ctx: Context, dom: str, interval: float = POLL_INTERVAL, num: int = 0) -> int:
    """Follow ``dom``'s console until Ctrl-] (terminal), end of stdin, or the domain is gone.
    Where xenconsoled serves it (real Xen), xm becomes xenconsoled's client instead."""
    import select
    import xmlrpc.client

    try:
        first = ctx.server.xend.domain.console(dom, "0")
    except xmlrpc.client.Fault as f:
        if SERVED_BY_XENCONSOLED not in f.faultString:
            raise
        from xend.xm.xenconsole import exec_client
        ctx.out.flush()
        exec_client(domid_of(ctx.server.xend.domain(dom)), num)
        raise CommandError("xenconsole (xenconsoled's client) is not installed: "
                           "cannot attach to the console") from None

    fd = _stdin_fd(ctx)
    is_tty = fd is not None and os.isatty(fd)
    raw = _RawInput(fd) if is_tty else None
    offset = "0"
    received_once = False
    try:
        if raw is not None:
            raw.__enter__()
        while True:
            # Drain everything buffered so far.
            while True:
                try:
                    if first is not None:
                        (next_offset, data), first = first, None
                    else:
                        next_offset, data = ctx.server.xend.domain.console(dom, offset)
                except xmlrpc.client.Fault as f:
                    if received_once and f.faultCode == 3:
                        return 0  # the domain is gone
                    raise
                received_once = True
                chunk = data.data if hasattr(data, "data") else bytes(data or b"")
                moved = str(next_offset) != offset
                offset = str(next_offset)
                if chunk:
                    _write(ctx, chunk)
                if not chunk or not moved:
                    break
            if fd is None:
                time.sleep(interval)
                continue
            ready, _, _ = select.select([fd], [], [], interval)
            if not ready:
                continue
            typed = os.read(fd, 1024)
            if not typed:
                return 0  # end of stdin
            if is_tty and ESCAPE in typed:
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if raw is not None:
            raw.__exit__(None, None, None)
            ctx.out.write("\n")
            ctx.out.flush()
