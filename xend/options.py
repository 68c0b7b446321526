"""Every option of xend-config.sxp, declared once, and the loader that types and checks them.

The table ``OPTIONS`` is the single source of truth: one ``Option`` per setting with its name,
kind (parser + validator), default and help text. It drives loading, validation, the output of
``xend check-config`` and the test that keeps ``etc/xen/xend-config.sxp`` in step.

Reading rules (those of the original xend, reference section 1.1):

* the file is a sequence of SXP forms ``(NAME VALUE)``; the **first** form named NAME wins,
  later ones are ignored (we say so in a warning);
* ``(NAME)`` means "use the default"; ``(NAME a b)`` uses ``a`` (warning: extra values ignored);
  ``(NAME (x y))`` gives the list ``['x', 'y']`` (``xen-api-server``, ``pscsi-device-mask``);
* unknown names are ignored, with a warning that suggests the closest known name.

Unlike the original, which converted values lazily when a subsystem asked for them, every value
is converted and checked **at load**; all problems are collected and raised together as one
``ConfigError`` whose items read ``FILE:LINE: option NAME: expected TYPE, got VALUE``.

Decisions (see also the shipped file's comments):

* A top-level atom (``foo`` rather than ``(foo ...)``) is a **warning**, not an error. The
  original silently ignored such atoms, so a file that ran under it keeps running here; the
  warning (in ``opts.warnings``, which ``xend check-config`` shows) says the text has no effect,
  which catches the usual cause, a line whose parentheses were forgotten.
* ``min-mem`` (a name from the RHEL documentation that no xend ever read) is accepted as an
  alias of ``dom0-min-mem`` with a warning. When both are present ``dom0-min-mem`` wins,
  wherever it is in the file: that is the value the original would have used.
* ``vnc-tls`` and ``vnc-x509-verify`` keep the original quirk: any non-empty value written in the
  file turns them on, even ``0`` or ``no``. Because that surprises people, such values give a
  warning. Only a missing line, ``(vnc-tls)`` or ``(vnc-tls '')`` leaves them off.
* ``file`` options (SSL keys and certificates, the VNC certificate directory) keep the original
  rule: a bare name is taken from ``/etc/xen`` (not from the config file's directory); a value
  given in the file must exist at load. ``''`` means unset (the original turned it into
  ``/etc/xen/``). Defaults are not checked at load: the subsystem using one reports it.
* ``total_available_memory`` is 0 whenever ``enable-dom0-ballooning`` is off (the original
  forced it too); a non-zero value in the file then gives a warning.
* Every option has an effect. Where this xend has no such subsystem (XSM, udev
  events, resource labels, SCSI scanning) the effect is an honest report: a value written in
  the file is listed in ``opts.unsupported``, which the daemon logs at start and
  ``xend check-config`` prints, saying why it does nothing. Defaults are never reported.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from xend import sxp
from xend.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/xen/xend-config.sxp"
MAX_CONFIG_BYTES = 8 << 20      # loading is linear, but a config file of gigabytes is a mistake
CONFIG_ENV = "XEND_CONFIG"
XEN_CONFIG_DIR = "/etc/xen"     # where bare file names of `file` options are looked up
DEFAULT_SOURCE = "default"
OVERRIDE_SOURCE = "override"

TRUE_WORDS = ("yes", "y", "1", "on", "true", "t")
FALSE_WORDS = ("no", "n", "0", "off", "false", "f")


# -- kinds: how a raw SXP value becomes a typed value ---------------------------------------
class Invalid(Exception):
    """Raised by a kind when a value does not fit; ``reason`` is an optional detail."""

    def __init__(self, reason: str = ""):
        super().__init__(reason)
        self.reason = reason


class _Context:
    """What a kind may need while converting one value."""

    def __init__(self, name: str, where: str, scripts_dir: str, notes: List[str]):
        self.name = name
        self.where = where
        self.override = where == OVERRIDE_SOURCE    # a Python value, not text from a file
        self.scripts_dir = scripts_dir
        self._notes = notes

    def warn(self, text: str) -> None:
        self._notes.append(f"{self.where}: option {self.name}: {text}")


class Kind:
    label = "value"
    late = False          # converted after the other options (needs their values)

    def convert(self, raw: Any, ctx: _Context) -> Any:
        raise NotImplementedError

    def show(self, value: Any) -> str:
        """The value as one would write it in the file (for check-config)."""
        if value is None:
            return "(none)"
        return sxp.to_string(value)


class Bool(Kind):
    label = "bool"

    def convert(self, raw: Any, ctx: _Context) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            word = raw.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise Invalid()

    def show(self, value: Any) -> str:
        return "yes" if value else "no"


_INT_RE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")


class Int(Kind):
    """Decimal integer as Python 2's ``int()`` read it: sign allowed; no ``0x10``, ``1.5``, ``8k``."""

    def __init__(self, minimum: Optional[int] = None, maximum: Optional[int] = None,
                 label: Optional[str] = None):
        self.minimum = minimum
        self.maximum = maximum
        if label is None:
            label = "int" if minimum is None else f"int >= {minimum}"
        self.label = label

    def convert(self, raw: Any, ctx: _Context) -> int:
        if isinstance(raw, bool):
            raise Invalid()
        if isinstance(raw, int):
            n = raw
        elif isinstance(raw, str) and _INT_RE.match(raw):
            n = int(raw)
        else:
            raise Invalid()
        if (self.minimum is not None and n < self.minimum) or \
                (self.maximum is not None and n > self.maximum):
            raise Invalid()
        return n


