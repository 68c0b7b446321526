"""Commands about the host and xend itself: info, log, dmesg."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import List

from xend.xm import formats
from xend.xm.commands import CommandError, Context, UsageError, parse


def info(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("info")
    p.add_argument("-c", "--config", action="store_true")
    p.add_argument("-n", "--numa", action="store_true")
    p.add_argument("extra", nargs="*")
    o = parse(p, args)
    if o.extra:
        raise UsageError("'xm info' takes no arguments besides its options")
    if o.config:
        ctx.write(formats.config_options(_xend_config_items(ctx)))
        return 0
    ctx.write(formats.info(ctx.server.xend.node.info(1 if o.numa else 0)))
    return 0


def _xend_config_items(ctx: Context) -> list:
    """The xend configuration as read locally (``xm info -c``): option name and value."""
    from xend.options import load_options
    from xend.xm.client import xend_config_path

    path = xend_config_path(ctx.config_path, ctx.environ)
    try:
        opts = load_options(path)
    except OSError as e:
        raise CommandError(f"Cannot read xend config {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - ConfigError: its own text names file and line
        raise CommandError(str(e)) from None
    return [(name, opts[name]) for name in opts]


def log(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("log")
    parse(p, args)
    ctx.write(ctx.server.xend.node.log() + "\n")
    return 0


def dmesg(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("dmesg")
    p.add_argument("-c", "--clear", action="store_true")
    p.add_argument("extra", nargs="*")
    o = parse(p, args)
    if o.extra:
        raise UsageError("No parameter required")
    dmesg_api = ctx.server.xend.node.dmesg
    text = dmesg_api.clear() if o.clear else dmesg_api.info()
    # the original's ``print text,``: a line end after text that has none (an empty ring
    # is one empty line)
    ctx.write(text if text.endswith("\n") else text + "\n")
    return 0
