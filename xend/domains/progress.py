"""In-flight long operations (save, restore, migrate, dump ...) for ``xend.node.progress``."""
from __future__ import annotations

import itertools
import threading
from typing import Dict, List


class Operation:
    def __init__(self, tracker: "ProgressTracker", key: int, operation: str, domain: str,
                 uuid: str):
        self._tracker = tracker
        self.key = key
        self.operation = operation
        self.domain = domain
        self.uuid = uuid
        self.done = 0
        self.total = 0

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def finish(self) -> None:
        self._tracker._remove(self.key)

    def __enter__(self) -> "Operation":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def as_dict(self) -> Dict[str, str]:
        return {"operation": self.operation, "domain": self.domain, "uuid": self.uuid,
                "done": str(self.done), "total": str(self.total)}


class ProgressTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: Dict[int, Operation] = {}
        self._keys = itertools.count(1)

    def start(self, operation: str, domain: str, uuid: str) -> Operation:
        with self._lock:
            op = Operation(self, next(self._keys), operation, domain, uuid)
            self._ops[op.key] = op
            return op

    def _remove(self, key: int) -> None:
        with self._lock:
            self._ops.pop(key, None)

    def list(self) -> List[Dict[str, str]]:
        with self._lock:
            ops = list(self._ops.values())
        return [op.as_dict() for op in ops]
