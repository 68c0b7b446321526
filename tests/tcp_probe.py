"""A client of xend's TCP listeners for the peer tests, stdlib only (it runs under the system
python as another uid, or in another network namespace): it asks each listener for something
only a served caller gets, and says SERVED or REFUSED."""
from __future__ import annotations

import os
import subprocess
from typing import Dict, List, Optional

SYSTEM_PYTHON = "/usr/bin/python3"      # world-executable, unlike a python under /root

PROBE = r"""
import socket, ssl, sys
# arguments: [--cert CERT --key KEY] then KIND:HOST:PORT[:tls] ..., KIND xmlrpc, http or
# relocation
args = sys.argv[1:]
cert = key = None
if args[:1] == ["--cert"]:
    cert, key, args = args[1], args[3], args[4:]
BODY = (b"<?xml version='1.0'?><methodCall><methodName>xend.domains</methodName>"
        b"<params><param><value><int>0</int></value></param></params></methodCall>")
REQUESTS = {
    "xmlrpc": b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
              % len(BODY) + BODY,
    "http": b"GET /xend/domain HTTP/1.0\r\n\r\n",
    "relocation": b"(help)\n",
}
for target in args:
    kind, host, port, *tls = target.split(":")
    reply = b""
    try:
        s = socket.create_connection((host, int(port)), timeout=10)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(cert, key)
            s = ctx.wrap_socket(s)
        s.sendall(REQUESTS[kind])
        while True:
            b = s.recv(65536)
            if not b:
                break
            reply += b
            if kind == "relocation" and b"\n" in reply:
                break
        s.close()
    except (OSError, ssl.SSLError):
        pass
    served = b"Domain-0" in reply or reply.startswith(b"(ok")
    print(target, "SERVED" if served else "REFUSED", flush=True)
"""


def tcp_probe(*targets: str, uid: Optional[int] = None, netns: Optional[str] = None,
              cert: Optional[str] = None, key: Optional[str] = None) -> Dict[str, str]:
    """{target: SERVED or REFUSED}; as ``uid`` (set in the child), in network namespace
    ``netns``, presenting the client certificate ``cert`` / ``key``."""
    def demote() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    cmd: List[str] = ["ip", "netns", "exec", netns] if netns else []
    cmd += [SYSTEM_PYTHON, "-I", "-c", PROBE]
    if cert:
        cmd += ["--cert", str(cert), "--key", str(key)]
    r = subprocess.run(cmd + list(targets), capture_output=True, text=True, timeout=60, cwd="/",
                       preexec_fn=demote if uid is not None else None)
    assert r.returncode == 0, r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.splitlines())
