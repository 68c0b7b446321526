"""Start, stop, status and reload of the xend daemon (reference section 3).

Process tree after ``xend start``::

    xend start (P0)  waits on the readiness pipe, exits 0 or 1 with the reason
      └─ P1          opens the python-daemon DaemonContext (fork, setsid, fork) and vanishes
          └─ P2      watchdog: forks the server, restarts it when it dies by a signal
              └─ P3  the server (Node): listeners, domains; owns the pid file

The pid file names the server (P3), as in the original.
"""
from __future__ import annotations

import logging
import os
import queue
import select
import signal
import sys
import time
from collections import deque
from typing import Callable, Mapping, Optional

import daemon

from xend import pidfile
from xend.log import XendLog, make_dir, open_log
from xend.options import DEFAULT_CONFIG_PATH

log = logging.getLogger("xend")

READY_TIMEOUT = 120.0       # how long `xend start` waits for the server to report
STOP_TIMEOUT = 30.0         # how long `xend stop` waits for the server to go
RESTART_LIMIT = 5           # watchdog restarts ...
RESTART_WINDOW = 60.0       # ... allowed within this many seconds

ROOT_BANNER = "*" * 70 + "\n*** Xend must be run as root.\n" + "*" * 70


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def needs_root(opts: Mapping) -> bool:
    """Not root and the pid file's directory is not ours to write: the original's banner case."""
    if os.geteuid() == 0:
        return False
    d = os.path.dirname(os.path.abspath(opts["xend-pid-file"])) or "/"
    while not os.path.isdir(d):
        d = os.path.dirname(d)
    return not os.access(d, os.W_OK | os.X_OK)