class String(Kind):
    def __init__(self, nonempty: bool = False, label: str = "string"):
        self.nonempty = nonempty
        self.label = label

    def convert(self, raw: Any, ctx: _Context) -> str:
        if not isinstance(raw, str) or (self.nonempty and not raw):
            raise Invalid()
        return raw


class Path(String):
    def __init__(self) -> None:
        super().__init__(nonempty=True, label="path")


class File(Kind):
    """An existing file (or directory); a bare name is looked up in /etc/xen; '' = unset."""

    def __init__(self, directory: bool = False):
        self.directory = directory
        self.label = "existing directory" if directory else "existing file"

    def convert(self, raw: Any, ctx: _Context) -> Optional[str]:
        if not isinstance(raw, str):
            raise Invalid()
        if raw == "":
            return None
        path = raw if os.path.dirname(raw) else os.path.join(XEN_CONFIG_DIR, raw)
        if not os.path.exists(path):
            raise Invalid(f"{path} does not exist")
        if self.directory and not os.path.isdir(path):
            raise Invalid(f"{path} is not a directory")
        if not self.directory and os.path.isdir(path):
            raise Invalid(f"{path} is a directory")
        return path


class Script(Kind):
    """A command line: words split on spaces, the first joined to xend-scripts-path.

    The typed value is the argv list (``None`` when empty); an absolute first word stays as is.
    """

    label = "script"
    late = True

    def convert(self, raw: Any, ctx: _Context) -> Optional[List[str]]:
        if ctx.override and isinstance(raw, list) and all(isinstance(w, str) for w in raw):
            words = [w for w in raw if w]       # an argv list given by a caller
        elif isinstance(raw, str):
            words = raw.split()
        else:
            raise Invalid()
        if not words:
            return None
        words[0] = os.path.join(ctx.scripts_dir, words[0])
        return words

    def show(self, value: Any) -> str:
        return "(none)" if value is None else sxp.to_string(" ".join(value))


class Enum(Kind):
    def __init__(self, choices: Tuple[str, ...], upper: bool = False):
        self.choices = choices
        self.upper = upper
        self.label = "one of " + " ".join(choices)

    def convert(self, raw: Any, ctx: _Context) -> str:
        if isinstance(raw, str):
            word = raw.strip()
            word = word.upper() if self.upper else word.lower()
            if word in self.choices:
                return word
        raise Invalid()


class SxpList(Kind):
    """A nested SXP list: entries that are lists headed by a word, or plain strings."""

    def __init__(self, entries: str):
        assert entries in ("lists", "strings")
        self.entries = entries
        self.label = "list of (...) entries" if entries == "lists" else "list of strings"

    def convert(self, raw: Any, ctx: _Context) -> list:
        if not isinstance(raw, list):
            raise Invalid()
        for item in raw:
            if self.entries == "strings" and not isinstance(item, str):
                raise Invalid(f"entry {sxp.to_string(item)} is not a string")
            if self.entries == "lists" and not (isinstance(item, list) and item
                                                and isinstance(item[0], str)):
                raise Invalid(f"entry {sxp.to_string(item)} is not a (WORD ...) list")
        return copy.deepcopy(raw)


class XenApiServers(SxpList):
    """``xen-api-server``: a list of ``(WHERE [AUTH [HOSTS [KEY CERT]]])`` entries, each
    checked at load (``xend.xenapi.config``); the typed value is the list as written."""

    def __init__(self) -> None:
        super().__init__("lists")
        self.label = "list of (WHERE [AUTH [HOSTS [KEY CERT]]]) entries"

    def convert(self, raw: Any, ctx: _Context) -> list:
        value = super().convert(raw, ctx)
        from xend.xenapi.config import parse_entries
        try:
            parse_entries(value)
        except ValueError as e:
            raise Invalid(str(e)) from None
        return value


class Regexes(Kind):
    """Space-separated regular expressions; the typed value is the string itself."""

    label = "space-separated regular expressions"

    def convert(self, raw: Any, ctx: _Context) -> str:
        if not isinstance(raw, str):
            raise Invalid()
        for word in raw.split():
            try:
                re.compile(word)
            except re.error as e:
                raise Invalid(f"{word}: {e}") from None
        return raw


class Principals(Kind):
    """Space-separated user names, uids and ``@group`` names; the typed value is the list of
    words (``[]`` for '')."""

    label = "space-separated user names, uids and @groups"
    _WORD = re.compile(r"@?[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?\Z")

    def convert(self, raw: Any, ctx: _Context) -> List[str]:
        if ctx.override and isinstance(raw, list):
            words = [str(w) for w in raw]
        elif isinstance(raw, str):
            words = raw.split()
        else:
            raise Invalid()
        for word in words:
            if not self._WORD.match(word):
                raise Invalid(f"{word!r} is not a user name, a uid or @group")
        return words

    def show(self, value: Any) -> str:
        return sxp.to_string(" ".join(value))


