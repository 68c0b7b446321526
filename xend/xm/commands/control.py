"""Commands that poke a domain or the hypervisor: domstate, reset, trigger, debug-keys."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import List

from xend.xm import formats
from xend.xm.commands import Context
from xend.xm.commands.devices import arg_check

#: the State letters and what domstate says for them, in the original's order of checks
_STATES = (("s", "shutoff"), ("b", "idle"), ("d", "shutdown"), ("r", "running"),
           ("c", "crashed"))


def domstate(ctx: Context, args: List[str]) -> int:
    """One word: running, idle, paused (by admin), shutdown, shutoff or crashed. (The
    original looked for the letter past the first column, so it never said running; this
    one does.)"""
    dom = arg_check(args, "domstate", 1)[0]
    state = str(formats.child_value(ctx.server.xend.domain(dom), "state", "") or "")
    word = "shutoff"
    if state:
        word = next((w for letter, w in _STATES if letter in state), "")
        if not word and "p" in state:
            word = "paused by admin" if ctx.server.xend.domain.getpauseflag(dom) else "paused"
    if word:
        ctx.write(word + "\n")
    return 0


def reset(ctx: Context, args: List[str]) -> int:
    ctx.server.xend.domain.reset(arg_check(args, "reset", 1)[0])
    return 0


def trigger(ctx: Context, args: List[str]) -> int:
    real = arg_check(args, "trigger", 2, 3)
    vcpu = int(real[2]) if len(real) == 3 else 0
    ctx.server.xend.domain.send_trigger(real[0], real[1], vcpu)
    return 0


def debug_keys(ctx: Context, args: List[str]) -> int:
    ctx.server.xend.node.send_debug_keys(str(arg_check(args, "debug-keys", 1)[0]))
    return 0
