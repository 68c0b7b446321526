"""Progress of save, restore, migrate and dump on a terminal.

While the long XML-RPC call blocks the main thread, a second thread polls
``xend.node.progress()`` over its own connection every half second and redraws one line:
``Saving guest1:  42% (215.0/512.0 MB, 98.3 MB/s)``. Nothing is shown when stdout is not a
terminal, and a daemon without the progress call simply shows nothing.
"""
from __future__ import annotations

import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Any, Callable, Iterable, Optional, TextIO

LABELS = {"save": "Saving", "restore": "Restoring", "migrate": "Migrating", "dump": "Dumping"}
MB = 1024 * 1024


def pick(entries: Iterable[dict], operation: str, domain: Optional[str]) -> Optional[dict]:
    """The progress entry of our operation: by domain name or UUID, else the only candidate."""
    candidates = [e for e in entries if isinstance(e, dict) and e.get("operation") == operation]
    if domain is not None:
        exact = [e for e in candidates if domain in (e.get("domain"), e.get("uuid"))]
        if exact:
            return exact[0]
        return candidates[0] if len(candidates) == 1 else None
    return candidates[0] if candidates else None


def progress_line(entry: dict, elapsed: float) -> str:
    done = int(entry.get("done") or 0)
    total = int(entry.get("total") or 0)
    pct = min(100, done * 100 // total) if total > 0 else 0
    rate = done / MB / elapsed if elapsed > 0 else 0.0
    label = LABELS.get(entry.get("operation", ""), "Working on")
    return "%s %s: %3d%% (%.1f/%.1f MB, %.1f MB/s)" % (
        label, entry.get("domain", ""), pct, done / MB, total / MB, rate)


class ProgressReporter:
    """Polls ``poll()`` every ``interval`` seconds in a thread and redraws a line on ``out``."""

    def __init__(self, poll: Callable[[], Any], operation: str, domain: Optional[str],
                 out: TextIO, interval: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.poll = poll
        self.operation = operation
        self.domain = domain
        self.out = out
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.width = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xm-progress", daemon=True)

    def start(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                entries = self.poll()
            except Exception:  # noqa: BLE001 - no progress call, or the daemon went away
                return
            entry = pick(entries or [], self.operation, self.domain)
            if entry is not None and not self._stop.is_set():
                self.show(entry)

    def show(self, entry: dict) -> None:
        line = progress_line(entry, self.clock() - self.started)
        self.out.write("\r" + line + " " * max(0, self.width - len(line)))
        self.out.flush()
        self.width = len(line)

    def finish(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.width:
            self.out.write("\n")
            self.out.flush()


def with_progress(ctx: Any, operation: str, domain: Optional[str], call: Callable[[], Any]) -> Any:
    """Run ``call()``; while it runs, show progress if stdout is a terminal."""
    isatty = getattr(ctx.out, "isatty", None)
    if not (isatty and isatty()):
        return call()
    poller = ctx.new_server()
    reporter = ProgressReporter(lambda: poller.xend.node.progress(), operation, domain,
                                ctx.out).start()
    try:
        return call()
    finally:
        reporter.finish()
