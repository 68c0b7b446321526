"""Authentication of ``session.login_with_password``: ``none`` (every login succeeds; who may
connect at all is the listener's business) or ``pam``.

``pam`` goes through ``pamela`` (a ctypes binding, pinned in setup.py): the user name and
password are checked by the PAM service ``login`` (as the original xend did), then the
account (expired, locked ...). The PAM library is loaded when a pam listener is made, so a
host without it gets a clear error at start, never a listener that lets everybody in (the
original let everybody in when its PAM module was missing).
"""
from __future__ import annotations

import logging
from typing import Optional

log = logging.getLogger("xend.XendAuthSessions")

PAM_SERVICE = "login"


class PamUnavailable(Exception):
    """PAM cannot be used on this host; the text says why."""


class NoAuth:
    mode = "none"

    def check(self, user: str, password: str) -> bool:
        return True


class PamAuth:
    mode = "pam"

    def __init__(self, service: str = PAM_SERVICE):
        self.service = service
        self._pamela = load_pam()

    def check(self, user: str, password: str) -> bool:
        if not user or "\0" in user or "\0" in password:
            return False
        try:
            self._pamela.authenticate(user, password, service=self.service, resetcred=0)
        except self._pamela.PAMError as e:
            log.info("PAM authentication of %s failed: %s", user, e)
            return False
        return True


def load_pam():
    """The ``pamela`` module, its library loaded; PamUnavailable when it cannot be."""
    from ctypes.util import find_library

    if find_library("pam") is None:
        raise PamUnavailable("the PAM library (libpam.so.0) is not installed")
    try:
        import pamela
    except ImportError as e:
        raise PamUnavailable(f"the Python PAM binding is not installed ({e}): "
                             "pip install pamela") from None
    except (OSError, AttributeError) as e:
        raise PamUnavailable(f"the PAM library cannot be loaded: {e}") from None
    return pamela


def make_authenticator(mode: str, service: Optional[str] = None):
    if mode == "pam":
        return PamAuth(service or PAM_SERVICE)
    return NoAuth()
