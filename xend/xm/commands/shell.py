"""``xm shell``: xm commands read one a line (``xm> `` on a terminal) and run against the
same xend, until ``quit``, ``exit`` or the end of input."""
from __future__ import annotations

import shlex

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import List

from xend.xm.commands import Context
from xend.xm.commands.devices import arg_check

PROMPT = "xm> "


def shell(ctx: Context, args: List[str]) -> int:
    arg_check(args, "shell", 0)
    from xend.xm import main

    interactive = ctx.stdin.isatty()
    status = 0
    while True:
        if interactive:
            ctx.write(PROMPT)
            ctx.out.flush()
        line = ctx.stdin.readline()
        if not line:
            if interactive:
                ctx.write("\n")
            return status
        try:
            words = shlex.split(line)
        except ValueError as e:
            ctx.err.write(f"Error: {e}\n")
            status = 1
            continue
        if not words:
            continue
        if words[0] in ("quit", "exit"):
            return status
        if words[0] in ("help", "-h", "--help"):
            ctx.write(main.command_help(main.lookup(words[1])) if len(words) > 1
                      and main.lookup(words[1]) else main.long_help())
            continue
        name = main.lookup(words[0])
        if name is None or name == "shell":
            ctx.err.write(f"Error: Subcommand {words[0]} not found!\n")
            status = 1
            continue
        status = main.run_command(ctx, name, words[1:])
