"""The SXP dialect of xend: parse (on sexpdata) and show, plus the element helpers.

Every atom is a ``str``; a value is a string or a list of values. Strings may be quoted
with ``'`` or ``"`` and use the original escapes; ``#`` starts a comment to end of line;
the separators ``{}<>[];`` end an atom and begin a new one.
"""
from __future__ import annotations

import io
import re
from typing import Any, Iterator, List, Optional, Union

import sexpdata

Value = Union[str, list]

MIME_TYPE = "application/sxp"

#: lists may nest this deep (a domain config nests 5 or 6 levels); deeper input is refused
#: with its line and column instead of exhausting the stack of every reader of the value
MAX_DEPTH = 256

_WHITESPACE = " \t\n\v\f\r"
_SEPARATORS = "{}<>[];"
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v",
                   "f": "\f", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"


class Frozen(list):
    """An SXP list its maker will not change again (a field of a domain's record, kept until
    the domain's configuration changes): an encoder may keep what it made of it in
    ``encoded`` and give that again (``xend.server.xmlrpc_wire``). Whoever gets one must not
    change it either; it is a list in every other way."""

    __slots__ = ("encoded",)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.encoded: Optional[str] = None


class ParseError(ValueError):
    """A syntax error, with the 1-based line and column where it was found."""

    def __init__(self, message: str, line: int, column: int, source: str = "<string>"):
        self.message = message
        self.line = line
        self.column = column
        self.source = source
        super().__init__(f"{source}:{line}:{column}: {message}")


class XendParser(sexpdata.Parser):
    """sexpdata's parser with the lexical rules of xend's SXP (section 2.2 of the reference)."""

    def __init__(self, string: str, source: str = "<string>"):
        super().__init__(string, nil=None, true=None, false=None, line_comment="#")
        self.source = source

    # -- errors ---------------------------------------------------------------------------
    def error(self, message: str, i: int) -> ParseError:
        line = self.string.count("\n", 0, i) + 1
        column = i - (self.string.rfind("\n", 0, i) + 1) + 1
        return ParseError(message, line, column, self.source)

    # -- hooks ------------------------------------------------------------------------------
    def atom(self, token: str) -> str:
        # xend keeps every atom a string; the option layer converts (and names the option).
        return token

    def parse_str(self, i: int):
        string = self.string
        quote = string[i]
        start = i
        chars: List[str] = []
        i += 1
        n = len(string)
        while True:
            if i >= n:
                raise self.error("unexpected EOF in string", start)
            c = string[i]
            if c == quote:
                return i + 1, "".join(chars)
            if c != "\\":
                chars.append(c)
                i += 1
                continue
            i += 1
            if i >= n:
                raise self.error("unexpected EOF in string", start)
            e = string[i]
            if e in _SIMPLE_ESCAPES:
                chars.append(_SIMPLE_ESCAPES[e])
                i += 1
            elif e == "x":
                digits = string[i + 1:i + 3]
                if len(digits) != 2 or any(d not in _HEX for d in digits):
                    raise self.error("invalid hex escape: \\x" + digits, i - 1)
                chars.append(chr(int(digits, 16)))
                i += 3
            elif e in _OCTAL:
                j = i
                while j < n and j < i + 3 and string[j] in _OCTAL:
                    j += 1
                value = int(string[i:j], 8)
                if value > 255:
                    raise self.error("invalid octal escape: out of range " + string[i:j], i - 1)
                chars.append(chr(value))
                i = j
            else:
                # 3.0.4+ behaviour: a lone backslash, the unknown character is dropped.
                chars.append("\\")
                i += 1

    def parse_atom(self, i: int):
        string = self.string
        n = len(string)
        start = i
        i += 1  # the first character (possibly a separator) always belongs to the atom
        while i < n:
            c = string[i]
            if c in _WHITESPACE or c in "()#" or c in _SEPARATORS:
                break
            i += 1
        return i, self.atom(string[start:i])

    def parse_sexp(self, i: int, depth: int = 0, opened_at: int = 0):
        string = self.string
        n = len(string)
        sexp: list = []
        append = sexp.append
        while i < n:
            c = string[i]
            if c in _WHITESPACE:
                i += 1
            elif c == "#":
                nl = string.find("\n", i)
                i = n if nl < 0 else nl + 1
            elif c == "(":
                if depth >= MAX_DEPTH:
                    raise self.error(f"too deeply nested: more than {MAX_DEPTH} levels of "
                                     "parentheses", i)
                i, sub = self.parse_sexp(i + 1, depth + 1, i)
                append(sub)
            elif c == ")":
                if depth == 0:
                    raise self.error("syntax error: )", i)
                return i + 1, sexp
            elif c in "\"'":
                i, sub = self.parse_str(i)
                append(sub)
            elif c == "\x04" and depth == 0:  # EOT: end of input
                return n, sexp
            elif not c.isprintable() and c not in _WHITESPACE:
                raise self.error(f"invalid character: code {ord(c)}", i)
            else:
                i, sub = self.parse_atom(i)
                append(sub)
        if depth:
            raise self.error("unexpected EOF: unclosed (", opened_at)
        return i, sexp

    def parse(self) -> list:
        return self.parse_sexp(0)[1]


