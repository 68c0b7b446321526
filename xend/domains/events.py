"""The event thread and the actions on shutdown, reboot and crash (reference §8.3, §8.4);
part of DomainRegistry.

The thread waits in ``hypervisor.wait_for_change`` (holding no lock), then looks at every
domain once: a domain that shut down or crashed gets its action run in a thread of its own
(under the domain's ``op_lock``, after checking again that it is still the same Xen domain),
and unanswered shutdown requests are timed out. Console output is pulled into the ring
buffers when it is read (``domain_console``), not at every look.
"""
from __future__ import annotations

import logging
import time
from typing import Tuple

from xend.errors import HypervisorError, XendError
from xend.hypervisor.base import SHUTDOWN_NAMES

from . import config as cfgmod
from .domain import Domain

log = logging.getLogger("xend.XendDomainInfo")

_ACTION_KEYS = {"poweroff": "on_poweroff", "reboot": "on_reboot", "crash": "on_crash"}
_COREDUMP_ACTIONS = ("coredump-destroy", "coredump-restart")


#: seconds after which a domain another tool made is adopted even without a memory target
NEWCOMER_SETTLE = 30.0
#: seconds a domain another toolstack built is left to it after it shut down (``xl``'s own
#: monitor restarts or destroys it at once); then xend runs the domain's action itself
FOREIGN_GRACE = 10.0
#: seconds between two looks at every domain when the hypervisor reports no change and no
#: timer runs (a safety net: every change it knows of wakes the event thread at once)
IDLE_SWEEP = 10.0
#: a look at every domain waits for this many times what the previous one took (at most
#: event_interval) since that one started: the event thread's share of the CPU stays a fifth
REFRESH_SHARE = 5.0


