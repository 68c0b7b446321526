"""The sender: ``xend.domain.migrate`` (reference section 7.2).

``DomainRegistry.domain_migrate`` checks the domain (exists, not dom0, running, managed for
``chs``) and calls ``Migrator(domain, dst, live, port, node, ssl, chs)``. Then:

1. ``ssl`` None -> ``xend-relocation-ssl``; port 0 -> ``xend-relocation-port`` (or the SSL port);
2. device step 0 (``external-migration-tool``; a refusal ends it here);
3. connect (30 s for the connection and the ``(ready ...)`` reply), ``receive`` / ``sslreceive``;
4. ``registry.save_to_stream(..., migrating=True)`` renames the domain ``migrating-<name>`` and
   streams it (live: dirty-page rounds, then a short final pause; non-live: pause, send). Its
   step hook runs device steps 1, 2 and 3 (2 and 3 while the guest is paused, before the last
   pages, as the original did) and, at the end of the stream, waits for the receiver's
   verdict: only after ``(ok)`` does ``save_to_stream`` destroy our copy;
5. any failure: the domain is resumed here under its own name, the device steps are
   recovered, and the error raised is the receiver's (``<message> (from <dst>)``) when it sent
   one, else ours (``can't connect: ...``, ``connection to <dst> lost: ...``).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Optional, Tuple

from xend import sxp
from xend.errors import XendError
from xend.relocation import connection, protocol, tool
from xend.relocation.connection import ConnectFailed, PeerSpoke, RelocationConnection
from xend.relocation.journal import Journal

log = logging.getLogger("xend.relocate")

MB = 1024 * 1024


class Migrator:
    """The registry's ``migrator``: ``registry()`` and ``opts()`` give the current ones."""

    def __init__(self, registry: Callable[[], Any], opts: Callable[[], Mapping],
                 journal: Optional[Journal] = None, runner: tool.Runner = tool.run_shell):
        self.registry = registry
        self.opts = opts
        self.journal = journal
        self.runner = runner

    def __call__(self, dom: Any, dst: str, live: bool = False, port: int = 0, node: int = -1,
                 ssl: Optional[bool] = None, chs: bool = False) -> dict:
        return self.migrate(dom, dst, live, port, node, ssl, chs)

    def migrate(self, dom: Any, dst: str, live: bool = False, port: int = 0, node: int = -1,
                ssl: Optional[bool] = None, chs: bool = False) -> dict:
        """Move ``dom`` to ``dst``; returns what it took: ``bytes`` (a string: XML-RPC ints
        are 32-bit), ``seconds``, ``final_pause`` (live: seconds the guest was paused until
        the stream's end), ``downtime`` (seconds from that pause to the destination's
        (ok)), ``live``."""
        opts = self.opts()
        reg = self.registry()
        dst = str(dst).strip()
        if not dst:
            raise XendError("can't connect: no destination host given")
        use_ssl = bool(opts["xend-relocation-ssl"]) if ssl is None else bool(ssl)
        if not port:
            port = opts["xend-relocation-ssl-port"] if use_ssl else opts["xend-relocation-port"]
        name, uuid = dom.name, dom.uuid
        steps = tool.DeviceSteps(opts["external-migration-tool"] or "",
                                 tool.device_classes(domain_config(dom)), dst, name,
                                 self.runner)
        steps.check()
        log.info("Migrating domain %s (%s) to %s port %d%s%s", name, dom.domid, dst, port,
                 " (live)" if live else "", " over SSL" if use_ssl else "")
        try:
            conn = RelocationConnection(dst, port, use_ssl, opts["xend-relocation-ssl-ca-file"],
                                        identity=relocation_identity(opts))
        except ConnectFailed as e:
            steps.recover()
            raise XendError(str(e)) from None
        with conn:
            try:
                conn.ready(chs)
            except protocol.RemoteError as e:
                steps.recover()
                raise XendError(f"{e.message} (from {dst})") from None
            except (OSError, protocol.ProtocolError) as e:
                steps.recover()
                if isinstance(e, (protocol.ProtocolError, ConnectionResetError)):
                    raise XendError(f"can't connect: {dst} closed the connection without "
                                    "answering (does its xend-relocation-hosts-allow admit "
                                    "this host?)") from None
                raise XendError(f"can't connect: {connection.describe_error(e)}") from None
            return self._stream(reg, dom, conn, dst, name, uuid, live, node, chs, steps)

    def _stream(self, reg: Any, dom: Any, conn: RelocationConnection, dst: str, name: str,
                uuid: str, live: bool, node: int, chs: bool, steps: tool.DeviceSteps) -> dict:
        state = {"confirmed": False, "paused_at": None}
        started = time.monotonic()
        src_domid = dom.domid

        def step(n: int) -> None:
            if n == 1:
                steps.step(1)
            elif n == 2:
                state["paused_at"] = time.monotonic()
                steps.step(2)
                steps.step(3)
            elif n == 3:
                conn.verdict()
                state["confirmed"] = True
                self._journal("outgoing", uuid, name=name, dst=dst, phase="confirmed")

        self._journal("outgoing", uuid, name=name, dst=dst, phase="streaming")
        try:
            stats = reg.save_to_stream(dom, conn.out, live=live, keep_running=False, node=node,
                                       migrating=True, step=step, operation="migrate")
        except BaseException as e:
            if state["confirmed"]:
                # the destination runs it; only our clean-up failed: make sure ours is gone
                log.error("Domain %s is running at %s; removing it here failed: %s", name, dst, e)
                self._destroy_leftover(reg, src_domid, uuid)
                self._forget(uuid)
                raise XendError(f"Domain {name} migrated to {dst}, but removing it here "
                                f"failed: {protocol.error_message(e)}") from None
            steps.recover()
            self._forget(uuid)
            if isinstance(e, protocol.RemoteError):
                remote: Optional[protocol.RemoteError] = e
            else:
                # a network failure: give the receiver a moment to tell us why; a local one
                # (migration tool, hypervisor): take only what it already said
                network = isinstance(e.__cause__ or e, (OSError, protocol.ProtocolError))
                remote = conn.error_reply(connection.ERROR_REPLY_TIMEOUT if network else 0.05)
            if remote is not None:
                log.error("Migration of %s to %s failed at the destination: %s", name, dst,
                          remote.message)
                raise XendError(f"{remote.message} (from {dst})") from None
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            message = local_message(e, dst)
            log.error("Migration of %s to %s failed: %s", name, dst, message)
            raise XendError(message) from None
        self._forget(uuid)
        if chs:
            self._leave_home(reg, name, uuid, dst)
        elapsed = time.monotonic() - started
        pause = (time.monotonic() - state["paused_at"]) if state["paused_at"] else 0.0
        rate = stats.bytes / MB / elapsed if elapsed > 0 else 0.0
        if live:
            log.info("Migrated domain %s to %s: %d bytes in %.2f s (%.1f MB/s), live, %d "
                     "rounds; final pause %.3f s (%d pages); downtime until (ok) %.3f s",
                     name, dst, stats.bytes, elapsed, rate, stats.rounds, stats.pause_seconds,
                     stats.final_pages, pause)
        else:
            log.info("Migrated domain %s to %s: %d bytes in %.2f s (%.1f MB/s), non-live; "
                     "paused for %.3f s", name, dst, stats.bytes, elapsed, rate, pause)
        return {"bytes": str(stats.bytes), "seconds": elapsed, "live": bool(live),
                "final_pause": stats.pause_seconds if live else pause, "downtime": pause}

    @staticmethod
    def _destroy_leftover(reg: Any, domid: Any, uuid: str) -> None:
        from xend.relocation.receiver import find_records
        if any(sxp.child_value(r, "domid") == domid for r in find_records(reg, uuid=uuid)):
            try:
                reg.domain_destroy(domid)
            except Exception:  # noqa: BLE001
                log.exception("Could not destroy domain %s after its migration", domid)

    @staticmethod
    def _leave_home(reg: Any, name: str, uuid: str, dst: str) -> None:
        """change_home_server: the destination manages it now; forget our managed entry."""
        try:
            reg.domain_delete(uuid)
            log.info("Domain %s is managed by %s now; its managed entry here is deleted",
                     name, dst)
        except Exception as e:  # noqa: BLE001 - the migration itself succeeded
            log.error("Domain %s moved to %s, but deleting its managed entry here failed: %s",
                      name, dst, e)

    def _journal(self, kind: str, uuid: str, **fields: Any) -> None:
        if self.journal is None:
            return
        try:
            self.journal.write(kind, uuid, **fields)
        except (OSError, ValueError) as e:
            log.warning("Cannot record the migration of %s: %s", uuid, e)

    def _forget(self, uuid: str) -> None:
        if self.journal is not None:
            try:
                self.journal.remove("outgoing", uuid)
            except OSError as e:
                log.warning("Cannot remove the migration journal entry of %s: %s", uuid, e)


def domain_config(dom: Any) -> list:
    from xend.domains.config import config_sxp
    return config_sxp(dom.config)


def local_message(e: BaseException, dst: str) -> str:
    """Our own reason, for when the receiver told us nothing."""
    cause = e.__cause__ if isinstance(e, XendError) and e.__cause__ is not None else e
    if isinstance(cause, PeerSpoke):
        return f"connection to {dst} lost: the destination closed the connection"
    if isinstance(cause, protocol.ProtocolError):
        return f"connection to {dst} lost: {cause}"
    if isinstance(cause, OSError):
        return f"connection to {dst} lost: {connection.describe_error(cause)}"
    return protocol.error_message(e)


def relocation_identity(opts) -> Optional[Tuple[str, str]]:
    """The certificate this host presents when it sends over SSL: its relocation receiver's
    own key and certificate, when both are set (a receiver checks it against its CA)."""
    cert = opts["xend-relocation-server-ssl-cert-file"]
    key = opts["xend-relocation-server-ssl-key-file"]
    return (cert, key) if cert and key else None
