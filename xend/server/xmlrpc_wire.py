"""The legacy XML-RPC responses, written in one pass (``xend.server.xmlrpc``).

What ``xmlrpc.client.dumps`` would write for ``to_wire(value)``, in one recursive pass that
also does ``to_wire``'s work (ints beyond 32 bits as strings, ``vcpu_avail`` pairs left out,
tuples as arrays), with strings as bare ``<value>text</value>`` (XML-RPC's default type) and
no line breaks: ``xm list -l`` of a thousand domains is megabytes of it. An ``sxp.Frozen``
list is written once and its text kept on it (a domain's record fields, until its
configuration changes), so a listing writes again only what changed: state, times.
"""
from __future__ import annotations

from base64 import encodebytes
from typing import Any, Callable, Dict, List
from xmlrpc.client import Binary, DateTime

from xend.sxp import Frozen

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_SKIPPED = ("vcpu_avail",)


def escape(text: str) -> str:
    """Character data of XML (what the stdlib's escape does, with fewer copies)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def _skipped(v: Any) -> bool:
    """A ``(vcpu_avail ...)`` pair, which xend never sent (its bitmask outgrows XML-RPC)."""
    return bool(v) and v[0] in _SKIPPED and isinstance(v, (list, tuple))


def _string(v: str, out: List[str]) -> None:
    out.append("<value>" + escape(v) + "</value>")


def _int(v: int, out: List[str]) -> None:
    if INT32_MIN <= v <= INT32_MAX:
        out.append("<value><int>%d</int></value>" % v)
    else:
        out.append("<value>%d</value>" % v)


def _bool(v: bool, out: List[str]) -> None:
    out.append("<value><boolean>1</boolean></value>" if v
               else "<value><boolean>0</boolean></value>")


def _float(v: float, out: List[str]) -> None:
    out.append("<value><double>" + repr(v) + "</double></value>")


def _none(v: None, out: List[str]) -> None:
    out.append("<value><nil/></value>")


def _array(v: Any, out: List[str]) -> None:
    out.append("<value><array><data>")
    for item in v:
        t = type(item)
        if t is str:
            out.append("<value>" + escape(item) + "</value>")
        elif t is Frozen:
            text = item.encoded
            if text is None:
                part: List[str] = []
                if not _skipped(item):
                    _array(item, part)
                text = item.encoded = "".join(part)
            out.append(text)
        elif (t is list or t is tuple) and _skipped(item):
            continue
        else:
            _WRITERS.get(t, _other)(item, out)
    out.append("</data></array></value>")


def _struct(v: Dict[Any, Any], out: List[str]) -> None:
    out.append("<value><struct>")
    for k, item in v.items():
        out.append("<member><name>" + escape(str(k)) + "</name>")
        _WRITERS.get(type(item), _other)(item, out)
        out.append("</member>")
    out.append("</struct></value>")


def _binary(v: Any, out: List[str]) -> None:
    data = v.data if isinstance(v, Binary) else bytes(v)
    out.append("<value><base64>\n" + encodebytes(data).decode("ascii") + "</base64></value>")


def _datetime(v: DateTime, out: List[str]) -> None:
    out.append("<value><dateTime.iso8601>" + v.value + "</dateTime.iso8601></value>")


def _other(v: Any, out: List[str]) -> None:
    """Subclasses of the types above (an IntEnum, a str subclass ...), as their base."""
    for base, writer in _BASES:
        if isinstance(v, base):
            writer(v, out)
            return
    raise TypeError(f"cannot marshal {type(v).__name__} objects")


_WRITERS: Dict[type, Callable[[Any, List[str]], None]] = {
    str: _string, int: _int, bool: _bool, float: _float, type(None): _none,
    list: _array, tuple: _array, Frozen: _array, dict: _struct,
    bytes: _binary, bytearray: _binary, Binary: _binary, DateTime: _datetime,
}
# bool before int: a bool is an int
_BASES = ((bool, _bool), (int, _int), (float, _float), (str, _string),
          ((list, tuple), _array), (dict, _struct), ((bytes, bytearray), _binary))


def dumps_response(value: Any) -> bytes:
    """The methodResponse carrying ``value`` (TypeError for what XML-RPC cannot carry)."""
    out = ["<?xml version='1.0'?>\n<methodResponse><params><param>"]
    _WRITERS.get(type(value), _other)(value, out)
    out.append("</param></params></methodResponse>\n")
    return "".join(out).encode("utf-8", "xmlcharrefreplace")
