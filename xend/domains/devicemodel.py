"""The device model's log (options qemu-dm-logrotate-count, vnc-*, keymap; reference §3.5).

The original started qemu-dm for every HVM domain and every PV domain with a vfb, its output
going to ``/var/log/xen/qemu-dm-<name>.log``, rotated into ``.1`` ... ``.N`` before each start
(N = ``qemu-dm-logrotate-count``; 0 = append to the one file). This xend runs no device
model: the domain's devices are those of the hypervisor backend. It keeps the log, in the
directory of ``logfile``, rotated the same way, and writes there that the device model is
simulated and which display settings it would have been given (never a password).
"""
from __future__ import annotations

import logging
import os
import time
from typing import List, Optional

from .config import DomainConfig
from .devices import _value, hvm_uses_vnc, vfb_uses_vnc, vfbs
from .settings import Settings

log = logging.getLogger("xend.image")


def log_path(s: Settings, name: str) -> str:
    return os.path.join(s.log_dir, f"qemu-dm-{name}.log")


def rotate(path: str, count: int) -> None:
    """``path`` -> ``path.1`` -> ... -> ``path.<count>`` (the oldest dropped); count 0: none."""
    if count <= 0:
        return
    oldest = f"{path}.{count}"
    if os.path.lexists(oldest):
        os.unlink(oldest)
    for n in range(count - 1, 0, -1):
        if os.path.lexists(f"{path}.{n}"):
            os.rename(f"{path}.{n}", f"{path}.{n + 1}")
    if os.path.lexists(path):
        os.rename(path, f"{path}.1")


def display_settings(cfg: DomainConfig, s: Settings) -> List[str]:
    """What the device model would have been told about the display, one phrase each."""
    out = []
    places = []
    if hvm_uses_vnc(cfg):
        places.append(list(cfg.image_extra))
    places += [d[1:] for d in vfbs(cfg) if vfb_uses_vnc(d)]
    for entries in places[:1]:              # the original used the first VNC configuration
        listen = _value(entries, "vnclisten") or s.vnc_listen
        display = _value(entries, "vncdisplay") or "0"
        opts = ""
        if _value(entries, "vncpasswd") not in (None, ""):
            opts += ",password"
        if s.vnc_tls:
            kind = "x509verify" if s.vnc_x509_verify else "x509"
            opts += f",tls,{kind}={s.vnc_x509_cert_dir}"
        out.append(f"vnc {listen}:{display}{opts}")
    keymap = _value(list(cfg.image_extra), "keymap") if cfg.hvm else None
    for d in vfbs(cfg):
        keymap = _value(d[1:], "keymap") or keymap
    if keymap:
        out.append(f"keymap {keymap}")
    return out


def start_log(s: Settings, cfg: DomainConfig, domid: int, backend: str) -> Optional[str]:
    """Rotate ``qemu-dm-<name>.log`` and write its first lines for a domain starting now.
    Returns the path written, None on failure (logged: a log problem never stops a domain)."""
    path = log_path(s, cfg.name)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"[{stamp}] domain {cfg.name} (id {domid}): the device model is simulated: this "
             f"xend starts no qemu-dm (hypervisor backend {backend})."]
    shown = display_settings(cfg, s)
    if shown:
        lines.append(f"[{stamp}] display: " + "; ".join(shown))
    try:
        rotate(path, s.qemu_dm_logrotate_count)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    except OSError as e:
        log.warning("Domain %s: cannot write device model log %s: %s", cfg.name, path,
                    e.strerror or e)
        return None
    log.debug("Domain %s: device model log %s", cfg.name, path)
    return path
