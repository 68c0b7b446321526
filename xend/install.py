"""``xend install-files [--root DIR]``: lay what a package of xend would install into the system.

pip installs the shipped files with the package: the etc/ tree under ``<prefix>/share/xend/etc``
and the man pages under ``<prefix>/share/man`` (where ``man`` finds them when ``<prefix>/bin``
is on PATH); an editable install (and a plain checkout) uses the checkout's etc/ and man/.
This copies them to ``<root>`` (``/`` by default):

* the etc/ tree to ``<root>/etc`` (``systemd/`` to ``etc/systemd/system``): the config, the
  example guest configs, the scripts, the init script, /etc/default/xend, logrotate, bash
  completion;
* the man pages to ``<root>/usr/local/share/man/manN``;
* when the ``xend`` and ``xm`` commands live outside the directories every PATH has (a virtual
  environment such as /opt/xend), small wrappers ``<root>/usr/local/sbin/{xend,xm,xend-sim}``
  that run them, so that root's shell, the init script and the systemd unit find them.

An existing file is never overwritten (an administrator's edited xend-config.sxp must survive an
upgrade): the new version is written beside it as ``<file>.dist``, as package managers do.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from typing import Iterator, List, Optional, Tuple

EXECUTABLE_DIRS = ("init.d", "scripts")
COMMANDS = ("xend", "xm", "xend-sim")
MAN_DIR = os.path.join("usr", "local", "share", "man")
WRAPPER_DIR = os.path.join("usr", "local", "sbin")
# Where PATH always looks (root's shell, `service`, systemd): commands there need no wrapper.
STANDARD_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def from_checkout() -> bool:
    """True when this package runs from a source checkout (an editable install, or none):
    then the checkout's etc/ and man/ are the shipped files, as they are now."""
    return os.path.isfile(os.path.join(CHECKOUT, "etc", "init.d", "xend"))


def shipped_etc() -> str:
    """The shipped etc/ tree."""
    if from_checkout():
        return os.path.join(CHECKOUT, "etc")
    return os.path.join(sys.prefix, "share", "xend", "etc")


def shipped_man_pages() -> List[str]:
    """The shipped man pages (``NAME.SECTION`` files)."""
    if from_checkout():
        return [os.path.join(CHECKOUT, "man", p) for p in man_page_names()]
    return [os.path.join(sys.prefix, "share", "man", f"man{p.rsplit('.', 1)[1]}", p)
            for p in man_page_names()]


def man_page_names() -> List[str]:
    return ["xm.1", "xmdomain.cfg.5", "xend-config.sxp.5", "xend.8"]


def scripts_dir() -> str:
    """Where this installation's console scripts are (a venv's bin/)."""
    return sysconfig.get_path("scripts")


def wrapper_text(command: str) -> str:
    target = os.path.join(scripts_dir(), command)
    return ("#!/bin/sh\n"
            f"# Installed by `xend install-files`: runs {command} of the Python environment\n"
            f"# {sys.prefix}. Remove this file if you remove that environment.\n"
            f'exec {target} "$@"\n')


def _planned(root: str, etc_source: str) -> Iterator[Tuple[str, bytes, int]]:
    """(destination, content, mode) of every file to lay."""
    for dirpath, _dirs, files in sorted(os.walk(etc_source)):
        rel = os.path.relpath(dirpath, etc_source)
        if "__pycache__" in rel.split(os.sep):
            continue
        target_dir = os.path.normpath(os.path.join(root, "etc", rel))
        if rel == "systemd":
            target_dir = os.path.join(root, "etc", "systemd", "system")
        mode = 0o755 if os.path.basename(dirpath) in EXECUTABLE_DIRS else 0o644
        for name in sorted(files):
            yield os.path.join(target_dir, name), _read(os.path.join(dirpath, name)), mode
    for page in shipped_man_pages():
        section = page.rsplit(".", 1)[1]
        yield (os.path.join(root, MAN_DIR, f"man{section}", os.path.basename(page)),
               _read(page), 0o644)
    bindir = scripts_dir()
    if bindir not in STANDARD_BIN_DIRS and os.path.isfile(os.path.join(bindir, "xend")):
        for command in COMMANDS:
            yield (os.path.join(root, WRAPPER_DIR, command), wrapper_text(command).encode(),
                   0o755)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, data: bytes, mode: int) -> None:
    """Atomically: a temp file beside it, fsync, rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def install_files(root: str = "/", source: Optional[str] = None) -> List[str]:
    """Lay the shipped files; returns one line per file saying what was done."""
    done = []
    for dst, data, mode in _planned(root, source or shipped_etc()):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.exists(dst):
            if _read(dst) == data:
                done.append(f"unchanged {dst}")
                continue
            done.append(f"kept your {dst}; new version in {dst}.dist")
            dst += ".dist"
        else:
            done.append(f"installed {dst}")
        _write(dst, data, mode)
    return done
