"""Values and results in the Xen-API's wire shapes (wire-protocol.tex).

* ints (64-bit in the API) travel as strings of decimal digits; floats, bools and strings
  as themselves; enums as strings; Void as ``''``; sets as arrays; maps as structs whose
  keys are strings; DateTimes as XML-RPC ``dateTime.iso8601``;
* a result is ``{'Status': 'Success', 'Value': v}`` or
  ``{'Status': 'Failure', 'ErrorDescription': [code, param, ...]}``.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List
from xmlrpc.client import DateTime

from xend.server.xmlrpc import xml_safe
from xend.server.xmlrpc_wire import escape as _escape

NULL_REF = "OpaqueRef:NULL"


class Timestamp(float):
    """A point in time (seconds since the epoch) that travels as a DateTime."""


def encode(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, Timestamp):
        return datetime_of(float(value))
    if isinstance(value, int):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return xml_safe(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {xml_safe(str(k)): encode(v) for k, v in value.items()}
    return value


def datetime_of(seconds: float) -> DateTime:
    """UTC, as ``YYYYMMDDTHH:MM:SS``: xend's form (xmlrpclib's DateTime of
    gmtime), which Python's XML-RPC clients parse with use_builtin_types too;
    the ``Z`` that XenServer appends breaks them."""
    return DateTime(time.strftime("%Y%m%dT%H:%M:%S", time.gmtime(seconds)))


def _dump(value: Any, out: List[str]) -> None:
    t = type(value)
    if t is str:
        out.append("<value>" + _escape(value) + "</value>")
    elif t is dict:
        out.append("<value><struct>")
        for k, v in value.items():
            out.append("<member><name>" + _escape(k) + "</name>")
            _dump(v, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif t is list:
        out.append("<value><array><data>")
        for v in value:
            _dump(v, out)
        out.append("</data></array></value>")
    elif t is bool:
        out.append("<value><boolean>1</boolean></value>" if value
                   else "<value><boolean>0</boolean></value>")
    elif t is float:
        out.append("<value><double>" + repr(value) + "</double></value>")
    elif t is DateTime:
        out.append("<value><dateTime.iso8601>" + value.value + "</dateTime.iso8601></value>")
    else:
        raise TypeError(f"cannot send {t.__name__}")


def dumps_result(result: Dict[str, Any]) -> bytes:
    """The methodResponse of an encoded result struct, as the wire-protocol document shows
    it: strings as bare ``<value>text</value>`` (XML-RPC's default type), no indentation.
    A third less text than ``xmlrpc.client.dumps`` writes, and as much less for the client
    to parse (a thousand VM records are megabytes)."""
    out = ["<?xml version='1.0'?>\n<methodResponse><params><param>"]
    _dump(result, out)
    out.append("</param></params></methodResponse>\n")
    return "".join(out).encode("utf-8", "xmlcharrefreplace")


def success(value: Any) -> Dict[str, Any]:
    return {"Status": "Success", "Value": encode(value)}


def failure(description: List[str]) -> Dict[str, Any]:
    return {"Status": "Failure", "ErrorDescription": [xml_safe(str(d)) for d in description]}


# -- arguments ----------------------------------------------------------------------------------
class BadArgument(TypeError):
    """An argument of the wrong kind (reported as VALUE_NOT_SUPPORTED)."""


def as_str(value: Any) -> str:
    """A string argument; XML-RPC clients may send numbers for fields the API calls strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise BadArgument("a string is needed")


def as_int(value: Any) -> int:
    """An int argument: a decimal string (the API's form) or an XML-RPC int."""
    if isinstance(value, bool):
        raise BadArgument("an integer is needed")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise BadArgument("an integer is needed")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise BadArgument("a boolean is needed")


def as_map(value: Any) -> Dict[str, str]:
    """A ``(string -> string) Map`` argument."""
    if not isinstance(value, dict):
        raise BadArgument("a map (struct) is needed")
    return {as_str(k): as_str(v) for k, v in value.items()}


def as_list(value: Any) -> List[str]:
    if not isinstance(value, (list, tuple)):
        raise BadArgument("a set (array) is needed")
    return [as_str(v) for v in value]


def now() -> Timestamp:
    return Timestamp(time.time())

