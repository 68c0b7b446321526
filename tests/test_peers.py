"""xend.server.peers: who owns the other end of a TCP connection (the kernel's socket table),
who is allowed (root, xend's own uid, xend-tcp-users-allow), and the gate a listener holds."""
from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import subprocess
import sys
import textwrap
from typing import Optional

import pytest

from xend import options
from xend.server import peers

pytestmark = pytest.mark.timeout(60)

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"      # world-executable, unlike a python under /root

CONNECT_AND_WAIT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    print(s.getsockname()[1], flush=True)
    sys.stdin.read()            # hold the connection until told to go
""")


def as_user(uid: int, gid: int):
    def demote() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return demote


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


def connect_from_child(srv: socket.socket, uid=None, gid=None):
    """A client in another process (as ``uid`` when given); returns (process, accepted)."""
    host, port = srv.getsockname()
    python = sys.executable
    if uid is not None:
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            pytest.skip(f"{SYSTEM_PYTHON} missing")
        python = SYSTEM_PYTHON
    proc = subprocess.Popen([python, "-I", "-c", CONNECT_AND_WAIT, host, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=as_user(uid, gid) if uid is not None else None, cwd="/")
    proc.stdout.readline()
    conn, _ = srv.accept()
    return proc, conn


def finish(proc) -> None:
    proc.stdin.close()
    proc.wait(timeout=10)


@contextlib.contextmanager
def own_connection(srv: socket.socket, client: Optional[socket.socket] = None,
                   address: Optional[tuple] = None):
    """The accepted end of a connection from this process (``client``: an unconnected
    socket to connect with, to ``address``)."""
    client = client or socket.socket(srv.family)
    try:
        client.connect(address or srv.getsockname()[:2])
    except OSError:
        client.close()
        pytest.skip("cannot connect that way here")
    conn, _ = srv.accept()
    try:
        yield conn
    finally:
        client.close()
        conn.close()


def test_peer_uid_of_a_connection_from_this_process(listener):
    with own_connection(listener) as conn:
        assert peers.peer_uid(conn) == os.geteuid()


def test_peer_uid_of_another_users_process(listener):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    proc, conn = connect_from_child(listener, NOBODY, NOBODY)
    try:
        assert peers.peer_uid(conn) == NOBODY
    finally:
        conn.close()
        finish(proc)


def test_peer_uid_over_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = socket.socket(socket.AF_INET6)
    try:
        srv.bind(("::1", 0))
    except OSError:
        srv.close()
        pytest.skip("no ::1 here")
    srv.listen(2)
    try:
        with own_connection(srv) as conn:
            assert peers.peer_uid(conn) == os.geteuid()
    finally:
        srv.close()


def test_peer_uid_of_a_dual_stack_client_on_an_ipv4_server(listener):
    """A v6 socket talking to 127.0.0.1 is listed in tcp6 as ::ffff:127.0.0.1."""
    mapped = ("::ffff:127.0.0.1", listener.getsockname()[1])
    with own_connection(listener, socket.socket(socket.AF_INET6), mapped) as conn:
        assert peers.peer_uid(conn) == os.geteuid()


def test_a_peer_that_is_gone_is_not_identified(listener):
    """Its entry is orphaned (inode 0) or gone: not trusted, whatever uid it shows."""
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn, _ = listener.accept()
    client.close()              # reset: nothing left in the table
    try:
        assert peers.peer_uid(conn) is None
    finally:
        conn.close()


def test_peer_uid_without_the_tables(listener):
    with own_connection(listener) as conn:
        assert peers.peer_uid(conn, tables=()) is None


def test_is_loopback():
    assert peers.is_loopback("127.0.0.1") and peers.is_loopback("127.3.2.1")
    assert peers.is_loopback("::1") and peers.is_loopback("::ffff:127.0.0.1")
    assert not peers.is_loopback("192.0.2.1") and not peers.is_loopback("nonsense")


# -- who is allowed ---------------------------------------------------------------------------
def test_root_and_own_uid_always_allowed():
    users = peers.AllowedUsers([], own_uid=4242)
    assert users.allows(0) and users.allows(4242)
    assert not users.allows(NOBODY)


def test_users_by_name_and_uid():
    nobody = pwd.getpwuid(NOBODY).pw_name if _exists(NOBODY) else None
    users = peers.AllowedUsers(["1234"] + ([nobody] if nobody else []), own_uid=0)
    assert users.allows(1234)
    assert users.allows(NOBODY) == bool(nobody)
    assert not users.allows(1235)


def test_users_by_group(caplog):
    try:
        entry = pwd.getpwuid(NOBODY)
    except KeyError:
        pytest.skip("no user 65534")
    users = peers.AllowedUsers([f"@{entry.pw_gid}"], own_uid=0)
    assert users.allows(NOBODY)          # its primary group
    assert not peers.AllowedUsers(["@0"], own_uid=0).allows(NOBODY) or entry.pw_gid == 0


def test_unknown_names_admit_nobody_and_are_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="xend.peers"):
        users = peers.AllowedUsers(["no-such-user-xyz", "@no-such-group-xyz"], own_uid=0)
    assert users.uids == {0} and not users.gids
    assert "no user no-such-user-xyz" in caplog.text
    assert "no group no-such-group-xyz" in caplog.text


def _exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


# -- the option -------------------------------------------------------------------------------
def test_option_default_and_values():
    assert options.defaults()[peers.OPTION] == []
    opts = options.parse_options("(xend-tcp-users-allow 'alice 1001 @xenadm')")
    assert opts[peers.OPTION] == ["alice", "1001", "@xenadm"]


@pytest.mark.parametrize("bad", ["'a;b'", "'-rf'", "'@'", "'al ice$x'"])
def test_option_refuses_what_is_not_a_name(bad):
    with pytest.raises(options.ConfigError) as e:
        options.parse_options(f"(xend-tcp-users-allow {bad})", source="f.sxp")
    assert "f.sxp:1: option xend-tcp-users-allow" in str(e.value)


# -- the gate ---------------------------------------------------------------------------------
def test_gate_admits_root_and_refuses_another_user_with_a_log_line(listener, caplog):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    gate = peers.PeerGate("Test-tcp")
    proc, conn = connect_from_child(listener, NOBODY, NOBODY)
    try:
        with caplog.at_level(logging.WARNING, logger="xend.peers"):
            assert not gate.admit(conn, conn.getpeername())
        assert "Test-tcp: refused connection from 127.0.0.1:" in caplog.text
        assert "(uid 65534)" in caplog.text
    finally:
        conn.close()
        finish(proc)
    proc, conn = connect_from_child(listener)
    try:
        assert gate.admit(conn, conn.getpeername())
    finally:
        conn.close()
        finish(proc)


def test_gate_follows_the_current_option(listener):
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    allowed = []
    gate = peers.PeerGate("Test-tcp", users_allow=lambda: allowed)
    proc, conn = connect_from_child(listener, NOBODY, NOBODY)
    try:
        assert not gate.admit(conn, conn.getpeername())
        allowed.append(str(NOBODY))          # as after a reload
        assert gate.admit(conn, conn.getpeername())
    finally:
        conn.close()
        finish(proc)


def test_gate_refuses_an_unidentified_loopback_caller(listener, caplog):
    gate = peers.PeerGate("Test-tcp", peers.OPEN, tables=())
    with own_connection(listener) as conn:
        with caplog.at_level(logging.WARNING, logger="xend.peers"):
            assert not gate.admit(conn, conn.getpeername())
        assert "cannot be found" in caplog.text


def test_gate_refuses_bad_remote_policy():
    with pytest.raises(ValueError):
        peers.PeerGate("x", "maybe")


def test_a_caller_that_hangs_up_at_once_is_dropped_quietly(listener, caplog):
    """A probe of whether the port listens (connect, close) is no refusal to log."""
    gate = peers.PeerGate("Test-tcp", peers.OPEN, tables=())
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    client.close()
    try:
        with caplog.at_level(logging.DEBUG, logger="xend.peers"):
            assert not gate.admit(conn, conn.getpeername())
        assert "hung up before it could be identified" in caplog.text
        assert "refused" not in caplog.text
    finally:
        conn.close()
