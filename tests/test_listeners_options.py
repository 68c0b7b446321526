"""Every option that turns a listener on or off or moves it, at start and after `xend reload`;
socket hygiene (owner-only directory, other users shut out, a live socket never stolen)."""
from __future__ import annotations

import http.client
import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import xmlrpc.client
from pathlib import Path

import pytest

from tests.daemon_helpers import UnixHTTPConnection, XendInstance, free_port, server_proxy

pytestmark = pytest.mark.timeout(60)


# -- probes -----------------------------------------------------------------------------------

def http_answers(endpoint) -> bool:
    """True if the endpoint is xend's HTTP/SXP server."""
    if isinstance(endpoint, (str, Path)):
        conn = UnixHTTPConnection(str(endpoint), timeout=5)
    else:
        conn = http.client.HTTPConnection(*endpoint, timeout=5)
    try:
        conn.request("GET", "/xend/")
        r = conn.getresponse()
        return r.status == 200 and r.read() == b"(ls  node domain vnet)"
    except OSError:
        return False
    finally:
        conn.close()


def xmlrpc_answers(endpoint, context=None) -> bool:
    if isinstance(endpoint, (str, Path)):
        proxy = server_proxy(str(endpoint), timeout=5)
    else:
        scheme = "https" if context else "http"
        host = "localhost" if context else endpoint[0]
        proxy = xmlrpc.client.ServerProxy(f"{scheme}://{host}:{endpoint[1]}/RPC2",
                                          allow_none=True, context=context)
    try:
        return "Domain-0" in proxy.xend.domains(False)
    except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException):
        return False


def refused(addr) -> bool:
    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(addr) != 0


@pytest.fixture
def instances():
    started = []

    def make(root, extra="", start=True, paths=None):
        inst = XendInstance(root, extra=extra)
        if paths:   # the first occurrence of an option counts: move paths, not extra lines
            inst.paths.update({k: Path(v) for k, v in paths.items()})
            inst.write_config(extra)
        started.append(inst)
        if start:
            inst.start()
        return inst
    yield make
    for inst in started:
        inst.stop()
        inst.kill()


def tcp_xmlrpc(addr: str, port: int, extra: str = "") -> str:
    return (f"(xend-tcp-xmlrpc-server yes)(xend-tcp-xmlrpc-server-address {addr})"
            f"(xend-tcp-xmlrpc-server-port {port}){extra}")


def http_tcp(addr: str, port: int) -> str:
    return f"(xend-http-server yes)(xend-address {addr})(xend-port {port})"


def reload(inst: XendInstance, extra: str, until, paths=None) -> None:
    inst.paths.update({k: Path(v) for k, v in (paths or {}).items()})
    inst.write_config(extra)
    r = inst.xend("reload")
    assert r.returncode == 0, r.stderr
    inst.wait_for(until, timeout=20)


# -- at start ---------------------------------------------------------------------------------

def test_defaults_serve_only_the_unix_xmlrpc_socket(tmp_path, instances):
    inst = instances(tmp_path / "x")
    assert xmlrpc_answers(inst.paths["xend-unix-xmlrpc-path"])
    assert not inst.paths["xend-unix-path"].exists()          # xend-unix-server no
    assert not inst.paths["xend-relocation-unix-path"].exists()


def test_xend_unix_server_and_xend_unix_path(tmp_path, instances):
    on = instances(tmp_path / "on", "(xend-unix-server yes)")
    assert http_answers(on.paths["xend-unix-path"])
    moved = tmp_path / "elsewhere" / "http.sock"
    m = instances(tmp_path / "moved", "(xend-unix-server yes)", paths={"xend-unix-path": moved})
    assert http_answers(moved)
    assert not (tmp_path / "moved" / "lib" / "xend-socket").exists()
    assert m.paths["xend-unix-path"] == moved
    off = instances(tmp_path / "off", "(xend-unix-server no)",
                    paths={"xend-unix-path": tmp_path / "o.sock"})
    assert off.answering() and not (tmp_path / "o.sock").exists()


def test_xend_http_server_port_and_address(tmp_path, instances):
    port = free_port()
    instances(tmp_path / "off", f"(xend-http-server no)(xend-port {port})")
    assert refused(("127.0.0.1", port))
    instances(tmp_path / "on", http_tcp("127.0.0.1", port))
    assert http_answers(("127.0.0.1", port))
    # xend-address binds only there
    port2 = free_port()
    instances(tmp_path / "addr", http_tcp("127.0.0.2", port2))
    assert http_answers(("127.0.0.2", port2))
    assert refused(("127.0.0.1", port2))


