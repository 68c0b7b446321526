"""``xm top``: xentop's table of the domains, from xend's records. ``-b`` (batch) prints a
header and one row per domain each iteration (``-i N`` of them, ``-d SECONDS`` apart), as
``xentop -b`` does; on a terminal it redraws the screen until ``q`` (or Ctrl-C)."""
from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Dict, List, Tuple

from xend.xm import formats
from xend.xm.commands import Context, UsageError, parse


def _node(ctx: Context) -> Dict[str, Any]:
    return {pair[0]: pair[1] for pair in ctx.server.xend.node.info()[1:] if len(pair) > 1}


def _sample(ctx: Context) -> Tuple[float, List[list]]:
    return time.monotonic(), ctx.server.xend.domains_with_state(True, "all", True)


def _cpu_pct(prev: Dict[Any, Tuple[float, float]], now: float):
    def pct(record: list) -> float:
        domid = formats.child_value(record, "domid")
        before = prev.get(domid)
        if before is None or now <= before[1]:
            return 0.0
        used = formats.to_float(formats.child_value(record, "cpu_time", 0.0)) - before[0]
        return max(0.0, used * 100.0 / (now - before[1]))
    return pct


def _summary(node: Dict[str, Any], records: List[list]) -> List[str]:
    live = [r for r in records if formats.child_value(r, "domid") is not None]
    counts = dict.fromkeys(("running", "blocked", "paused", "crashed", "dying", "shutdown"), 0)
    for r in live:
        state = str(formats.child_value(r, "state", "")).ljust(6, "-")
        for key, at in (("running", 0), ("blocked", 1), ("paused", 2), ("shutdown", 3),
                        ("crashed", 4), ("dying", 5)):
            if state[at] != "-":
                counts[key] += 1
                break
    total = formats.to_int(node.get("total_memory", 0)) * 1024
    free = formats.to_int(node.get("free_memory", 0)) * 1024
    version = "%s.%s%s" % (node.get("xen_major", "?"), node.get("xen_minor", "?"),
                           node.get("xen_extra", ""))
    return ["xentop - %s   Xen %s" % (time.strftime("%H:%M:%S"), version),
            "%d domains: %d running, %d blocked, %d paused, %d crashed, %d dying, "
            "%d shutdown " % (len(live), counts["running"], counts["blocked"],
                              counts["paused"], counts["crashed"], counts["dying"],
                              counts["shutdown"]),
            "Mem: %dk total, %dk used, %dk free    CPUs: %s @ %sMHz"
            % (total, total - free, free, node.get("nr_cpus", "?"), node.get("cpu_mhz", "?"))]


def top(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("top")
    p.add_argument("-b", "--batch", action="store_true")
    p.add_argument("-i", "--iterations", type=int, default=0)
    p.add_argument("-d", "--delay", type=float, default=3.0)
    p.add_argument("-f", "--full-name", action="store_true")
    o = parse(p, args)
    if o.delay <= 0 or o.iterations < 0:
        raise UsageError("the delay must be positive and the iterations not negative")
    batch = o.batch or not ctx.out.isatty()
    node = _node(ctx)
    total_kib = formats.to_int(node.get("total_memory", 0)) * 1024
    prev: Dict[Any, Tuple[float, float]] = {}
    left = o.iterations
    try:
        while True:
            now, records = _sample(ctx)
            rows = formats.top_rows(records, total_kib, _cpu_pct(prev, now), o.full_name)
            if batch:
                ctx.write(formats.TOP_HEADER + "\n" + "".join(r + "\n" for r in rows))
            else:
                ctx.write("\x1b[H\x1b[2J" + "\n".join(_summary(_node(ctx), records))
                          + "\n\n" + formats.TOP_HEADER + "\n"
                          + "".join(r + "\n" for r in rows)
                          + "\nq: quit   (every %g s)\n" % o.delay)
            ctx.out.flush()
            prev = {formats.child_value(r, "domid"):
                    (formats.to_float(formats.child_value(r, "cpu_time", 0.0)), now)
                    for r in records}
            if left:
                left -= 1
                if not left:
                    return 0
            if _wait_for_quit(ctx, o.delay, batch):
                return 0
    except KeyboardInterrupt:
        return 0


def _wait_for_quit(ctx: Context, delay: float, batch: bool) -> bool:
    """Sleep ``delay`` s; on a terminal, True as soon as ``q`` is typed."""
    if batch:
        time.sleep(delay)
        return False
    import select
    import termios
    import tty

    fd = ctx.stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        time.sleep(delay)
        return False
    try:
        tty.setcbreak(fd)
        deadline = time.monotonic() + delay
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], left)
            if ready and ctx.stdin.read(1) in ("q", "Q"):
                return True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
