"""Request arguments of the legacy HTTP/SXP server (reference section 6.1 and 6.2).

Arguments are lists of strings, taken from the query string for every method and, for POST,
from a body of type ``application/x-www-form-urlencoded`` or ``multipart/form-data`` (parsed
with ``email``, not the deprecated ``cgi`` module). Typed fields are then converted for an op:
``int``, ``str``, ``bool`` (one of ``on yes 1 true``), ``sxpr`` (parsed SXP) and ``key`` (a
sysrq key: a character code or one character).
"""
from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence
from urllib.parse import parse_qs

from xend import sxp

Args = Dict[str, List[str]]


class ArgError(ValueError):
    """A missing, duplicated or unconvertible field; the message goes to the client."""


class FormError(ValueError):
    """A request body that cannot be parsed as the form it claims to be."""


def parse_query(query: str) -> Args:
    return parse_qs(query, keep_blank_values=True, encoding="utf-8", errors="replace")


def parse_body(body: bytes, content_type: str) -> Args:
    """The fields of a POST body; other content types carry no fields."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return parse_query(body.decode("latin-1"))
    if ctype == "multipart/form-data":
        return parse_multipart(body, content_type)
    return {}


def parse_multipart(body: bytes, content_type: str) -> Args:
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    try:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not msg.is_multipart():
            raise FormError("malformed multipart/form-data body")
        out: Args = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                value = payload.decode(charset, "replace")
            except LookupError:
                value = payload.decode("utf-8", "replace")
            out.setdefault(name, []).append(value)
        return out
    except FormError:
        raise
    except Exception as e:  # noqa: BLE001 - email raises assorted errors on garbage
        raise FormError(f"malformed multipart/form-data body: {e}") from e


def merge(*parts: Mapping[str, List[str]]) -> Args:
    out: Args = {}
    for part in parts:
        for k, values in part.items():
            out.setdefault(k, []).extend(values)
    return out


# -- typed fields ---------------------------------------------------------------------------
def to_bool(value: str) -> bool:
    return value.strip().lower() in ("on", "yes", "1", "true")


def to_sxpr(value: str) -> Any:
    return sxp.from_string(value)


def to_key(value: str) -> str:
    """A sysrq key: a character code (the original's ``int`` field) or the character itself."""
    v = value.strip()
    if v.isdigit():
        code = int(v)
        if code > 255:
            raise ValueError(f"invalid sysrq key: {v}")
        return chr(code)
    if len(value) == 1:
        return value
    raise ValueError(f"invalid sysrq key: {value!r}")


CONVERTERS: Dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "bool": to_bool, "sxpr": to_sxpr, "key": to_key,
}

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "str"
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def opt(name: str, type: str = "str", default: Any = None) -> Field:  # noqa: A002
    return Field(name, type, default)


def convert(fields: Sequence[Field], args: Mapping[str, List[str]]) -> List[Any]:
    """The values of ``fields`` in order; unknown fields in ``args`` are ignored."""
    out: List[Any] = []
    for f in fields:
        values = args.get(f.name)
        if not values:
            if f.required:
                raise ArgError(f"Missing parameter: {f.name}")
            out.append(f.default)
            continue
        if len(values) > 1:
            raise ArgError(f"Too many values for {f.name}")
        try:
            out.append(CONVERTERS[f.type](values[0]))
        except (ValueError, TypeError) as e:  # sxp.ParseError is a ValueError
            raise ArgError(str(e)) from e
    return out
