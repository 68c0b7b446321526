"""How ``xm`` prints things, column for column as the 4.4 original (reference 9.3-9.5).

Every function takes the values as they arrive over XML-RPC (SXP records as nested lists whose
atoms may be strings, ints or floats; 64-bit numbers may be strings) and returns the text,
one ``\\n``-terminated line per row. Nothing here talks to xend or imports ``sexpdata``;
only :func:`list_long` needs the SXP printer.
"""
from __future__ import annotations

import math

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Callable, Iterable, List, Optional, Sequence

LIST_HEADER = "%-40s %5s %5s %5s %10s %9s" % ("Name", "ID", "Mem", "VCPUs", "State", "Time(s)")
# The row's Time(s) field is one column narrower than its header (quirk 9 of the reference).
LIST_ROW = "%(name)-40s %(domid)5s %(mem)5d %(vcpus)5d %(state)10s %(cpu_time)8.1f"

VCPU_HEADER = "%-32s %5s %5s %5s %5s %9s %s" % ("Name", "ID", "VCPU", "CPU", "State", "Time(s)",
                                               "CPU Affinity")
VCPU_ROW = "%(name)-32s %(domid)5s %(number)5d %(cpu)5s %(state)5s  %(cpu_time)8.1f %(affinity)s"

UPTIME_HEADER = "%-33s %4s %s " % ("Name", "ID", "Uptime")
UPTIME_ROW_PREFIX = "%(name)-32s %(domid)5s "

CREDIT_HEADER = "%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap")
CREDIT_ROW = "%(name)-32s %(domid)5s %(weight)6d %(cap)4d"
CREDIT2_HEADER = "%-33s %4s %6s" % ("Name", "ID", "Weight")
CREDIT2_ROW = "%(name)-32s %(domid)5s %(weight)6d"

INFO_ROW = "%-23s:"


# -- SXP lookups (the few the formats need; no parser involved) ------------------------------
def child(sxpr: Any, name: str) -> Optional[list]:
    """The first child list of ``sxpr`` headed ``name``."""
    if isinstance(sxpr, list):
        for item in sxpr[1:]:
            if isinstance(item, list) and item and item[0] == name:
                return item
    return None


def child_value(sxpr: Any, name: str, default: Any = None) -> Any:
    """The value of the first ``(name value ...)`` child; ``default`` if absent or empty."""
    c = child(sxpr, name)
    if c is None or len(c) < 2:
        return default
    return c[1]


def children(sxpr: Any, name: str) -> List[list]:
    if not isinstance(sxpr, list):
        return []
    return [c for c in sxpr[1:] if isinstance(c, list) and c and c[0] == name]


def to_int(value: Any, default: int = 0) -> int:
    """An int from an int, a float or a (possibly 64-bit, possibly ``'12.0'``) string."""
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(float(value))


