"""Sessions: made by ``session.login_with_password``, named by a random uuid (the session
ref), valid on the listener that made them (a session of the unauthenticated unix socket
does not open a pam TCP port), ended by ``session.logout``.

At most ``MAX_SESSIONS`` live at once; a login beyond that ends the session idle longest
(a client that logs in and never logs out cannot exhaust the daemon). Ending a session runs
the ``on_end`` callbacks (its event registration, its tasks, its transient VMs go with it).
"""
from __future__ import annotations

import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .errors import SESSION_INVALID, XenAPIError

MAX_SESSIONS = 1024


@dataclass
class Session:
    ref: str
    user: str
    listener: str
    originator: str = ""
    last_active: float = field(default_factory=time.time)


class Sessions:
    def __init__(self, max_sessions: int = MAX_SESSIONS):
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: Dict[str, Session] = {}
        self.on_end: List[Callable[[Session], None]] = []

    def login(self, user: str, listener: str, originator: str = "") -> Session:
        s = Session(str(uuidlib.uuid4()), user, listener, originator)
        evicted: Optional[Session] = None
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda x: x.last_active)
                evicted = self._sessions.pop(oldest.ref)
            self._sessions[s.ref] = s
        if evicted is not None:
            self._ended(evicted)
        return s

    def get(self, ref: object, listener: str) -> Session:
        """The live session ``ref`` of ``listener``; SESSION_INVALID otherwise."""
        with self._lock:
            s = self._sessions.get(ref) if isinstance(ref, str) else None
            if s is None or s.listener != listener:
                raise XenAPIError(SESSION_INVALID, ref if isinstance(ref, str) else "")
            s.last_active = time.time()
            return s

    def find(self, ref: str) -> Optional[Session]:
        with self._lock:
            return self._sessions.get(ref)

    def all(self) -> List[Session]:
        with self._lock:
            return list(self._sessions.values())

    def logout(self, ref: str) -> None:
        with self._lock:
            s = self._sessions.pop(ref, None)
        if s is not None:
            self._ended(s)

    def _ended(self, s: Session) -> None:
        for fn in self.on_end:
            fn(s)
