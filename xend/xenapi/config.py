"""The entries of ``xen-api-server`` (reference §4.2): ``(WHERE [AUTH [HOSTS [KEY CERT]]])``.

* WHERE: ``unix`` (any case) = the unix socket ``xen-api-unix-path``; a port number = every
  interface; ``ADDRESS:PORT``.
* AUTH: ``none`` or ``pam``; missing or ``''`` = ``none`` (what the original's code did; its
  shipped comment said pam). Any other word is refused here (the original took it as none).
* HOSTS: space-separated patterns as for ``xend-relocation-hosts-allow`` (whole-text regular
  expressions, IP addresses, CIDR blocks); ``''`` = no restriction by host.
* KEY CERT: both, or neither: a TCP entry with both speaks HTTPS only. A bare file name is
  looked up in /etc/xen; the files must exist.

The original logged a malformed entry and skipped the rest; here every entry is checked when
the file is loaded, so a bad one is refused with its reason and xend does not start half-way.
Pure functions: imported by the options loader.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, List, Optional

XEN_CONFIG_DIR = "/etc/xen"
AUTH_NONE = "none"
AUTH_PAM = "pam"
AUTH_MODES = (AUTH_NONE, AUTH_PAM)


@dataclass(frozen=True)
class Endpoint:
    """One listener of the option."""
    unix: bool
    host: str = ""                  # TCP: bind address ('' = every interface)
    port: int = 0
    auth: str = AUTH_NONE
    hosts: str = ""                 # peer patterns ('' = any host)
    key_file: Optional[str] = None
    cert_file: Optional[str] = None

    @property
    def tls(self) -> bool:
        return self.key_file is not None

    @property
    def name(self) -> str:
        """The listener's name in the log and in ``Listeners``."""
        if self.unix:
            return "XenAPIServer-unix"
        return f"XenAPIServer-{'tls' if self.tls else 'tcp'}-{self.host or '*'}:{self.port}"


_PORT_RE = re.compile(r"[0-9]{1,5}\Z")


def _port(text: str) -> int:
    if not _PORT_RE.match(text) or not 0 < int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def _file(name: str) -> str:
    path = name if os.path.dirname(name) else os.path.join(XEN_CONFIG_DIR, name)
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist or is not a file")
    return path


def parse_entry(entry: Any) -> Endpoint:
    """One entry as the option gives it (a list of strings); ValueError says what is wrong."""
    if not isinstance(entry, list) or not entry or not all(isinstance(w, str) for w in entry):
        raise ValueError("an entry is (WHERE [AUTH [HOSTS [KEY CERT]]]) of words")
    if len(entry) > 5:
        raise ValueError("too many words: (WHERE [AUTH [HOSTS [KEY CERT]]])")
    where = entry[0].strip()
    auth = entry[1].strip().lower() if len(entry) > 1 and entry[1].strip() else AUTH_NONE
    if auth not in AUTH_MODES:
        raise ValueError(f"authentication {entry[1]!r} is neither none nor pam")
    hosts = entry[2] if len(entry) > 2 else ""
    if hosts.strip():
        from xend.relocation.acl import HostsAllow
        try:
            HostsAllow(hosts)
        except re.error as e:
            raise ValueError(f"bad host pattern in {hosts!r}: {e}") from None
    key_file = cert_file = None
    if len(entry) == 4:
        raise ValueError("KEY and CERT go together: give both, or neither")
    if len(entry) == 5:
        key_file, cert_file = _file(entry[3]), _file(entry[4])
    if where.lower() == "unix":
        if key_file is not None:
            raise ValueError("the unix socket does not take KEY and CERT")
        return Endpoint(True, auth=auth, hosts="")
    host, sep, port = where.rpartition(":")
    if not sep:
        host, port = "", where
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Endpoint(False, host, _port(port), auth, hosts.strip(), key_file, cert_file)


def parse_entries(value: List[Any]) -> List[Endpoint]:
    """Every entry of the option's value; ValueError names the first bad one."""
    out = []
    seen = set()
    for entry in value or []:
        try:
            ep = parse_entry(entry)
        except ValueError as e:
            raise ValueError(f"entry {_show(entry)}: {e}") from None
        key = ("unix",) if ep.unix else (ep.host, ep.port)
        if key in seen:
            raise ValueError(f"entry {_show(entry)}: listens where an earlier entry does")
        seen.add(key)
        out.append(ep)
    return out


def _show(entry: Any) -> str:
    from xend import sxp
    return sxp.to_string(entry)
