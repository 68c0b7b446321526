"""xenconsoled's client: on real Xen a guest's console is served by xenconsoled, and
``xm console`` (and ``create -c``/``start -c``) replaces itself with ``xenconsole DOMID``, as
the original xm did. Ctrl-] leaves it."""
from __future__ import annotations

import glob
import os
import shutil

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Optional

#: what xend answers ``xend.domain.console`` with when xenconsoled serves the console
SERVED_BY_XENCONSOLED = "is served by xenconsoled"
PLACES = ("/usr/lib/xen-*/bin/xenconsole", "/usr/lib/xen/bin/xenconsole",
           "/usr/libexec/xen/bin/xenconsole")


def find_client() -> Optional[str]:
    for pattern in PLACES:
        for path in sorted(glob.glob(pattern), reverse=True):     # the newest Xen first
            if os.access(path, os.X_OK):
                return path
    return shutil.which("xenconsole")


def exec_client(domid: int, num: int = 0) -> None:
    """Replace this process with xenconsole attached to ``domid``'s console ``num``; returns
    only if there is no client (the caller reports it)."""
    client = find_client()
    if client is None:
        return
    args = [client, str(domid)] if num == 0 else [client, "--num", str(num), str(domid)]
    os.execv(client, args)