def to_float(value: Any, default: float = 0.0) -> float:
    if value is None or value == "":
        return default
    return float(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# -- xm list -----------------------------------------------------------------------------------
def domain_summary(record: list) -> dict:
    """The fields ``xm list``, ``uptime`` and ``sched-credit`` show for one domain record."""
    domid = child_value(record, "domid")
    vcpus = child_value(record, "online_vcpus")
    if vcpus is None:
        vcpus = child_value(record, "vcpus", 0)
    return {
        "domid": "" if domid is None else _text(domid),
        "name": _text(child_value(record, "name", "??")),
        "state": _text(child_value(record, "state", "")),
        "vcpus": to_int(vcpus),
        "mem": to_int(child_value(record, "memory", 0)),
        "cpu_time": to_float(child_value(record, "cpu_time", 0.0)),
        "start_time": to_float(child_value(record, "start_time", -1), -1.0),
    }


def list_brief(records: Iterable[list]) -> str:
    """``xm list``: header and one row per record, in the order given."""
    lines = [LIST_HEADER]
    lines.extend(LIST_ROW % domain_summary(r) for r in records)
    return "\n".join(lines) + "\n"


LABEL_HEADER = LIST_HEADER + " %-10s" % "Label"
LABEL_ROW = LIST_ROW + " %(seclabel)10s"


def list_label(records: Iterable[list]) -> str:
    """``xm list --label``: the Label column too, rows ordered by label."""
    rows = []
    for r in records:
        d = domain_summary(r)
        d["seclabel"] = _text(child_value(r, "security_label", "") or "")
        rows.append((d["seclabel"].lower(), LABEL_ROW % d))
    rows.sort(key=lambda row: row[0])
    return "\n".join([LABEL_HEADER] + [row for _, row in rows]) + "\n"


def py2_float(value: float) -> str:
    """A float as the original's Python 2 ``str()`` showed it: 12 significant digits, a
    ``.0`` kept (``1357749308.05``, ``24.116146647``, ``0.0``)."""
    text = "%.12g" % value
    if all(c in "0123456789-" for c in text):
        text += ".0"
    return text


def _py2_floats(value: Any) -> Any:
    if isinstance(value, list):
        return [_py2_floats(v) for v in value]
    if isinstance(value, float):
        return py2_float(value)
    return value


def list_long(records: Iterable[list], width: int = 80) -> str:
    """``xm list -l``: each record pretty-printed as SXP (floats as the original showed
    them)."""
    from xend.sxp import prettyprint

    return "".join(prettyprint(_py2_floats(r), width) for r in records)


# -- xm info -----------------------------------------------------------------------------------
def info(pairs: Sequence[Sequence[Any]]) -> str:
    """``xm info``: every pair but the first (``system``); a pair without a value is ``(none)``."""
    lines = []
    for pair in list(pairs)[1:]:
        if len(pair) < 2:
            lines.append(INFO_ROW % _text(pair[0]) + " (none)")
        else:
            lines.append(INFO_ROW % _text(pair[0]) + " " + _text(pair[1]))
    return "".join(line + "\n" for line in lines)


def config_options(items: Iterable[Sequence[Any]]) -> str:
    """``xm info -c``: the xend configuration, one ``%-38s:`` line per option."""
    lines = []
    for item in items:
        if len(item) < 2 or item[1] is None:
            lines.append("%-38s: (none)" % item[0])
        else:
            lines.append("%-38s: %s" % (item[0], _text(item[1])))
    return "".join(line + "\n" for line in lines)


# -- xm vcpu-list ------------------------------------------------------------------------------
def cpu_ranges(cpus: Iterable[int]) -> str:
    """``[0, 1, 2, 3, 6]`` -> ``0-3,6``; nothing -> ``no cpus``."""
    ordered = sorted(set(cpus))
    if not ordered:
        return "no cpus"
    parts = []
    start = prev = ordered[0]
    for c in ordered[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
        if c is not None:
            start = prev = c
    return ",".join(parts)


def affinity(cpumap: Any, nr_cpus: Optional[int]) -> str:
    """The CPU Affinity column: ``any cpu`` when every host CPU is allowed."""
    if not isinstance(cpumap, list):
        cpumap = [] if cpumap in (None, "") else [cpumap]
    cpus = {to_int(c) for c in cpumap}
    if nr_cpus is not None:
        cpus = {c for c in cpus if c < nr_cpus}
        if len(cpus) == nr_cpus:
            return "any cpu"
    return cpu_ranges(cpus)


def vcpu_list(infos: Iterable[list], nr_cpus: Optional[int] | Callable[[], Optional[int]]) -> str:
    """``xm vcpu-list`` from ``xend.domain.getVCPUInfo`` results.

    ``nr_cpus`` (the host's CPU count, for ``any cpu``) may be a function, called once and only
    if some VCPU is listed.
    """
    lines = [VCPU_HEADER]
    host_cpus: List[Optional[int]] = []

    def nr() -> Optional[int]:
        if not host_cpus:
            host_cpus.append(nr_cpus() if callable(nr_cpus) else nr_cpus)
        return host_cpus[0]

    for dom in infos:
        name = _text(child_value(dom, "name", ""))
        domid = child_value(dom, "domid")
        domid = "" if domid is None else _text(domid)
        for vcpu in children(dom, "vcpu"):
            cpu = to_int(child_value(vcpu, "cpu", -1), -1)
            if cpu < 0:
                cpu_col, state = "", ""
            elif to_int(child_value(vcpu, "online", 0)):
                cpu_col = str(cpu)
                state = ("r" if to_int(child_value(vcpu, "running", 0)) else "-") + \
                        ("b" if to_int(child_value(vcpu, "blocked", 0)) else "-") + "-"
            else:
                cpu_col, state = "-", "--p"
            lines.append(VCPU_ROW % {
                "name": name, "domid": domid,
                "number": to_int(child_value(vcpu, "number", 0)),
                "cpu": cpu_col, "state": state,
                "cpu_time": to_float(child_value(vcpu, "cpu_time", 0.0)),
                "affinity": affinity(child_value(vcpu, "cpumap", []), nr()),
            })
    return "\n".join(lines) + "\n"


# -- xm uptime ---------------------------------------------------------------------------------
def _round(x: float) -> int:
    """Round half away from zero, as Python 2's ``round`` did."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def uptime_seconds(summary: dict, now: float, dom0_uptime: Callable[[], float]) -> int:
    domid = summary["domid"]
    if domid == "":
        return 0
    if to_int(domid) > 0:
        if summary["start_time"] < 0:
            return 0
        return max(0, _round(now - summary["start_time"]))
    return max(0, _round(dom0_uptime()))


def uptime_text(seconds: int, short: bool) -> str:
    """``[D day(s), ]H:MM:SS`` (long) or ``[D day(s), ]H:MM`` (short)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = ""
    if days > 0:
        text = "%d day%s, " % (days, "s" if days > 1 else "")
    text += "%2d:%02d" % (hours, minutes)
    if not short:
        text += ":%02d" % secs
    return text


def uptime(records: Iterable[list], now: float, dom0_uptime: Callable[[], float],
           short: bool = False, clock: str = "") -> str:
    """``xm uptime`` (``short``: ``xm uptime -s``, with ``clock`` the local ``HH:MM:SS``)."""
    lines = [] if short else [UPTIME_HEADER]
    for record in records:
        d = domain_summary(record)
        text = uptime_text(uptime_seconds(d, now, dom0_uptime), short)
        if short:
            lines.append(" %s up %s, %s (%s)" % (clock, text, d["name"], d["domid"]))
        else:
            lines.append(UPTIME_ROW_PREFIX % d + text)
    return "".join(line + "\n" for line in lines)


# -- xm sched-credit ---------------------------------------------------------------------------
def sched_credit(rows: Iterable[dict]) -> str:
    """``xm sched-credit``: rows of ``name``, ``domid`` (str, blank if inactive), weight, cap."""
    return _sched_table(rows, CREDIT_HEADER, CREDIT_ROW, ("weight", "cap"))


def sched_credit2(rows: Iterable[dict]) -> str:
    """``xm sched-credit2``: rows of ``name``, ``domid``, weight."""
    return _sched_table(rows, CREDIT2_HEADER, CREDIT2_ROW, ("weight",))


def _sched_table(rows: Iterable[dict], header: str, row_format: str, keys) -> str:
    lines = [header]
    for row in rows:
        values = {k: to_int(row[k], -1) for k in keys}
        lines.append(row_format % dict(values, name=row["name"], domid=row["domid"]))
    return "\n".join(lines) + "\n"


# -- xm block-list / network-list / pci-list -----------------------------------------------------
BLOCK_HEADER = "Vdev  BE handle state evt-ch ring-ref BE-path"
BLOCK_ROW = ("%(idx)-5d  %(backend-id)-3d  %(handle)-3d   %(state)-3d    %(event-ch)-3d    "
             "%(ring-ref)-5d %(be-path)-30s  ")
NETWORK_HEADER = "Idx BE     MAC Addr.     handle state evt-ch tx-/rx-ring-ref BE-path"
NETWORK_ROW = ("%(idx)-3d %(backend-id)-3d%(mac)-17s    %(handle)-3d   %(state)-3d    "
               "%(event-ch)-3d   %(tx-ring-ref)-5d/%(rx-ring-ref)-5d   %(be-path)-30s  ")
#: key -> (field in the frontend's entries, type, default)
_DEV_FIELDS = {
    "backend-id": ("backend-id", int, -1), "handle": ("handle", int, 0),
    "state": ("state", int, -1), "be-path": ("backend", str, "??"),
    "event-ch": ("event-channel", int, -1), "tx-ring-ref": ("tx-ring-ref", int, -1),
    "rx-ring-ref": ("rx-ring-ref", int, -1), "mac": ("mac", str, "??"),
    "ring-ref": ("ring-ref", int, -1),
}


def device_info(entries: Any) -> dict:
    """The columns of one device of ``getDeviceSxprs`` (its ``[[key, value], ...]``)."""
    values = {}
    for item in entries if isinstance(entries, list) else []:
        if isinstance(item, list) and len(item) > 1 and item[0] not in values:
            values[item[0]] = item[1]
    out = {}
    for key, (name, kind, default) in _DEV_FIELDS.items():
        value = values.get(name, default)
        try:
            out[key] = kind(value) if kind is str else to_int(value, default)
        except (TypeError, ValueError):
            out[key] = default
    return out


def _device_rows(devs: Iterable[Any], header: str, row: str) -> str:
    lines = []
    for dev in devs:
        if not (isinstance(dev, list) and len(dev) > 1):
            continue
        if not lines:
            lines.append(header)
        info = device_info(dev[1])
        info["idx"] = to_int(dev[0])
        lines.append(row % info)
    return "".join(line + "\n" for line in lines)


def block_list(devs: Iterable[Any]) -> str:
    """``xm block-list``: nothing at all for a domain without disks."""
    return _device_rows(devs, BLOCK_HEADER, BLOCK_ROW)


def network_list(devs: Iterable[Any]) -> str:
    return _device_rows(devs, NETWORK_HEADER, NETWORK_ROW)


AUTO_PHP_SLOT = 0x100


def pci_list(devs: Iterable[dict]) -> str:
    """``xm pci-list``: ``Vdev Device`` (or ``Device`` when no device has a virtual slot),
    ordered by virtual slot then address; nothing without devices."""
    rows = []
    for d in devs:
        num = {k: int(str(d.get(k, "0")), 16) for k in ("domain", "bus", "slot", "func")}
        num["vdevfn"] = int(str(d.get("vdevfn", "0x100")), 16)
        rows.append(num)
    if not rows:
        return ""
    rows.sort(key=lambda x: ((x["vdevfn"] - (x["vdevfn"] & 7)) << 32)
              | (x["domain"] << 16) | (x["bus"] << 8) | (x["slot"] << 3) | x["func"])
    with_vslot = any(not x["vdevfn"] & AUTO_PHP_SLOT for x in rows)
    lines = ["Vdev Device" if with_vslot else "Device"]
    for x in rows:
        text = "%(domain)04x:%(bus)02x:%(slot)02x.%(func)x" % x
        if with_vslot:
            vslot = "-" if x["vdevfn"] & AUTO_PHP_SLOT else \
                "%02x.%01x" % (x["vdevfn"] >> 3, x["vdevfn"] & 7)
            text = "%-4s " % vslot + text
        lines.append(text)
    return "".join(line + "\n" for line in lines)


# -- xm top (xentop's columns) --------------------------------------------------------------------
TOP_FIELDS = (("NAME", 10), ("STATE", 6), ("CPU(sec)", 10), ("CPU(%)", 6), ("MEM(k)", 10),
              ("MEM(%)", 6), ("MAXMEM(k)", 10), ("MAXMEM(%)", 9), ("VCPUS", 5), ("NETS", 4),
              ("NETTX(k)", 8), ("NETRX(k)", 8), ("VBDS", 4), ("VBD_OO", 8), ("VBD_RD", 8),
              ("VBD_WR", 8), ("VBD_RSECT", 10), ("VBD_WSECT", 10), ("SSID", 4))
TOP_HEADER = " ".join("%*s" % (width, name) for name, width in TOP_FIELDS)
#: xentop's state letters, in its order, and where the record's ``rbpscd`` has them
_TOP_STATE = (("d", 5), ("s", 3), ("b", 1), ("c", 4), ("p", 2), ("r", 0))


def top_state(state: str) -> str:
    state = (state or "").ljust(6, "-")
    return "".join(letter if state[at] == letter else "-" for letter, at in _TOP_STATE)


def _count(record: Any, classes) -> int:
    return sum(1 for d in children(record, "device") if len(d) > 1 and isinstance(d[1], list)
               and d[1] and d[1][0] in classes)


def top_rows(records: Iterable[list], total_kib: int, cpu_pct: Callable[[list], float],
             full_name: bool = False) -> List[str]:
    """One xentop row per record of an existing domain, by domain id."""
    live = [r for r in records if child_value(r, "domid") is not None]
    live.sort(key=lambda r: to_int(child_value(r, "domid")))
    rows = []
    for r in live:
        name = _text(child_value(r, "name", ""))
        mem = to_int(child_value(r, "memory", 0)) * 1024
        maxmem = to_int(child_value(r, "maxmem", 0)) * 1024
        total = float(total_kib or 1)
        vbds = _count(r, ("vbd", "tap", "tap2"))
        cols = [("%10s" % name) if full_name else "%10.10s" % name,
                top_state(_text(child_value(r, "state", ""))),
                "%10d" % int(to_float(child_value(r, "cpu_time", 0.0))),
                "%6.1f" % cpu_pct(r), "%10d" % mem, "%6.1f" % (mem * 100.0 / total),
                "%10d" % maxmem, "%9.1f" % (maxmem * 100.0 / total),
                "%5d" % to_int(child_value(r, "online_vcpus", child_value(r, "vcpus", 1))),
                "%4d" % _count(r, ("vif",)), "%8d" % 0, "%8d" % 0, "%4d" % vbds]
        cols += ["%8d" % 0 if vbds else "%8c" % "-" for _ in range(3)]
        cols += ["%10d" % 0 if vbds else "%10c" % "-" for _ in range(2)]
        cols.append("%4d" % 0)
        rows.append(" ".join(cols))
    return rows
