"""``pam`` authentication on a Xen-API listener, with the machine's real PAM stack (service
``login``) and a throwaway user the test makes (as root) and removes; skipped where that
cannot be done. And what happens where PAM is missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
import XenAPI

from tests.xenapi_helpers import XenAPIHost

PASSWORD = "Xapi-test-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def pam_user():
    if os.geteuid() != 0:
        pytest.skip("making a user for PAM needs root")
    for tool in ("useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not os.path.exists("/etc/pam.d/login"):
        pytest.skip("no PAM service login here")
    name = f"xapi{os.getpid() % 100000}"
    r = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"useradd failed: {r.stderr.strip()}")
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{PASSWORD}\n", text=True, check=True,
                       capture_output=True)
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def pam_host(tmp_path, pam_user):
    h = XenAPIHost(tmp_path / "x", entries=None, tcp=False)
    h.extra = f"(xen-api-server ((127.0.0.1:{h.port} pam) (unix none)))"
    h.write_config(h.extra)
    h.start()
    try:
        yield h
    finally:
        h.cleanup()


@pytest.mark.timeout(90)
def test_pam_login_with_the_right_password_and_refusal_of_a_wrong_one(pam_host, pam_user):
    s = pam_host.tcp_session(pam_user, PASSWORD)
    assert s.xenapi.VM.get_all() == ["00000000-0000-0000-0000-000000000000"]
    assert s.xenapi.session.get_this_user(s.handle) == pam_user
    for user, password in ((pam_user, PASSWORD + "x"), (pam_user, ""),
                           ("no-such-user-" + pam_user, PASSWORD)):
        with pytest.raises(XenAPI.Failure) as f:
            pam_host.tcp_session(user, password)
        assert f.value.details[0] == "SESSION_AUTHENTICATION_FAILED", f.value.details
    assert "Xen-API login of" in pam_host.log_tail(40)


@pytest.mark.timeout(90)
def test_a_pam_listener_does_not_answer_the_legacy_calls(pam_host, pam_user):
    import xmlrpc.client
    raw = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{pam_host.port}/", allow_none=True)
    assert raw.xend.domains_with_state(False, "all", False)["ErrorDescription"] == [
        "MESSAGE_METHOD_UNKNOWN", "xend.domains_with_state"]
    # the unix entry (none) answers them, and its sessions are not the TCP port's
    assert pam_host.proxy().xend.domains(False) == ["Domain-0"]
    unix = pam_host.session()
    assert raw.VM.get_all(unix.handle)["ErrorDescription"] == ["SESSION_INVALID", unix.handle]


def test_pam_missing_is_a_clear_error(monkeypatch):
    import ctypes.util

    from xend.xenapi import auth

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(auth.PamUnavailable, match="PAM library"):
        auth.PamAuth()


@pytest.mark.timeout(60)
def test_a_pam_listener_without_pam_stops_xend_from_starting(tmp_path):
    """The listener is made with the PAM library loaded: where it is missing, xend start
    fails and says why (simulated by a PAM binding that cannot be imported)."""
    h = XenAPIHost(tmp_path / "x", entries=None, tcp=False)
    h.extra = f"(xen-api-server ((127.0.0.1:{h.port} pam)))"
    h.write_config(h.extra)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "pamela.py").write_text("raise ImportError('no PAM here')\n")
    env = dict(h.env, PYTHONPATH=str(shadow))
    from tests.daemon_helpers import xend_command
    try:
        r = subprocess.run(xend_command() + ["-c", str(h.config), "start"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "pam authentication is not available" in r.stderr + h.log_tail(20)
    finally:
        h.cleanup()
