"""The servers the config enables, each running in its own thread (reference section 4.1).

Every listener is described by a ``ListenerSpec``: a name, the option values that define it
(its ``key``: a reload restarts a listener only when its key changed), the endpoint it
answers on, and a factory that binds and returns a ``socketserver`` server.
"""
from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

from xend.server import unixsock

log = logging.getLogger("xend.SrvServer")

Endpoint = Union[str, Tuple[str, int]]


class ListenerError(Exception):
    pass


@dataclass
class ListenerSpec:
    name: str
    key: tuple
    endpoint: Endpoint
    make: Callable[[], socketserver.BaseServer]
    on_close: Callable[[], None] = field(default=lambda: None)


class RunningListener:
    def __init__(self, spec: ListenerSpec):
        self.spec = spec
        try:
            self.server = spec.make()
        except OSError as e:
            raise ListenerError(f"{spec.name}: cannot listen on {describe(spec.endpoint)}: "
                                f"{e.strerror or e}") from e
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.25},
                                       name=spec.name, daemon=True)
        self.thread.start()
        log.info("%s listening on %s", spec.name, describe(spec.endpoint))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.spec.on_close()
        log.info("%s stopped", self.spec.name)


def describe(endpoint: Endpoint) -> str:
    if isinstance(endpoint, str):
        return endpoint
    host, port = endpoint
    return f"{host or '*'}:{port}"


def answers(endpoint: Endpoint, timeout: float = 2.0) -> bool:
    """True if a connection to the endpoint is accepted."""
    if isinstance(endpoint, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Union[str, Tuple[str, int]] = endpoint
    else:
        host, port = endpoint
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host if host not in ("", "0.0.0.0") else "127.0.0.1", port)
    s.settimeout(timeout)
    try:
        s.connect(target)
        return True
    except OSError:
        return False
    finally:
        s.close()


def unix_listener(name: str, key: tuple, path: str,
                  make: Callable[[socket.socket], socketserver.BaseServer]) -> ListenerSpec:
    """A spec for a server on a unix socket, with the socket hygiene of ``unixsock``."""
    state: Dict[str, int] = {}

    def factory() -> socketserver.BaseServer:
        sock = unixsock.bind_unix(path)
        state["ino"] = unixsock.bound_inode(path)
        try:
            return make(sock)
        except BaseException:
            sock.close()
            unixsock.remove_if_ours(path, state["ino"])
            raise

    def close() -> None:
        if "ino" in state:
            unixsock.remove_if_ours(path, state["ino"])

    return ListenerSpec(name, key, path, factory, close)


class Listeners:
    """Starts, stops and reloads the set of listeners built by ``build_specs(opts)``."""

    def __init__(self, build_specs: Callable[[Mapping], List[ListenerSpec]]):
        self.build_specs = build_specs
        self.running: Dict[str, RunningListener] = {}

    def start(self, opts: Mapping) -> None:
        try:
            for spec in self.build_specs(opts):
                self.running[spec.name] = RunningListener(spec)
            self.wait_answering()
        except BaseException:
            self.stop()
            raise

    def wait_answering(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for name, lst in self.running.items():
            while not answers(lst.spec.endpoint):
                if time.monotonic() > deadline:
                    raise ListenerError(f"{name} does not answer on {describe(lst.spec.endpoint)}")
                time.sleep(0.05)

    def stop(self, names: Optional[List[str]] = None) -> None:
        """Stop the listeners all at once: each ``shutdown`` waits for its serve loop's next
        poll, and one after another those waits add up."""
        def stop_one(name: str, lst: RunningListener) -> None:
            try:
                lst.stop()
            except Exception:  # noqa: BLE001
                log.exception("error stopping %s", name)

        stopping = [(name, self.running.pop(name)) for name in
                    list(names if names is not None else self.running) if name in self.running]
        threads = [threading.Thread(target=stop_one, args=item, name=f"stop {item[0]}")
                   for item in stopping]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def reload(self, opts: Mapping) -> None:
        """Restart the listeners whose settings changed; start new ones; stop dropped ones."""
        specs = {s.name: s for s in self.build_specs(opts)}
        stale = [n for n, r in self.running.items() if n not in specs or specs[n].key != r.spec.key]
        self.stop(stale)
        for name, spec in specs.items():
            if name not in self.running:
                self.running[name] = RunningListener(spec)
        self.wait_answering()

    def endpoints(self) -> Dict[str, Endpoint]:
        return {n: r.spec.endpoint for n, r in self.running.items()}