class EventsMixin:
    # -- the loop -------------------------------------------------------------------------------
    def _event_loop(self) -> None:
        """Look at the domains when the hypervisor says something changed, every
        event_interval while a timer runs (a shutdown request, a foreign domain's grace, a
        newcomer being built), and every IDLE_SWEEP seconds otherwise: an idle xend with
        thousands of domains costs next to nothing (console output is pulled on demand)."""
        swept = time.monotonic() - IDLE_SWEEP       # the first look is at once (what happened
        cost = 0.0                                  # while xend was down)
        while not self._stop.is_set():
            try:
                wait, timing = self._next_wait()
                changed = self.hv.wait_for_change(wait)
                if self._stop.is_set():
                    break
                now = time.monotonic()
                if changed or timing or self._newcomers_seen or now - swept >= IDLE_SWEEP:
                    # a look costs time with every domain: under a stream of changes (a
                    # thousand creations) at most a fifth of the time goes to looking
                    gap = min(self.event_interval, REFRESH_SHARE * cost) - (now - swept)
                    if gap > 0 and self._stop.wait(gap):
                        break
                    swept = time.monotonic()
                    self.refresh()
                    cost = time.monotonic() - swept
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("Error while handling domain events")
                self._stop.wait(self.event_interval)

    def _next_wait(self) -> Tuple[float, bool]:
        """(how long to wait at most, whether a timer of a domain runs)."""
        wait = self.event_interval
        timing = False
        now = time.time()
        for d in self._all():
            at = d.shutdown_requested_at
            if at is not None:
                timing = True
                wait = min(wait, max(0.01, at + self.shutdown_timeout - now))
            if d.down_seen_at is not None:
                timing = True
                wait = min(wait, max(0.01, d.down_seen_at + FOREIGN_GRACE - now))
        return wait, timing

    def refresh(self) -> None:
        """Look at every domain once (the event thread calls this; tests may too)."""
        infos = {i.domid: i for i in self.hv.list_domains()}
        now = time.time()
        for dom in self._all():
            domid = dom.domid
            if domid is None or domid == 0:
                continue
            info = infos.get(domid)
            if info is None:
                self._vanished(dom, domid)
                continue
            if dom.handled_domid == domid or info.dying:
                continue
            if (info.crashed or info.shutdown) and dom.foreign and not self._grace_over(dom, now):
                continue
            if info.crashed:
                self._dispatch(dom, domid, "crash")
            elif info.shutdown:
                self._dispatch(dom, domid, SHUTDOWN_NAMES.get(info.shutdown_reason, "halt"))
            else:
                self._check_shutdown_timeout(dom, domid, now)
        self._adopt_newcomers(infos)

    def _adopt_newcomers(self, infos: dict) -> None:
        """Domains another tool (xl, ...) created while xend runs are adopted as at start,
        as the original did on @introduceDomain. A domain this xend is building or tearing
        down is recognised by its uuid (held by a reservation or by its Domain)."""
        with self._lock:
            known_ids = {d.domid for d in self._domains.values() if d.domid is not None}
            known_uuids = {d.uuid for d in self._domains.values()} | set(self._reserved_uuids)
        seen = self._newcomers_seen
        for gone in set(seen) - set(infos):
            del seen[gone]
        now = time.monotonic()
        for domid, info in sorted(infos.items()):
            if domid == 0 or domid in known_ids or info.dying or info.uuid in known_uuids:
                continue
            # Another toolstack writes the domain's name early and its memory target when the
            # build is done (libxl: build_post): adopt it then, not half-built; a tool that
            # never writes a target gets its domain adopted after NEWCOMER_SETTLE seconds.
            first = seen.setdefault(domid, now)
            base = f"/local/domain/{domid}"
            if self._store_read(base + "/name") is None:
                continue
            built = self._store_read(base + "/memory/target") is not None
            if not (built or now - first >= NEWCOMER_SETTLE):
                continue
            seen.pop(domid, None)
            try:
                self._add(self._adopt(info))
            except Exception:  # noqa: BLE001 - one odd domain must not stop the loop
                log.exception("Failed to create reference to running domain id: %d", domid)

    def _grace_over(self, dom: Domain, now: float) -> bool:
        """A foreign domain that shut down: has its own toolstack had FOREIGN_GRACE s?"""
        if dom.down_seen_at is None:
            dom.down_seen_at = now
            log.info("Domain %s (%s) shut down; leaving it %g s to the toolstack that built "
                     "it", dom.name, dom.domid, FOREIGN_GRACE)
        return now - dom.down_seen_at >= FOREIGN_GRACE

    def _pull_console(self, domid: int) -> None:
        def source() -> bytes:
            try:
                return self.hv.read_console(domid)
            except HypervisorError:
                return b""
        self.consoles.pull(domid, source)

    def _check_shutdown_timeout(self, dom: Domain, domid: int, now: float) -> None:
        at = dom.shutdown_requested_at
        if at is None or now - at < self.shutdown_timeout:
            return
        dom.shutdown_requested_at = None
        if dom.read_dom("xend/unresponsive"):
            return
        log.info("Domain shutdown timeout expired: name=%s id=%s", dom.name, domid)
        dom.write_dom("xend/unresponsive", "True")

    def _vanished(self, dom: Domain, domid: int) -> None:
        """The Xen domain went away without us (destroyed by another tool, say)."""
        if not dom.op_lock.acquire(blocking=False):
            return                  # a long operation on it is running: it will clean up
        try:
            if dom.domid != domid:
                return
            try:
                self.hv.domain_info(domid)
                return              # still there: the listing was older than our check
            except HypervisorError:
                pass
            log.info("Domain %s (%d) has gone away.", dom.name, domid)
            self._destroy(dom)
        finally:
            dom.op_lock.release()

    # -- shutdown and crash ---------------------------------------------------------------------
    def _dispatch(self, dom: Domain, domid: int, reason: str) -> None:
        with dom.lock:
            if dom.domid != domid or dom.handled_domid == domid:
                return
            dom.handled_domid = domid
            dom.shutdown_requested_at = None
        if reason == "crash":
            log.warning("Domain has crashed: name=%s id=%d.", dom.name, domid)
        else:
            log.info("Domain has shutdown: name=%s id=%d reason=%s.", dom.name, domid, reason)
        try:
            dom.write_vm("xend/last_shutdown_reason", reason)
        except HypervisorError:
            pass
        if reason == "suspend":
            return                  # left for the save code, as the original
        self._spawn(f"xend-action-{dom.name}-{domid}", self._handle_exit, dom, domid, reason)

    def _handle_exit(self, dom: Domain, domid: int, reason: str) -> None:
        with dom.op_lock:
            if dom.domid != domid:
                return              # destroyed, saved or restarted meanwhile
            action = getattr(dom.config, _ACTION_KEYS[reason]) if reason in _ACTION_KEYS \
                else "destroy"
            if reason == "crash" and (self.settings.enable_dump or action in _COREDUMP_ACTIONS):
                try:
                    self._dump_core(dom, None)
                except XendError:
                    pass            # logged by the dump code; the action still runs
            self._run_action(dom, action)

    def _run_action(self, dom: Domain, action: str) -> None:
        """Caller holds ``dom.op_lock``."""
        if action == "preserve":
            self._preserve(dom)
        elif action in ("restart", "coredump-restart"):
            self._restart(dom, rename=False)
        elif action == "rename-restart":
            self._restart(dom, rename=True)
        else:                       # destroy, coredump-destroy, anything unexpected
            self._destroy(dom)

    def _preserve(self, dom: Domain) -> None:
        log.info("Preserving dead domain %s (%d).", dom.name, dom.domid)
        dom.write_dom("xend/shutdown_completed", "True")
        with dom.lock:
            dom.handled_domid = dom.domid

    def _restart(self, dom: Domain, rename: bool) -> None:
        """Destroy (or, renaming, preserve) the dead Xen domain and build a new one from the
        same config under the same name and uuid, unpaused. Caller holds ``dom.op_lock``."""
        old_domid = dom.domid
        if dom.read_vm("xend/restart_in_progress"):
            log.error("Xend failed during restart of domain %s.  "
                      "Refusing to restart to avoid loops.", str(old_domid))
            self._destroy(dom)
            return
        dom.write_vm("xend/restart_in_progress", "True")
        elapsed = time.time() - (dom.start_time or 0.0)
        if elapsed < self.minimum_restart_time:
            log.error("VM %s restarting too fast (Elapsed time: %f seconds). "
                      "Refusing to restart to avoid loops.", dom.name, elapsed)
            dom.rm_vm("xend/restart_in_progress")
            self._destroy(dom)
            return
        try:
            count = int(dom.read_vm("xend/restart_count") or 0)
        except ValueError:
            count = 0
        try:
            self._check_boot_files(dom.config)
            if rename:
                self._preserve_for_restart(dom)
            else:
                self._teardown(dom, keep_vm=True)
            self._build(dom, paused=True, fresh=False)
            self._devices_ready(dom)
            # counted before the new domain runs, so whoever sees it running sees the count
            dom.write_vm("xend/restart_count", str(count + 1))
            self.hv.unpause(dom.domid)
            log.info("Domain %s restarted as domain %d (restart %d).", dom.name, dom.domid,
                     count + 1)
        except Exception:  # noqa: BLE001
            log.exception("Failed to restart domain %s.", str(old_domid))
            if dom.domid is not None and dom.domid != old_domid:
                self._destroy(dom)
            elif dom.domid is None and not dom.managed:
                self._remove(dom)
                dom.rm_vm()
        finally:
            dom.rm_vm("xend/restart_in_progress")

    def _preserve_for_restart(self, dom: Domain) -> None:
        """Move the dead Xen domain to a new Domain named ``Domain-<new uuid>`` (preserved);
        ``dom`` keeps its name and uuid, without a Xen domain."""
        new_uuid = cfgmod.new_uuid()
        new_name = "Domain-%s" % new_uuid
        log.info("Renaming dead domain %s (%d, %s) to %s (%s).", dom.name, dom.domid, dom.uuid,
                 new_name, new_uuid)
        old = Domain(self.hv, dom.config.replace(name=new_name, uuid=new_uuid),
                     domid=dom.domid)
        old.start_time = dom.start_time
        old.handled_domid = old.domid       # before the event thread can see it
        old.publish(self.consoles.limit_bytes)
        self._preserve(old)
        self._add(old)
        with dom.lock:
            dom.domid = None
            dom.start_time = None
            dom.handled_domid = None
            dom.shutdown_requested_at = None