def parse_all(text: Union[str, bytes], source: str = "<string>") -> List[Value]:
    """Every top-level value of ``text`` (an empty list for empty or comment-only input)."""
    if isinstance(text, bytes):
        text = decode(text)
    return XendParser(text, source).parse()


def decode(data: bytes) -> str:
    """UTF-8 when the bytes are UTF-8 (what we write), else latin-1 (one char per byte,
    the original's byte-string semantics), so no file is ever refused for its encoding."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_file(path: str) -> List[Value]:
    with open(path, "rb") as f:
        return parse_all(f.read(), source=path)


def from_string(text: str) -> Value:
    """The first value in ``text``; ``[]`` for empty input (the original's semantics)."""
    values = parse_all(text)
    return values[0] if values else []


all_from_string = parse_all


# -- writing ------------------------------------------------------------------------------
_ATOM_RE = re.compile(r"[A-Za-z0-9.\-_:/~]+\Z")


def is_atom(s: str) -> bool:
    return bool(s) and (s == "@" or _ATOM_RE.match(s) is not None)


def _quote(s: str) -> str:
    """Python-repr-style quoting, readable back by the parser (xend's writer did the same)."""
    quote = '"' if ("'" in s and '"' not in s) else "'"
    out = [quote]
    for ch in s:
        if ch == quote or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or 127 <= ord(ch) < 256:
            # Python 2's repr of a byte string: every non-ASCII byte as \xHH (ASCII output).
            out.append("\\x%02x" % ord(ch))
        elif ord(ch) >= 256:
            # Beyond latin-1 there is no single-byte escape: the character is written as it
            # is (files are written as UTF-8 and read back as UTF-8), so text round-trips.
            out.append(ch)
        else:
            out.append(ch)
    out.append(quote)
    return "".join(out)


def to_string(value: Any) -> str:
    """Serialise like xend's ``sxp.show`` (no trailing newline)."""
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(to_string(v) for v in value) + ")"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str):
        return _quote(str(value))  # only real strings are written bare: None -> 'None'
    s = value
    return s if is_atom(s) else _quote(s)


def show(value: Any, out: io.TextIOBase) -> None:
    out.write(to_string(value))


def prettyprint(value: Any, width: int = 80) -> str:
    """xend's PrettyPrint layout: a list that fits goes on one line, else one child per line."""
    lines: List[str] = []

    def emit(v: Any, col: int, prefix: str) -> None:
        flat = to_string(v)
        if not isinstance(v, (list, tuple)) or len(v) == 0 or col + len(flat) <= width:
            lines.append(prefix + flat)
            return
        # the head (even a list, as in (cpus ((0 1) ()))) stays right after the "("
        lines.append(prefix + "(" + to_string(v[0]))
        for child in v[1:]:
            emit(child, col + 4, " " * (col + 4))
        lines.append(" " * col + ")")

    emit(value, 0, "")
    return "\n".join(lines) + "\n"


# -- element helpers (reference section 2.7) ----------------------------------------------
def name(x: Any) -> Optional[str]:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x:
        return x[0]
    return None


def attributes(x: Any) -> list:
    if isinstance(x, list) and len(x) > 1 and isinstance(x[1], list) and x[1] and x[1][0] == "@":
        return x[1][1:]
    return []


def attribute(x: Any, key: str, default: Any = None) -> Any:
    for pair in attributes(x):
        if isinstance(pair, list) and pair and pair[0] == key:
            return pair[1] if len(pair) > 1 else default
    return default


def children(x: Any, elt: Optional[str] = None) -> list:
    if not isinstance(x, list) or not x:
        return []
    start = 2 if attributes(x) or (len(x) > 1 and isinstance(x[1], list) and x[1][:1] == ["@"]) else 1
    kids = x[start:]
    if elt is None:
        return kids
    return [k for k in kids if isinstance(k, list) and k and k[0] == elt]


def child(x: Any, elt: str, default: Any = None) -> Any:
    for k in children(x, elt):
        return k
    return default


def child_at(x: Any, i: int, default: Any = None) -> Any:
    kids = children(x)
    return kids[i] if 0 <= i < len(kids) else default


def child0(x: Any, default: Any = None) -> Any:
    return child_at(x, 0, default)


def child_value(x: Any, elt: str, default: Any = None) -> Any:
    c = child(x, elt)
    if c is None or len(c) < 2:
        return default
    return c[1]


def elementp(x: Any, elt: Optional[str] = None) -> bool:
    return isinstance(x, list) and len(x) > 0 and (elt is None or x[0] == elt)


def elements(x: Any, context: Any = None) -> Iterator[tuple]:
    """Pre-order walk yielding (node, context)."""
    yield x, context
    if isinstance(x, list):
        for k in children(x):
            yield from elements(k, x)


def merge(s1: list, s2: list) -> list:
    """Recursive merge; fields of ``s1`` win, fields only in ``s2`` are appended."""
    if not (isinstance(s1, list) and isinstance(s2, list)):
        return s1
    out = list(s1)
    names1 = {name(k) for k in children(s1) if isinstance(k, list)}
    for k in children(s2):
        if isinstance(k, list) and name(k) in names1:
            idx = next(i for i, v in enumerate(out) if isinstance(v, list) and name(v) == name(k) and i > 0)
            out[idx] = merge(out[idx], k)
        else:
            out.append(k)
    return out
