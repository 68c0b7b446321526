"""The XML-RPC listeners' request-head parser (xend/server/lean_http.py), as a pure piece: the
answers the standard library's parser gives, without the email package. The listeners
themselves are exercised over real sockets in test_listeners_hostile.py."""
from __future__ import annotations

import io
from typing import Optional

import pytest

from xend.server.lean_http import LeanRequestMixin


class Handler(LeanRequestMixin):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/0.9"

    def __init__(self, data: bytes):
        self.rfile = io.BytesIO(data)
        self.raw_requestline = self.rfile.readline(65537)
        self.error: Optional[int] = None
        self.continued = False

    def send_error(self, code, message=None) -> None:
        self.error = int(code)

    def handle_expect_100(self) -> bool:
        self.continued = True
        return True


@pytest.mark.parametrize("line, error, closes", [
    (b"POST /RPC2 HTTP/1.1", None, False),
    (b"POST /RPC2 HTTP/1.0", None, True),
    (b"POST /RPC2 HTTP/2.0", 505, True),
    (b"POST /RPC2 HTTP/+1.1", 400, True),
    (b"POST /RPC2 HTTP/1.1.1", 400, True),
    (b"POST /RPC2 HTTP/\xd9\xa1.1", 400, True),     # a non-ASCII digit
    (b"POST /RPC2", 400, True),
    (b"POST /RPC2 HTTP/1.1 extra", 400, True),
])
def test_request_lines(line, error, closes):
    h = Handler(line + b"\r\nHost: x\r\n\r\n")
    assert h.parse_request() is (error is None)
    assert h.error == error and h.close_connection is closes


def test_headers_are_case_insensitive_and_the_first_wins():
    h = Handler(b"POST //x/RPC2 HTTP/1.1\r\ncontent-LENGTH: 5\r\nX-A: 1\r\nx-a: 2\r\n"
                b"Connection: close\r\n\r\nbody")
    assert h.parse_request()
    assert h.headers["Content-Length"] == "5" and h.headers.get("X-A") == "1"
    assert h.headers["missing"] is None and h.headers.get("missing", "d") == "d"
    assert ("x-a", "2") in h.headers.items() and "CONNECTION" in h.headers
    assert h.close_connection and h.path == "/x/RPC2"      # no scheme-relative path
    assert h.rfile.read() == b"body"                        # the body is left to read


@pytest.mark.parametrize("head, error", [
    (b"no colon\r\n", 400),
    (b" Folded: continuation\r\n", 400),
    (b"Name : space before the colon\r\n", 400),
    (b"X: y\r\n" * 101, 431),
    (b"X: " + b"y" * 70000 + b"\r\n", 431),
])
def test_bad_heads_are_refused(head, error):
    h = Handler(b"POST /RPC2 HTTP/1.1\r\n" + head + b"\r\n")
    assert not h.parse_request() and h.error == error


def test_expect_100_only_for_http_1_1():
    h = Handler(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n")
    assert h.parse_request() and h.continued
    h = Handler(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
    assert h.parse_request() and not h.continued