def test_xend_http_server_empty_address_is_every_interface(tmp_path, instances):
    port = free_port()
    instances(tmp_path / "any", f"(xend-http-server yes)(xend-address '')(xend-port {port})")
    assert http_answers(("127.0.0.1", port)) and http_answers(("127.0.0.3", port))


def test_xend_unix_xmlrpc_server_and_path(tmp_path, instances):
    port = free_port()
    off = instances(tmp_path / "off",
                    "(xend-unix-xmlrpc-server no)" + tcp_xmlrpc("127.0.0.1", port))
    assert not off.paths["xend-unix-xmlrpc-path"].exists()
    assert xmlrpc_answers(("127.0.0.1", port))
    moved = tmp_path / "rpc" / "x.sock"
    instances(tmp_path / "moved", paths={"xend-unix-xmlrpc-path": moved})
    assert xmlrpc_answers(moved)
    assert not (tmp_path / "moved" / "run" / "xmlrpc.sock").exists()


def test_xend_tcp_xmlrpc_server_address_and_port(tmp_path, instances):
    port = free_port()
    instances(tmp_path / "off", f"(xend-tcp-xmlrpc-server no)(xend-tcp-xmlrpc-server-port {port})")
    assert refused(("127.0.0.1", port))
    instances(tmp_path / "on", tcp_xmlrpc("127.0.0.1", port))
    assert xmlrpc_answers(("127.0.0.1", port))
    port2 = free_port()
    instances(tmp_path / "addr", tcp_xmlrpc("127.0.0.2", port2))
    assert xmlrpc_answers(("127.0.0.2", port2))
    assert refused(("127.0.0.1", port2))


def test_xend_tcp_xmlrpc_ssl_files(tmp_path, instances):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    instances(tmp_path / "tls", tcp_xmlrpc("localhost", port,
                                           f"(xend-tcp-xmlrpc-server-ssl-key-file {key})"
                                           f"(xend-tcp-xmlrpc-server-ssl-cert-file {cert})"))
    assert xmlrpc_answers(("localhost", port), ctx)
    assert not xmlrpc_answers(("127.0.0.1", port))
    # both files are needed for HTTPS: with the key alone the listener is plain HTTP
    port2 = free_port()
    instances(tmp_path / "keyonly", tcp_xmlrpc("127.0.0.1", port2,
                                               f"(xend-tcp-xmlrpc-server-ssl-key-file {key})"))
    assert xmlrpc_answers(("127.0.0.1", port2))


# -- after reload -----------------------------------------------------------------------------

def test_reload_moves_changed_listeners_and_keeps_the_others(tmp_path, instances):
    p1, p2, x1, x2 = free_port(), free_port(), free_port(), free_port()
    path_a, path_b = tmp_path / "a" / "http.sock", tmp_path / "b" / "http.sock"
    first = "(xend-unix-server yes)" + http_tcp("127.0.0.1", p1) + tcp_xmlrpc("127.0.0.1", x1)
    inst = instances(tmp_path / "x", first, paths={"xend-unix-path": path_a})
    rpc_path = inst.paths["xend-unix-xmlrpc-path"]
    assert http_answers(path_a) and http_answers(("127.0.0.1", p1))
    assert xmlrpc_answers(("127.0.0.1", x1))
    inode = os.stat(rpc_path).st_ino
    # a keep-alive connection to the unchanged listener, opened before the reload
    kept = server_proxy(str(rpc_path))
    kept_conn = UnixHTTPConnection(str(rpc_path))
    body = xmlrpc.client.dumps((False,), "xend.domains")
    kept_conn.request("POST", "/RPC2", body)
    assert kept_conn.getresponse().read()
    pid = inst.pid()

    second = "(xend-unix-server yes)" + http_tcp("127.0.0.1", p2) + tcp_xmlrpc("127.0.0.1", x2)
    reload(inst, second, lambda: http_answers(path_b) and http_answers(("127.0.0.1", p2))
           and xmlrpc_answers(("127.0.0.1", x2)), paths={"xend-unix-path": path_b})
    assert not path_a.exists() and refused(("127.0.0.1", p1)) and refused(("127.0.0.1", x1))
    assert inst.pid() == pid
    assert os.stat(rpc_path).st_ino == inode
    kept_conn.request("POST", "/RPC2", body)
    assert "Domain-0" in xmlrpc.client.loads(kept_conn.getresponse().read())[0][0]
    kept_conn.close()
    assert "Domain-0" in kept.xend.domains(False)

    # and off again: every listener but the unix XML-RPC one goes away
    reload(inst, "", lambda: not path_b.exists() and refused(("127.0.0.1", p2))
           and refused(("127.0.0.1", x2)))
    assert xmlrpc_answers(rpc_path) and os.stat(rpc_path).st_ino == inode