class NonEmptyMeansOn(Kind):
    """The vnc-tls quirk: any non-empty text turns the option on (the typed value is a bool)."""

    label = "string"

    def convert(self, raw: Any, ctx: _Context) -> bool:
        if isinstance(raw, (bool, int)):
            return bool(raw)
        if not isinstance(raw, str):
            raise Invalid()
        if raw.strip().lower() in FALSE_WORDS:
            ctx.warn(f"{sxp.to_string(raw)} turns it ON: as in the original xend, any "
                     "non-empty value does; remove the line (or write '') to leave it off")
        return raw != ""

    def show(self, value: Any) -> str:
        return "yes" if value else "no"


class Computed:
    """A default computed from other options' effective values."""

    def __init__(self, func: Callable[[Dict[str, Any]], Any], text: str):
        self.func = func
        self.text = text

    def __call__(self, values: Dict[str, Any]) -> Any:
        return self.func(values)


# -- the table --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    name: str
    kind: Kind
    default: Any
    help: str
    added: bool = False     # ours: not read by Xen 4.4's xend (which hard-coded the value)
    #: for settings this xend cannot act on: typed value -> why (None: nothing to say). Asked
    #: only for values set in the file (or by an override), never for the default, so the
    #: defaults stay quiet; the answers are ``Options.unsupported`` (logged at start, shown
    #: by ``xend check-config``).
    unsupported: Optional[Callable[[Any], Optional[str]]] = None

    def default_text(self) -> str:
        if isinstance(self.default, Computed):
            return self.default.text
        return self.kind.show(self.default)


def _xsm_unsupported(value: str) -> Optional[str]:
    if value == "dummy":
        return None
    return (f"{value} is not supported by this xend: it has no Xen security module support "
            "(no ACM policies, no FLASK labels) and behaves as with dummy; the security "
            "labels of domains are kept in their configuration but never checked")


def _udev_unsupported(value: bool) -> Optional[str]:
    if not value:
        return None
    return ("yes is not supported by this xend: it does not listen to udev events, so "
            "hot-plugged SCSI and USB devices are not noticed")


def _label_script_unsupported(value: Optional[List[str]]) -> Optional[str]:
    if not value:
        return None
    return (f"{' '.join(value)} is never run by this xend: it has no security labels on "
            "resources (no ACM/XSM support), so no label ever changes")


def _pscsi_unsupported(value: list) -> Optional[str]:
    return (f"{sxp.to_string(value)} has no effect in this xend: it does not scan the host's "
            "SCSI devices (it has no Xen-API PSCSI objects and no udev hotplug), so there is "
            "nothing to restrict; the vscsi devices of domains are kept as configured")


BOOL = Bool()
STRING = String()
PATH = Path()
FILE = File()
SCRIPT = Script()
PORT = Int(0, 65535, label="port (0-65535)")
COUNT = Int(0)

