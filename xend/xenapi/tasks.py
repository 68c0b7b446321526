"""``Async.<class>.<message>`` calls and the ``task`` class (wire-protocol: "Synchronous and
Asynchronous invocation"; datamodel, class task).

An async call returns a task ref at once (or fails at once: unknown method, bad session,
wrong argument count) and runs in a thread of its own. Its task is ``pending`` with progress
0, then ``success`` (``result`` is the value as a string: a ref, or '' for Void; ``type`` the
class whose ref it is) or ``failure`` (``error_info`` the ErrorDescription), with progress
100. ``task.cancel`` is refused (OPERATION_NOT_ALLOWED: no task here can be cancelled, its
allowed_operations are empty). ``task.destroy`` (as in later Xen-API versions) forgets a
finished task; a session's tasks go when it ends.

Bounds: at most MAX_PENDING tasks run at once (more: OPERATION_NOT_ALLOWED), and at most
MAX_FINISHED finished ones are kept (the oldest finished go first).
"""
from __future__ import annotations

import collections
import logging
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from . import wire
from .errors import INTERNAL_ERROR, OPERATION_NOT_ALLOWED, XenAPIError

log = logging.getLogger("xend.XendTask")

MAX_PENDING = 32
MAX_FINISHED = 1024
PENDING, SUCCESS, FAILURE = "pending", "success", "failure"


@dataclass
class Task:
    ref: str
    name_label: str
    session: str
    status: str = PENDING
    progress: int = 0
    type: str = ""
    result: str = ""
    error_info: List[str] = field(default_factory=list)
    created: wire.Timestamp = field(default_factory=wire.now)
    finished: Optional[wire.Timestamp] = None

    def record(self) -> Dict[str, Any]:
        return {"uuid": self.ref, "name_label": self.name_label,
                "name_description": "", "status": self.status, "session": self.session,
                "progress": self.progress, "type": self.type, "result": self.result,
                "error_info": list(self.error_info), "allowed_operations": [],
                "created": self.created, "finished": self.finished or wire.Timestamp(0.0)}


class Tasks:
    def __init__(self, publish: Callable[[str, str, str], None],
                 max_pending: int = MAX_PENDING, max_finished: int = MAX_FINISHED):
        self.publish = publish
        self.max_pending = max_pending
        self.max_finished = max_finished
        self._lock = threading.Lock()
        self._tasks: Dict[str, Task] = {}
        self._finished: collections.deque = collections.deque()
        self._pending = 0
        self._orphans: set = set()      # pending tasks whose session ended

    def start(self, session: str, method: str, run: Callable[[], Any],
              result_class: str = "") -> str:
        """Start ``run`` for ``Async.<method>``; its task ref."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise XenAPIError(OPERATION_NOT_ALLOWED,
                                  f"{self._pending} asynchronous calls are running already")
            self._pending += 1
            task = Task(str(uuidlib.uuid4()), "Async." + method, session)
            self._tasks[task.ref] = task
        self.publish("task", "add", task.ref)
        t = threading.Thread(target=self._run, args=(task, run, result_class),
                             name=f"xenapi-task-{method}", daemon=True)
        try:
            t.start()
        except RuntimeError as e:       # no thread could be made
            with self._lock:
                self._pending -= 1
                self._tasks.pop(task.ref, None)
            raise XenAPIError(INTERNAL_ERROR, f"cannot start the task: {e}") from None
        return task.ref

    def _run(self, task: Task, run: Callable[[], Any], result_class: str) -> None:
        try:
            value = run()
            status, result, errors = SUCCESS, "" if value is None else str(value), []
        except XenAPIError as e:
            status, result, errors = FAILURE, "", list(e.description)
        except Exception as e:  # noqa: BLE001 - reported in the task, and logged
            log.exception("%s failed", task.name_label)
            status, result, errors = FAILURE, "", [INTERNAL_ERROR, str(e)]
        with self._lock:
            self._pending -= 1
            task.status, task.result, task.error_info = status, result, errors
            task.type = result_class if status == SUCCESS and result else ""
            task.progress = 100
            task.finished = wire.now()
            orphan = task.ref in self._orphans
            self._orphans.discard(task.ref)
            if orphan:
                del self._tasks[task.ref]
            else:
                self._finished.append(task.ref)
            while len(self._finished) > self.max_finished:
                self._tasks.pop(self._finished.popleft(), None)
        self.publish("task", "del" if orphan else "mod", task.ref)

    # -- the task class ------------------------------------------------------------------------
    def get(self, ref: Any) -> Optional[Task]:
        with self._lock:
            return self._tasks.get(ref) if isinstance(ref, str) else None

    def refs(self) -> List[str]:
        with self._lock:
            return list(self._tasks)

    def destroy(self, ref: str) -> bool:
        with self._lock:
            task = self._tasks.get(ref)
            if task is None:
                return False
            if task.status == PENDING:
                raise XenAPIError(OPERATION_NOT_ALLOWED, "the task is still pending")
            del self._tasks[ref]
            try:
                self._finished.remove(ref)
            except ValueError:
                pass
        self.publish("task", "del", ref)
        return True

    def drop_session(self, session: str) -> None:
        with self._lock:
            mine = [r for r, t in self._tasks.items()
                    if t.session == session and t.status != PENDING]
            self._orphans.update(r for r, t in self._tasks.items()
                                 if t.session == session and t.status == PENDING)
        for ref in mine:
            self.destroy(ref)