def test_reload_moves_the_unix_xmlrpc_socket(tmp_path, instances):
    inst = instances(tmp_path / "x")
    old = inst.paths["xend-unix-xmlrpc-path"]
    new = tmp_path / "new" / "rpc.sock"
    reload(inst, "", lambda: xmlrpc_answers(new), paths={"xend-unix-xmlrpc-path": new})
    assert not old.exists()


def test_reload_turns_listeners_on(tmp_path, instances):
    inst = instances(tmp_path / "x")
    port = free_port()
    reload(inst, "(xend-unix-server yes)" + http_tcp("127.0.0.1", port),
           lambda: http_answers(inst.paths["xend-unix-path"])
           and http_answers(("127.0.0.1", port)))


# -- socket hygiene ---------------------------------------------------------------------------

def test_socket_directories_xend_creates_are_owner_only(tmp_path):
    inst = XendInstance(tmp_path / "x")
    inst.paths["xend-unix-xmlrpc-path"] = tmp_path / "x" / "xend-run" / "xmlrpc.sock"
    inst.paths["xend-unix-path"] = tmp_path / "x" / "xend-lib" / "xend-socket"
    inst.write_config("(xend-unix-server yes)")
    inst.start()
    try:
        for key in ("xend-unix-xmlrpc-path", "xend-unix-path"):
            path = inst.paths[key]
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            d = os.stat(path.parent)
            assert stat.S_IMODE(d.st_mode) == 0o700 and d.st_uid == os.geteuid()
            assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    finally:
        inst.stop()
        inst.kill()


def test_an_existing_socket_directory_is_left_as_it_is(tmp_path):
    """A socket in a shared directory (here a sticky 1777 one, like /tmp): xend neither
    chmods nor chowns it; the socket itself is owner-only."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    inst = XendInstance(tmp_path / "x")
    inst.paths["xend-unix-xmlrpc-path"] = shared / "xmlrpc.sock"
    inst.write_config()
    inst.start()
    try:
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
        assert stat.S_IMODE(os.stat(shared / "xmlrpc.sock").st_mode) == 0o600
        assert inst.answering()
    finally:
        inst.stop()
        inst.kill()


def connect_as_nobody(path: Path) -> int:
    """0 if a process running as ``nobody`` can connect to the unix socket, else the errno."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try, report through the exit status
        code = 100
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            try:
                s.connect(str(path))
                code = 0
            except OSError as e:
                code = e.errno or 101
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
def test_other_users_cannot_reach_the_sockets():
    # the xend root must be traversable by nobody, or the test would prove nothing:
    # pytest's own tmp dirs are private to root
    root = Path(tempfile.mkdtemp(prefix="xend-uid-", dir="/tmp"))
    os.chmod(root, 0o711)
    inst = XendInstance(root / "x", extra="(xend-unix-server yes)")
    os.chmod(root / "x", 0o711)
    try:
        inst.start()
        for key in ("xend-unix-xmlrpc-path", "xend-unix-path"):
            path = inst.paths[key]
            assert connect_as_nobody(path) != 0            # the 0700 directory
            os.chmod(path.parent, 0o711)
            assert connect_as_nobody(path) != 0            # the 0600 socket itself
            os.chmod(path, 0o666)
            assert connect_as_nobody(path) == 0            # control: the probe can succeed
            os.chmod(path, 0o600)
            os.chmod(path.parent, 0o700)
    finally:
        inst.stop()
        inst.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("key", ["xend-unix-xmlrpc-path", "xend-unix-path"])
def test_second_xend_does_not_steal_a_live_socket(tmp_path, instances, key):
    first = instances(tmp_path / "first", "(xend-unix-server yes)")
    path = first.paths[key]
    inode = os.stat(path).st_ino
    second = instances(tmp_path / "second", "(xend-unix-server yes)", start=False)
    second.paths[key] = path
    second.write_config("(xend-unix-server yes)")
    r = second.xend("start")
    assert r.returncode == 1 and "in use" in r.stderr
    assert os.stat(path).st_ino == inode
    assert xmlrpc_answers(first.paths["xend-unix-xmlrpc-path"])
    assert http_answers(first.paths["xend-unix-path"])


def test_stale_socket_file_is_replaced(tmp_path, instances):
    inst = XendInstance(tmp_path / "x", extra="(xend-unix-server yes)")
    for key in ("xend-unix-xmlrpc-path", "xend-unix-path"):
        path = inst.paths[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(path))
        dead.close()                     # the file stays, nobody listens
    try:
        inst.start()
        assert xmlrpc_answers(inst.paths["xend-unix-xmlrpc-path"])
        assert http_answers(inst.paths["xend-unix-path"])
    finally:
        inst.stop()
        inst.kill()