OPTIONS: Tuple[Option, ...] = (
    # ---- logging and security module
    Option("logfile", PATH, "/var/log/xen/xend.log",
           "File xend writes its log to."),
    Option("loglevel", Enum(("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True),
           "DEBUG",
           "Lowest level of messages written to the log file. TRACE is one step below DEBUG."),
    Option("xsm_module_name", Enum(("dummy", "acm", "flask")), "dummy",
           "Xen security module in use: dummy (none), acm or flask. Note the underscores. "
           "This xend has no security module support: a value other than dummy is accepted "
           "and reported at start (xend.log) and by xend check-config as not supported.",
           unsupported=_xsm_unsupported),
    # ---- listeners
    Option("xen-api-server", XenApiServers(), [["unix"]],
           "Xen-API listeners, one (WHERE [AUTH [HOSTS [KEY CERT]]]) entry each. WHERE is unix "
           "(the socket xen-api-unix-path), a TCP port (every interface) or ADDRESS:PORT; AUTH "
           "is none (the default, as in the original's code) or pam (user names and passwords "
           "checked by the PAM service login); HOSTS is a space-separated list of patterns for "
           "the peers allowed, as in xend-relocation-hosts-allow ('' = any); KEY and CERT, "
           "both given, make a TCP listener speak HTTPS only. A caller on this host is "
           "identified by its uid as on the other TCP listeners; a caller from another host "
           "is served by a pam listener, or by a none listener that names HOSTS. () = no "
           "Xen-API listener."),
    Option("xend-http-server", BOOL, False,
           "Serve the legacy HTTP/SXP interface on TCP (xend-address, xend-port)."),
    Option("xend-unix-server", BOOL, False,
           "Serve the legacy HTTP/SXP interface on the unix socket xend-unix-path; this also "
           "opens the local relocation socket xend-relocation-unix-path."),
    Option("xend-tcp-xmlrpc-server", BOOL, False,
           "Serve the XML-RPC interface that xm uses on TCP as well (address and port below)."),
    Option("xend-unix-xmlrpc-server", BOOL, True,
           "Serve the XML-RPC interface that xm uses on the unix socket xend-unix-xmlrpc-path. "
           "Turning this off leaves xm unable to talk to xend."),
    Option("xend-relocation-server", BOOL, False,
           "Accept incoming migrations on TCP (xend-relocation-address, xend-relocation-port). "
           "Restrict the peers with xend-relocation-hosts-allow."),
    Option("xend-relocation-ssl-server", BOOL, False,
           "Accept incoming migrations over SSL on xend-relocation-ssl-port; needs "
           "xend-relocation-server-ssl-key-file and -cert-file."),
    Option("xend-udev-event-server", BOOL, False,
           "Listen to udev events so that hot-plugged SCSI and USB devices are noticed. This "
           "xend has no udev listener: yes is reported at start (xend.log) and by xend "
           "check-config as not supported.",
           unsupported=_udev_unsupported),
    Option("xend-unix-path", PATH, "/var/lib/xend/xend-socket",
           "Unix socket of the legacy HTTP/SXP interface (when xend-unix-server is on)."),
    Option("xend-tcp-xmlrpc-server-address", STRING, "localhost",
           "Address the TCP XML-RPC interface binds to; '' = every interface."),
    Option("xend-tcp-xmlrpc-server-port", PORT, 8006,
           "Port of the TCP XML-RPC interface."),
    Option("xend-tcp-xmlrpc-server-ssl-key-file", FILE, None,
           "Private key of the TCP XML-RPC interface. With the certificate set too, that "
           "port speaks HTTPS only. A bare name is looked up in /etc/xen."),
    Option("xend-tcp-xmlrpc-server-ssl-cert-file", FILE, None,
           "Certificate of the TCP XML-RPC interface (see the key file above)."),
    Option("xend-tcp-xmlrpc-server-ssl-ca-file", FILE, None,
           "CA certificate for the clients of the TCP XML-RPC interface over SSL. A caller "
           "from another host is served only over SSL with a client certificate this CA "
           "signed; unset: callers from other hosts are refused. Callers on this host are "
           "told apart by their uid instead (xend-tcp-users-allow).", added=True),
    Option("xend-port", PORT, 8000,
           "Port of the legacy HTTP/SXP interface (when xend-http-server is on)."),
    Option("xend-relocation-port", PORT, 8002,
           "Port on which migrations are received (when xend-relocation-server is on)."),
    Option("xend-relocation-ssl-port", PORT, 8003,
           "Port on which SSL migrations are received (when xend-relocation-ssl-server is on)."),
    Option("xend-relocation-server-ssl-key-file", FILE, None,
           "Private key of the SSL migration receiver; required when it is on. A bare name "
           "is looked up in /etc/xen."),
    Option("xend-relocation-server-ssl-cert-file", FILE, None,
           "Certificate of the SSL migration receiver; required when it is on."),
    Option("xend-relocation-server-ssl-ca-file", FILE,
           Computed(lambda v: v["xend-relocation-ssl-ca-file"],
                    "xend-relocation-ssl-ca-file"),
           "CA certificate the SSL migration receiver checks senders' certificates against: "
           "a sender from another host must be allowed by xend-relocation-hosts-allow and "
           "present a certificate this CA signed. When unset: xend-relocation-ssl-ca-file; "
           "with neither, senders from other hosts are refused on the SSL port. When "
           "sending over SSL, this host presents its own relocation key and certificate "
           "(xend-relocation-server-ssl-key-file and -cert-file) when they are set.",
           added=True),
    Option("xend-relocation-ssl", BOOL, False,
           "Send migrations over SSL unless xm migrate is told otherwise."),
    Option("xend-address", STRING, "",
           "Address the HTTP/SXP interface binds to: '' = every interface, localhost = "
           "this machine only."),
    Option("xend-relocation-address", STRING, "",
           "Address the migration receivers bind to, as for xend-address; a network "
           "interface name such as eth0 stands for that interface's IPv4 address."),
    Option("xend-relocation-hosts-allow", Regexes(), "",
           "Peers allowed to send migrations: space-separated regular expressions, each "
           "matched against the peer's host name and its IP address. '' allows everyone. "
           "Anchor both ends: '^localhost' also admits localhost.attacker.example."),
    Option("xend-tcp-users-allow", Principals(), [],
           "Users of this host, besides root, who may use xend's TCP listeners (TCP "
           "XML-RPC, HTTP, relocation): space-separated user names, uids and @group names, "
           "e.g. 'alice 1001 @xenadm'. A caller on this host is identified by the uid that "
           "owns its end of the connection (the kernel's socket table); any other local user "
           "is refused and the refusal logged. The unix sockets stay root-only.", added=True),
    # ---- consoles, networking, memory, cpus
    Option("console-limit", COUNT, 1024,
           "Size limit of each domain's console buffer, in KiB."),
    Option("network-script", SCRIPT, None,
           "Script that sets up the host's network when xend starts, run as SCRIPT start "
           "ARGS; a bare name is taken from xend-scripts-path. Unset = leave the network alone."),
    Option("vif-script", STRING, "vif-bridge",
           "Default hotplug script for each virtual network interface; a domain's own "
           "configuration may name another. A vif without (script ...) gets (script "
           "VIF-SCRIPT) in its device record when the domain is built, and its backend the "
           "script's path in xend-scripts-path; '' = add none."),
    Option("dom0-min-mem", COUNT, 0,
           "Domain 0 is never ballooned below this many MiB, neither to make room for a new "
           "domain nor by xm mem-set. min-mem is read as this option, with a warning."),
    Option("enable-dom0-ballooning", BOOL,
           Computed(lambda v: v["dom0-min-mem"] != 0, "yes unless dom0-min-mem is 0"),
           "Let xend shrink domain 0 to find memory for new domains. When absent: yes "
           "unless dom0-min-mem is 0."),
    Option("total_available_memory", COUNT, 0,
           "GiB kept in a pool for 32-bit paravirtual domains on hosts with very large memory; "
           "0 = no pool. Forced to 0 when enable-dom0-ballooning is off. xend keeps that much "
           "of the host's memory free: making room for a domain (or growing one) it balloons "
           "dom0 until the domain fits with the pool still free, and refuses when it cannot. "
           "This xend cannot tell 32-bit PV guests from others, so no guest is given the pool."),
    Option("dom0-cpus", COUNT, 0,
           "Number of virtual CPUs domain 0 keeps online once xend starts; 0 = all of them."),
    Option("enable-dump", BOOL, False,
           "Write a core dump of every domain that crashes (into xend-dump-path)."),
    Option("external-migration-tool", STRING, "",
           "Command run for each device at each step of a migration (used for virtual TPMs); "
           "'' = none."),
    # ---- VNC and keyboard defaults for guests
    Option("vnc-listen", STRING, "127.0.0.1",
           "Default address guests' VNC servers listen on; 0.0.0.0 = every interface. Added "
           "as (vnclisten ADDRESS) to each HVM image with (vnc 1) and each vfb using VNC "
           "that has none, when the domain is built."),
    Option("vncpasswd", STRING, None,
           "Default VNC password for guests that have none; '' = no password. Added as "
           "(vncpasswd ...) where vnc-listen is added; it is never written to a log."),
    Option("vnc-tls", NonEmptyMeansOn(), False,
           "Default to TLS for guests' VNC servers. Any non-empty value turns this on, even 0 "
           "or no (a quirk kept from the original; xend warns about it). When on, a domain "
           "using VNC is refused at start if vnc-x509-cert-dir does not exist, and its "
           "qemu-dm-NAME.log shows the tls,x509 settings its device model gets."),
    Option("vnc-x509-cert-dir", File(directory=True), "/etc/xen/vnc",
           "Directory holding ca-cert.pem, server-cert.pem and server-key.pem for VNC TLS; a "
           "bare name is looked up in /etc/xen. Checked when a domain using VNC starts "
           "with vnc-tls on."),
    Option("vnc-x509-verify", NonEmptyMeansOn(), False,
           "Make guests' VNC servers ask for a client certificate signed by the CA. Any "
           "non-empty value turns this on, as for vnc-tls (x509verify instead of x509 in "
           "the device model's VNC settings)."),
    Option("keymap", STRING, None,
           "Default keyboard layout (e.g. en-us) for guests whose configuration has none: "
           "added as (keymap ...) to each HVM image and each vfb without one, when the "
           "domain is built."),
    Option("resource-label-change-script", SCRIPT, None,
           "Script run when the security label of a resource changes. This xend has no "
           "resource labels, so it never runs it: a value is reported at start (xend.log) "
           "and by xend check-config as not supported.",
           unsupported=_label_script_unsupported),
    Option("qemu-dm-logrotate-count", COUNT, 10,
           "How many old qemu-dm-NAME.log files to keep, rotated before each start; 0 = "
           "append to one file. This xend runs no qemu-dm: before each start of a domain "
           "that would have one (HVM, or with a vfb) it rotates DIR/qemu-dm-NAME.log "
           "(DIR: the directory of logfile) into .1 ... .N and writes a line saying that "
           "the device model is simulated."),
    # ---- stores
    Option("xend-domains-path", PATH, "/var/lib/xend/domains",
           "Directory of the configurations of managed domains (xm new)."),
    Option("xend-state-path", PATH, "/var/lib/xend/state",
           "Directory where the Xen-API objects are kept (the host's name and other_config, "
           "networks and disk images made through the Xen-API: xenapi.json) and the state of "
           "migrations in progress. Created (mode 0700) when xend starts."),
    Option("xend-storage-path", PATH, "/var/lib/xend/storage",
           "Directory of the QCoW storage repository. Created (mode 0700) when xend starts, "
           "as by the original; this xend keeps nothing in it."),
    Option("xend-security-path", PATH, "/var/lib/xend/security",
           "Directory of the security (ACM) policies. Created (mode 0700) when xend starts, "
           "as by the original; this xend keeps nothing in it."),
    # ---- devices
    Option("device-create-timeout", COUNT, 100,
           "Seconds to wait for the backends of a new domain's devices to connect "
           "(xend.domain.waitForDevices, xm create/start, restore, restart); then the "
           "domain fails with 'Device N (CLASS) could not be connected'. Devices of the "
           "simulated host connect at once; the xenctrl backend builds domains without "
           "devices, so there is nothing to wait for there."),
    Option("device-destroy-timeout", COUNT, 100,
           "Seconds to wait for the backends of a destroyed domain's devices to go away; "
           "then xend logs 'Device N (CLASS) could not be disconnected' and removes their "
           "store entries itself."),
    Option("pci-passthrough-strict-check", BOOL, True,
           "Refuse to pass a PCI device to an HVM guest when co-assignment or ACS checks "
           "fail. Turning it off may work, and may be insecure. This xend cannot pass PCI "
           "devices through at all: with yes a domain with (device (pci ...)) is refused "
           "at create/start; with no it starts without them (logged), keeping them in its "
           "configuration."),
    Option("pscsi-device-mask", SxpList("strings"), ["*"],
           "SCSI devices xend scans at start, as lsscsi names them, e.g. ('16:0:0:0' '15:0'); "
           "('*') = all of them. A short list makes start faster on big hosts. This xend "
           "scans no SCSI devices: a value written in the file is reported at start "
           "(xend.log) and by xend check-config as having no effect.",
           unsupported=_pscsi_unsupported),
    # ---- ours: values the original hard-coded --------------------------------------------
    Option("xend-pid-file", PATH, "/var/run/xend.pid",
           "Pid file of the running daemon.", added=True),
    Option("xend-debug-logfile", PATH, "/var/log/xen/xend-debug.log",
           "Where the daemon's standard output and error go.", added=True),
    Option("xend-unix-xmlrpc-path", PATH, "/var/run/xend/xmlrpc.sock",
           "Unix socket of the XML-RPC interface that xm uses.", added=True),
    Option("xen-api-unix-path", PATH, "/var/run/xend/xen-api.sock",
           "Unix socket of the Xen-API (the unix entry of xen-api-server); owner-only.",
           added=True),
    Option("xend-relocation-unix-path", PATH, "/var/lib/xend/relocation-socket",
           "Unix socket for local migrations (open when xend-unix-server is on).", added=True),
    Option("xend-relocation-ssl-ca-file", FILE, None,
           "CA certificate that the destination's certificate is checked against when "
           "sending a migration over SSL. Unset = the destination is not verified, as in "
           "the original xend.", added=True),
    Option("xend-dump-path", PATH, "/var/xen/dump",
           "Directory for core dumps of crashed domains (enable-dump).", added=True),
    Option("xend-scripts-path", PATH, "/etc/xen/scripts",
           "Directory in which bare script names (network-script, ...) are looked up.",
           added=True),
    Option("hypervisor-backend", Enum(("auto", "xenctrl", "simulated")), "auto",
           "xenctrl drives a real Xen hypervisor; simulated keeps simulated domains in "
           "simulated-state-path; auto picks xenctrl when Xen is present, else simulated.",
           added=True),
    Option("simulated-state-path", PATH, "/var/lib/xend/simulated",
           "State directory of the simulated hypervisor; its domains survive xend restarts.",
           added=True),
    Option("simulated-host-memory", Int(1), 16384,
           "Memory of the simulated host, in MiB.", added=True),
    Option("simulated-host-cpus", COUNT, 0,
           "CPUs of the simulated host; 0 = as many as this machine has.", added=True),
    Option("simulated-dom0-memory", COUNT, 0,
           "MiB Domain-0 of the simulated host starts with; 0 = a quarter of the host's.",
           added=True),
    Option("simulated-scheduler", Enum(("credit", "credit2")), "credit",
           "Scheduler the simulated host runs (Xen 4.17's default is credit2).", added=True),
)

BY_NAME: Dict[str, Option] = {o.name: o for o in OPTIONS}
assert len(BY_NAME) == len(OPTIONS), "an option is declared twice"
ORIGINAL_NAMES: Tuple[str, ...] = tuple(o.name for o in OPTIONS if not o.added)
ADDED_NAMES: Tuple[str, ...] = tuple(o.name for o in OPTIONS if o.added)

# Names no xend read, accepted for a real option (with a warning naming it).
ALIASES: Dict[str, str] = {"min-mem": "dom0-min-mem"}


# -- locating top-level forms -----------------------------------------------------------------
class _PositionParser(sxp.XendParser):
    """The xend parser, also recording where each top-level value starts."""

    def __init__(self, string: str, source: str = "<string>"):
        super().__init__(string, source)
        self.starts: List[int] = []
        self._depth = 0

    def parse_sexp(self, i: int, depth: int = 0, opened_at: int = 0):
        if depth == 1:
            self.starts.append(opened_at)
        saved, self._depth = self._depth, depth
        try:
            return super().parse_sexp(i, depth, opened_at)
        finally:
            self._depth = saved

    def parse_atom(self, i: int):
        if self._depth == 0:
            self.starts.append(i)
        return super().parse_atom(i)

    def parse_str(self, i: int):
        if self._depth == 0:
            self.starts.append(i)
        return super().parse_str(i)


def _top_level_forms(text: str, source: str) -> List[Tuple[Any, int]]:
    """(value, line) for every top-level value; raises sxp.ParseError. Lines are counted
    from one start to the next, so that this stays linear in the size of the file."""
    parser = _PositionParser(text, source)
    values = parser.parse()
    assert len(values) == len(parser.starts)
    out, line, pos = [], 1, 0
    for value, start in zip(values, parser.starts):
        line += text.count("\n", pos, start)
        pos = start
        out.append((value, line))
    return out


def _recode(value: Any) -> Any:
    """Atoms come out of the parser as latin-1 text; read them as UTF-8 when they are."""
    if isinstance(value, list):
        return [_recode(v) for v in value]
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


# -- resolution -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Setting:
    raw: Any          # the value as written (str or list), or a Python value for overrides
    where: str        # "FILE:LINE" or "override"
    order: int        # line number, for sorting problems (overrides sort last)


def _show_raw(raw: Any) -> str:
    return sxp.to_string(raw)


def _resolve(settings: Dict[str, _Setting]) -> Tuple[dict, dict, List[str], List[str]]:
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    notes: List[str] = []
    problems: List[Tuple[int, str]] = []
    computed: List[Option] = []
    ordered = [o for o in OPTIONS if not o.kind.late] + [o for o in OPTIONS if o.kind.late]
    for opt in ordered:
        setting = settings.get(opt.name)
        if setting is None:
            if isinstance(opt.default, Computed):
                computed.append(opt)
            else:
                values[opt.name] = copy.deepcopy(opt.default)
                sources[opt.name] = DEFAULT_SOURCE
            continue
        ctx = _Context(opt.name, setting.where, values.get("xend-scripts-path",
                                                           BY_NAME["xend-scripts-path"].default),
                       notes)
        try:
            values[opt.name] = opt.kind.convert(setting.raw, ctx)
            sources[opt.name] = setting.where
        except Invalid as e:
            detail = f" ({e.reason})" if e.reason else ""
            problems.append((setting.order, f"{setting.where}: option {opt.name}: expected "
                                            f"{opt.kind.label}, got {_show_raw(setting.raw)}"
                                            f"{detail}"))
            values[opt.name] = None if isinstance(opt.default, Computed) else \
                copy.deepcopy(opt.default)
            sources[opt.name] = DEFAULT_SOURCE
    for opt in computed:
        values[opt.name] = opt.default(values)
        sources[opt.name] = DEFAULT_SOURCE
    if not values["enable-dom0-ballooning"] and values["total_available_memory"]:
        notes.append(f"{sources['total_available_memory']}: option total_available_memory: "
                     f"{values['total_available_memory']} ignored (0 used) because "
                     "enable-dom0-ballooning is off")
        values["total_available_memory"] = 0
    problems.sort(key=lambda p: p[0])
    ordered_values = {o.name: values[o.name] for o in OPTIONS}
    return ordered_values, sources, notes, [p[1] for p in problems]


def _unsupported_notes(values: Dict[str, Any], sources: Dict[str, str]) -> List[str]:
    notes = []
    for opt in OPTIONS:
        if opt.unsupported is None or sources[opt.name] == DEFAULT_SOURCE:
            continue
        why = opt.unsupported(values[opt.name])
        if why:
            notes.append((_line_of(sources[opt.name]),
                          f"{sources[opt.name]}: option {opt.name}: {why}"))
    return [text for _, text in sorted(notes, key=lambda n: n[0])]


def _line_of(where: str) -> int:
    """The line of a "FILE:LINE" source, for ordering (overrides sort last)."""
    tail = where.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 1 << 30


class Options(Mapping):
    """The effective xend configuration: ``opts[name]`` is the typed value.

    Values are bool, int, str, list or None. ``source(name)`` says where a value came from
    ("FILE:LINE", "default" or "override"). Do not mutate the lists it hands out.
    """

    __slots__ = ("_values", "_sources", "_settings", "_load_warnings", "_warnings", "_path",
                 "_unsupported")

    def __init__(self, settings: Dict[str, _Setting], path: Optional[str],
                 load_warnings: List[str]):
        values, sources, notes, problems = _resolve(settings)
        if problems:
            err = ConfigError(problems)
            err.warnings = list(load_warnings) + notes   # type: ignore[attr-defined]
            raise err
        self._values = values
        self._sources = sources
        self._settings = dict(settings)
        self._load_warnings = tuple(load_warnings)
        self._warnings = tuple(load_warnings) + tuple(notes)
        self._path = path
        self._unsupported = tuple(_unsupported_notes(values, sources))

    # Mapping interface (items(), keys(), get(), ``in`` come with it), in table order.
    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        return copy.deepcopy(value) if isinstance(value, list) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<Options from {self._path or 'defaults'}>"

    @property
    def path(self) -> Optional[str]:
        """The config file read (whether or not it existed); None for ``defaults()``."""
        return self._path

    @property
    def warnings(self) -> List[str]:
        """Problems with the file's text (unknown names, duplicates, ignored values ...)."""
        return list(self._warnings)

    @property
    def unsupported(self) -> List[str]:
        """Settings given in the file that this xend cannot act on, each as
        ``WHERE: option NAME: why`` (see ``Option.unsupported``). Defaults never appear."""
        return list(self._unsupported)

    def source(self, name: str) -> str:
        return self._sources[name]

    def with_overrides(self, values: Optional[Mapping] = None, /, **kw: Any) -> "Options":
        """A copy with some options replaced, checked like file values (source "override").

        Keys are option names; in keyword form ``_`` may stand for ``-`` (``xend_port=0``).
        A value may be typed (``True``, ``8002``) or written as in the file (``"yes"``);
        ``None`` drops the setting, i.e. restores the default. Raises ConfigError.
        """
        updates = dict(values or {})
        updates.update(kw)
        settings = dict(self._settings)
        for key, value in updates.items():
            name = key if key in BY_NAME else key.replace("_", "-")
            if name not in BY_NAME:
                raise KeyError(key)
            if value is None:
                settings.pop(name, None)
            else:
                settings[name] = _Setting(value, OVERRIDE_SOURCE, 1 << 30)
        return Options(settings, self._path, list(self._load_warnings))

    @classmethod
    def from_dict(cls, values: Mapping, path: Optional[str] = None) -> "Options":
        """Defaults plus ``values`` (as for ``with_overrides``)."""
        return cls({}, path, []).with_overrides(values)


def defaults() -> Options:
    """Every option at its default (no file read)."""
    return Options({}, None, [])


def config_path(path: Optional[str] = None, environ: Mapping = os.environ) -> str:
    """The file to read: ``path`` if given, else $XEND_CONFIG, else /etc/xen/xend-config.sxp."""
    if path:
        return path
    return environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_options(path: Optional[str] = None, environ: Mapping = os.environ) -> Options:
    """Read, type and check xend-config.sxp; raises ConfigError listing every problem.

    A missing file is not an error (as in the original): all defaults, plus the warning
    "Config file does not exist: PATH".
    """
    path = config_path(path, environ)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return Options({}, path, [f"Config file does not exist: {path}"])
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file: {e.strerror or e}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: config file larger than {MAX_CONFIG_BYTES // (1 << 20)} "
                           "MiB: refused (a complete xend-config.sxp is about 12 KiB)"])
    return parse_options(data, path)


def parse_options(text: str | bytes, source: str = "<string>") -> Options:
    """Options from the text of a config file (``source`` names it in messages)."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    try:
        forms = _top_level_forms(text, source)
    except sxp.ParseError as e:
        raise ConfigError([f"{e.source}:{e.line}:{e.column}: {e.message}"]) from None

    warnings: List[str] = []
    settings: Dict[str, _Setting] = {}
    first_seen: Dict[str, str] = {}          # name -> where, including empty (NAME) forms
    alias_forms: List[Tuple[str, list, int]] = []
    for value, line in forms:
        where = f"{source}:{line}"
        if isinstance(value, str):
            # The original kept such atoms and never looked at them. Refusing them would stop
            # files that ran under it; a warning points at the forgotten parentheses instead.
            warnings.append(f"{where}: {_show_raw(value)} is not an option (NAME VALUE) "
                            "and is ignored")
            continue
        if not value or not isinstance(value[0], str):
            warnings.append(f"{where}: {_show_raw(value)[:60]} has no option name "
                            "and is ignored")
            continue
        name = value[0]
        if name in ALIASES:
            alias_forms.append((name, value, line))
            continue
        if name not in BY_NAME:
            warnings.append(_unknown_warning(where, name))
            continue
        if name in first_seen:
            warnings.append(f"{where}: option {name} given again and ignored: the first "
                            f"one, at {first_seen[name]}, is used")
            continue
        first_seen[name] = where
        if len(value) > 2:
            warnings.append(f"{where}: option {name}: extra values after "
                            f"{_show_raw(value[1])} ignored (quote a value containing spaces)")
        if len(value) >= 2:
            settings[name] = _Setting(_recode(value[1]), where, line)

    alias_seen: Dict[str, str] = {}
    for alias, value, line in alias_forms:
        real = ALIASES[alias]
        where = f"{source}:{line}"
        if alias in alias_seen:
            warnings.append(f"{where}: option {alias} given again and ignored: the first "
                            f"one, at {alias_seen[alias]}, is used")
            continue
        alias_seen[alias] = where
        if real in first_seen:
            warnings.append(f"{where}: option {alias} is not a xend option and is ignored: "
                            f"{real} is set at {first_seen[real]}")
            continue
        first_seen[real] = where
        warnings.append(f"{where}: option {alias} is not a xend option; read as {real} "
                        f"(write {real} instead)")
        if len(value) >= 2:
            settings[real] = _Setting(_recode(value[1]), where, line)

    return Options(settings, source, warnings)


def _unknown_warning(where: str, name: str) -> str:
    known = list(BY_NAME) + list(ALIASES)
    import difflib          # only for a misspelt option
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{where}: unknown option {name!r} ignored{hint}"


# -- xend check-config ------------------------------------------------------------------------
def render_check_config(opts: Options, show_warnings: bool = False) -> str:
    """Every option with its effective value and where it came from, in aligned columns.

    ``show_warnings`` appends ``opts.warnings`` and ``opts.unsupported`` (off by default: the
    CLI prints them to stderr).
    """
    rows = [(name, BY_NAME[name].kind.show(value), opts.source(name))
            for name, value in opts.items()]
    name_w = max(len(r[0]) for r in rows)
    value_w = min(max(len(r[1]) for r in rows), 40)
    lines = [f"config file: {opts.path if opts.path else '(none)'}", ""]
    lines.append(f"{'OPTION':<{name_w}}  {'VALUE':<{value_w}}  SOURCE")
    for name, shown, src in rows:
        lines.append(f"{name:<{name_w}}  {shown:<{value_w}}  {src}")
    notes = opts.warnings + opts.unsupported
    if show_warnings and notes:
        lines.append("")
        lines.extend("warning: " + w for w in notes)
    return "\n".join(lines) + "\n"