class Daemon:
    """``make_server(opts, config_path)`` builds the server object (the Node) inside the
    server process; it has start(), stop() and reload(opts). Injected, so this module knows
    nothing of domains or listeners."""

    def __init__(self, opts: Mapping, config_path: str,
                 make_server: Callable, load_options: Callable):
        self.opts = opts
        self.config_path = config_path
        self.make_server = make_server
        self.load_options = load_options
        self.pid_path = os.path.abspath(opts["xend-pid-file"])

    # -- commands ----------------------------------------------------------------------------
    def status(self) -> int:
        return pidfile.status(self.pid_path)

    def start(self) -> int:
        if pidfile.live_pid(self.pid_path):
            return 0  # running an already-running service is a success
        pidfile.break_if_stale(self.pid_path)
        if env_int("XEND_DAEMONIZE", 0 if env_int("XEND_DEBUG", 0) else 1) == 0:
            return self.run_server(ready_fd=None)
        r, w = os.pipe()
        os.set_inheritable(w, False)
        child = os.fork()
        if child == 0:  # P1
            os.close(r)
            code = 1
            try:
                self._daemonize(w)
            except BaseException as e:  # noqa: BLE001 - must never return into the CLI
                try:
                    os.write(w, f"1\n{e}".encode())
                except OSError:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        data = self._read_pipe(r)
        os.close(r)
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        return self._report(data)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        pid = pidfile.live_pid(self.pid_path)
        if pid is None:
            pidfile.break_if_stale(self.pid_path)
            return 0
        watchdog = parent_pid(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            gone = not pidfile.is_xend_alive(pid) and (
                watchdog is None or not pidfile.is_xend_alive(watchdog))
            if gone:
                pidfile.break_if_stale(self.pid_path)
                return 0
            time.sleep(0.05)
        print(f"xend (pid {pid}) did not stop within {timeout:.0f} s", file=sys.stderr)
        return 1

    def restart(self) -> int:
        rc = self.stop()
        return rc if rc else self.start()

    def reload(self) -> int:
        pid = pidfile.live_pid(self.pid_path)
        if pid is None:
            print("xend is not running", file=sys.stderr)
            return 0
        os.kill(pid, signal.SIGHUP)
        return 0

    # -- launcher side -------------------------------------------------------------------------
    @staticmethod
    def _read_pipe(fd: int) -> bytes:
        chunks = []
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                chunks.append(b"1\nxend did not report readiness within %d s" % READY_TIMEOUT)
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def _report(self, data: bytes) -> int:
        text = data.decode(errors="replace")
        status, _, reason = text.partition("\n")
        if status.strip() == "0":
            return 0
        if not reason.strip():
            reason = ("xend exited during start-up; see "
                      f"{self.opts['xend-debug-logfile']} and {self.opts['logfile']}")
        print(f"Error: xend failed to start: {reason.strip()}", file=sys.stderr)
        return 1

    # -- daemon side ---------------------------------------------------------------------------
    def _daemonize(self, ready_fd: int) -> None:
        debug_path = os.path.abspath(self.opts["xend-debug-logfile"])
        make_dir(os.path.dirname(debug_path))
        debug_log = open_log(debug_path)
        server_pid = {"pid": 0}

        def forward(signum, _frame):
            if server_pid["pid"]:
                try:
                    os.kill(server_pid["pid"], signum)
                except ProcessLookupError:
                    pass

        ctx = daemon.DaemonContext(
            detach_process=True, working_directory="/", umask=0o022,
            files_preserve=[ready_fd], stdin=None,
            stdout=debug_log if env_int("XEND_DEBUG", 0) else None, stderr=debug_log,
            signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None,
                        signal.SIGTERM: forward, signal.SIGHUP: forward, signal.SIGINT: forward},
        )
        ctx.open()  # P1 exits inside; we continue as P2
        print(f"Xend started at {time.asctime()}.", file=sys.stderr)
        xlog = XendLog(self.opts)
        os._exit(self._watchdog(ready_fd, server_pid, xlog))

    def _watchdog(self, ready_fd: int, server_pid: dict, xlog: XendLog) -> int:
        restarts: deque = deque()
        fd: Optional[int] = ready_fd
        while True:
            pidfile.break_if_stale(self.pid_path)
            child = os.fork()
            if child == 0:  # P3
                for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                    signal.signal(s, signal.SIG_DFL)
                code = 1
                try:
                    code = self.run_server(fd)
                finally:
                    logging.shutdown()
                    os._exit(code)
            server_pid["pid"] = child
            if fd is not None:
                os.close(fd)  # restarted servers get no readiness pipe
                fd = None
            status = wait_child(child)
            if os.WIFEXITED(status):
                code = os.WEXITSTATUS(status)
                log.info("Xend exited with status %d.", code)
                return code
            sig = os.WTERMSIG(status)
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("Xend stopped due to signal %d.", sig)
                return 0
            log.critical("Xend died due to signal %d!  Restarting it.", sig)
            now = time.monotonic()
            restarts.append(now)
            while restarts and now - restarts[0] > RESTART_WINDOW:
                restarts.popleft()
            if len(restarts) > RESTART_LIMIT:
                log.critical("Xend died %d times within %d seconds; not restarting it again.",
                             len(restarts), RESTART_WINDOW)
                pidfile.break_if_stale(self.pid_path)
                return 1
            time.sleep(min(0.2 * len(restarts), 1.0))

    def run_server(self, ready_fd: Optional[int]) -> int:
        """The server process: build the Node, report readiness, serve until told to stop."""
        events: "queue.SimpleQueue[int]" = queue.SimpleQueue()
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, lambda signum, _f: events.put(signum))
        lock = None
        server = None
        try:
            log.info("Xend Daemon started")
            make_dir(os.path.dirname(self.pid_path), 0o755)
            lock = pidfile.acquire(self.pid_path)
            server = self.make_server(self.opts, self.config_path)
            server.start()
        except Exception as e:  # noqa: BLE001 - reported to the launcher, then exit 1
            msg = str(e) or e.__class__.__name__
            print(f"Exception starting xend: {msg}", file=sys.stderr)
            log.exception("Exception starting xend (%s)", msg)
            if server is not None:
                safe(server.stop)
            if lock is not None:
                pidfile.release(lock)
            report(ready_fd, f"1\n{msg}")
            return 1
        report(ready_fd, "0")
        try:
            while True:
                try:
                    signum = events.get(timeout=1.0)
                except queue.Empty:
                    continue
                if signum == signal.SIGHUP:
                    self._reload(server)
                else:
                    log.info("Xend stopping on signal %d", signum)
                    break
        finally:
            safe(server.stop)
            if lock is not None:
                pidfile.release(lock)
        return 0

    def _reload(self, server) -> None:
        from xend.errors import ConfigError
        log.info("Restarting all XML-RPC and Xen-API servers...")
        if self.config_path != DEFAULT_CONFIG_PATH and not os.path.exists(self.config_path):
            log.error("Reload refused; keeping the running configuration: %s does not exist",
                      self.config_path)
            return
        try:
            opts = self.load_options(self.config_path)
        except ConfigError as e:
            log.error("Reload refused; keeping the running configuration:\n%s", e)
            return
        except Exception:  # noqa: BLE001
            log.exception("Reload refused; keeping the running configuration")
            return
        try:
            server.reload(opts)
            self.opts = opts
        except Exception:  # noqa: BLE001
            log.exception("Reload failed")


def report(fd: Optional[int], text: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, text.encode())
        os.close(fd)
    except OSError:
        pass


def safe(fn: Callable) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001
        log.exception("error during shutdown")


def wait_child(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


def parent_pid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return ppid if ppid > 1 else None
