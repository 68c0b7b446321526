"""Commands that move a domain's memory image: save, restore, migrate."""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import List

from xend.xm.commands import CommandError, Context, parse
from xend.xm.progress import with_progress


def _access_error(directory: str) -> str:
    """Why ``directory`` cannot be written to, in strerror's words ('' if it can)."""
    import errno
    try:
        os.stat(directory)
    except OSError as e:
        return e.strerror or ""
    if not os.path.isdir(directory):
        return os.strerror(errno.ENOTDIR)
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
    except OSError:
        pass
    return os.strerror(errno.EACCES)


def save(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("save")
    p.add_argument("-c", "--checkpoint", action="store_true")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("file", metavar="CheckpointFile")
    o = parse(p, args)
    path = os.path.abspath(o.file)
    if not os.access(os.path.dirname(path), os.W_OK):
        # the original's message, and why
        why = _access_error(os.path.dirname(path))
        raise CommandError(f"xm save: Unable to create file {path}" + (f": {why}" if why else ""))
    with_progress(ctx, "save", o.domain,
                  lambda: ctx.server.xend.domain.save(o.domain, path, o.checkpoint))
    return 0


def restore(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("restore")
    p.add_argument("-p", "--paused", action="store_true")
    p.add_argument("file", metavar="CheckpointFile")
    o = parse(p, args)
    path = os.path.abspath(o.file)
    if not os.access(path, os.R_OK):
        raise CommandError(f"xm restore: Unable to read file {path}")
    with_progress(ctx, "restore", None,
                  lambda: ctx.server.xend.domain.restore(path, o.paused))
    return 0


def migrate(ctx: Context, args: List[str]) -> int:
    p = ctx.parser("migrate")
    p.add_argument("-l", "--live", action="store_true")
    p.add_argument("-p", "--port", type=int, default=0)
    p.add_argument("-n", "--node", type=int, default=-1)
    p.add_argument("-s", "--ssl", action="store_true")
    p.add_argument("-c", "--change_home_server", action="store_true")
    p.add_argument("domain", metavar="Domain")
    p.add_argument("host", metavar="Host")
    o = parse(p, args)
    ssl = True if o.ssl else None  # None: the daemon's xend-relocation-ssl decides
    figures = with_progress(ctx, "migrate", o.domain,
                            lambda: ctx.server.xend.domain.migrate(
                                o.domain, o.host, o.live, o.port, o.node, ssl,
                                o.change_home_server))
    if o.live and isinstance(figures, dict) and "final_pause" in figures:
        try:
            size = int(figures.get("bytes", 0)) / (1024 * 1024)
            secs = float(figures.get("seconds", 0))
            ctx.write("Migrated %s to %s (live): %.1f MiB in %.2f s, final pause %.3f s\n"
                      % (o.domain, o.host, size, secs, float(figures["final_pause"])))
        except (TypeError, ValueError):
            pass
    return 0
