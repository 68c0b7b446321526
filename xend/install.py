"""``xend install-files [--root DIR]``: lay the shipped etc/ files into the system.

pip installs them under ``<prefix>/share/xend/etc``; this copies them to ``<root>/etc``
(root ``/`` by default). An existing file is never overwritten (an administrator's edited
xend-config.sxp must survive an upgrade): the new version is written beside it as
``<file>.dist``, as package managers do.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import sys
from typing import List, Optional

EXECUTABLE_DIRS = ("init.d", "scripts")


def shipped_etc() -> str:
    """The shipped etc/ tree: installed data files, else the source checkout's."""
    installed = os.path.join(sys.prefix, "share", "xend", "etc")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc")


def install_files(root: str = "/", source: Optional[str] = None) -> List[str]:
    """Copy the shipped files; returns one line per file saying what was done."""
    source = source or shipped_etc()
    done = []
    for dirpath, _dirs, files in os.walk(source):
        rel = os.path.relpath(dirpath, source)
        target_dir = os.path.normpath(os.path.join(root, "etc", rel))
        if rel == "systemd":
            target_dir = os.path.join(root, "etc", "systemd", "system")
        os.makedirs(target_dir, exist_ok=True)
        for name in sorted(files):
            src = os.path.join(dirpath, name)
            dst = os.path.join(target_dir, name)
            if os.path.exists(dst):
                if filecmp.cmp(src, dst, shallow=False):
                    done.append(f"unchanged {dst}")
                    continue
                dst += ".dist"
                done.append(f"kept your {dst[:-5]}; new version in {dst}")
            else:
                done.append(f"installed {dst}")
            shutil.copyfile(src, dst)
            executable = os.path.basename(dirpath) in EXECUTABLE_DIRS
            os.chmod(dst, 0o755 if executable else 0o644)
    return done
