"""Save, restore, managed suspend/resume, and the stream functions the relocation code uses
(reference §7.3, §7.5, §8.7); part of DomainRegistry.

``save_to_stream`` and ``restore_from_stream`` hold no registry lock while streaming (only
the domain's own ``op_lock``), so listings and other domains are not held up.
"""
from __future__ import annotations

import logging
import os
import stat
import tempfile
from typing import Any, BinaryIO, Callable, Iterator, Optional, Tuple

from xend.errors import HypervisorError, VMBadState, VmError, XendError, XendInvalidDomain
from xend.fsutil import fsync_dir
from xend.hypervisor.base import PAGE_SIZE, SHUTDOWN_SUSPEND
from xend.journal import Journal

from .config import config_sxp
from .domain import Domain
from .image import SaveStats, open_memory_section, read_config, write_image
from .native_image import restore_native, write_native
from .operations import bool_arg
from .states import RUNNING, SUSPENDED

log = logging.getLogger("xend.XendCheckpoint")

MIGRATING_PREFIX = "migrating-"
JOURNAL_DIR = "operations"          # in xend-state-path
TMP_SUFFIX = ".xend-tmp"            # an image being written: .<name>.<random>.xend-tmp


class SaveRestoreMixin:
    # -- save -----------------------------------------------------------------------------------
    def domain_save(self, dom: Any, path: Any, checkpoint: Any = False) -> None:
        """Write the domain's image to ``path``; the domain is destroyed afterwards unless
        ``checkpoint`` (then it keeps running)."""
        d = self._save_checks(dom, "save")
        self._save_to_file(d, str(path), bool_arg(checkpoint), "save")

    def _save_to_file(self, d: Domain, path: str, keep_running: bool, operation: str) -> None:
        """The image goes to a temporary file beside ``path``, which is synced and renamed
        over it only once the image is whole, before the domain is destroyed: a failed or
        interrupted save leaves an earlier file at ``path`` as it was. The journal entry
        ``save-<uuid>`` lets a restarted xend finish or undo it (``_recover_operations``).
        A target that is not a regular file (/dev/null, a pipe) is written in place."""
        target = os.path.realpath(path)
        try:
            special = not stat.S_ISREG(os.stat(target).st_mode)
        except FileNotFoundError:
            special = False
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s" % (path, ex.strerror)) \
                from None
        if special:
            return self._save_in_place(d, path, target, keep_running, operation)
        directory = os.path.dirname(target)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                                       suffix=TMP_SUFFIX, dir=directory)
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s" % (path, ex.strerror)) \
                from None
        entry = dict(domid=d.domid, name=d.name, path=target, tmp=tmp,
                     keep_running=keep_running)
        f = os.fdopen(fd, "wb")

        def commit() -> None:
            # whole and on disk: from here a restarted xend completes the save (the rename)
            f.flush()
            os.fsync(f.fileno())
            self._journal_write("save", d.uuid, phase="written", **entry)
            os.replace(tmp, target)
            fsync_dir(directory)

        try:
            self._journal_write("save", d.uuid, phase="streaming", **entry)
            with f:
                self.save_to_stream(d, f, live=False, keep_running=keep_running,
                                    operation=operation, commit=commit)
        except (OSError, XendError) as ex:
            # disk full and the like (save_to_stream resumed the domain and re-raised the
            # OSError as a XendError)
            cause = ex if isinstance(ex, OSError) else ex.__cause__
            if not isinstance(cause, OSError):
                raise
            raise XendError("can't write guest state file %s: %s"
                            % (path, cause.strerror or cause)) from None
        finally:
            f.close()
            _unlink_quietly(tmp)
            self._journal_remove("save", d.uuid)

    def _save_in_place(self, d: Domain, path: str, target: str, keep_running: bool,
                       operation: str) -> None:
        try:
            f = open(target, "wb")
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s" % (path, ex.strerror)) \
                from None
        try:
            with f:
                self.save_to_stream(d, f, live=False, keep_running=keep_running,
                                    operation=operation)
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s"
                            % (path, ex.strerror or ex)) from None

    def _save_checks(self, dom: Any, verb: str) -> Domain:
        d = self._get(dom)
        if d.is_dom0:
            raise XendError("Cannot %s privileged domain %s" % (verb, dom))
        if self._state(d) != RUNNING:
            raise VMBadState("Domain is not running")
        return d

    def save_to_stream(self, dom: Any, fileobj: BinaryIO, live: bool = False,
                       keep_running: bool = False, *, node: int = -1,
                       migrating: bool = False, step: Optional[Callable[[int], None]] = None,
                       operation: str = "save",
                       commit: Optional[Callable[[], None]] = None) -> SaveStats:
        """Stream the image of a running domain to ``fileobj``.

        On success the domain is destroyed, or (``keep_running``) unpaused. On failure it is
        resumed where it is (``Save failed on domain <name> (<id>) - resuming.``) and the
        error re-raised. ``migrating`` renames it ``migrating-<name>`` meanwhile; ``node``
        >= 0 puts ``(node N)`` after ``vcpus`` in the config; ``step(n)`` is called for the
        device migration steps 1-3 (see image.write_image). ``commit()`` is called once the
        image is written, the domain still paused; if it raises, the save failed."""
        d = self._save_checks(dom, "migrate" if migrating else "save")
        with self._operation(d):
            domid = d.domid
            if domid is None or self._state(d) != RUNNING:
                raise VMBadState("Domain is not running")
            record = config_sxp(d.config)
            if node is not None and int(node) >= 0:
                at = next(i for i, k in enumerate(record) if isinstance(k, list)
                          and k[:1] == ["vcpus"]) + 1
                record.insert(at, ["node", int(node)])
            name = d.name
            if migrating:
                self._rename_quietly(d, MIGRATING_PREFIX + name)
            op = self.tracker.start(operation, name, d.uuid)
            writer = write_native if self.hv.image_kind == "stream" else write_image
            try:
                stats = writer(self.hv, record, domid, fileobj, live=live,
                               progress=op.update, step=step)
                if commit is not None:
                    commit()
            except BaseException as e:
                log.error("Save failed on domain %s (%s) - resuming.", name, domid)
                if migrating:
                    self._rename_quietly(d, name)
                self._run_on(d, domid)
                if isinstance(e, (XendError, KeyboardInterrupt, SystemExit)):
                    raise
                if isinstance(e, HypervisorError):
                    raise XendError(e.message) from e
                raise XendError(str(e) or e.__class__.__name__) from e
            finally:
                op.finish()
            if keep_running:
                self._run_on(d, domid)
                log.info("Domain %s (%d) checkpointed.", name, domid)
            else:
                if migrating:
                    self._rename_quietly(d, name)
                self._destroy(d)
                log.info("Domain %s (%d) saved.", name, domid)
        return stats

    def _run_on(self, d: Domain, domid: int) -> None:
        """The saved domain runs again (a checkpoint, a failed save): a hypervisor stream
        left it suspended, which the event loop saw as a shutdown and left to us."""
        try:
            self.hv.resume_saved(domid)
        except HypervisorError:
            log.exception("Resuming domain %s (%s) failed", d.name, domid)
            return
        with d.lock:
            if d.handled_domid == domid:
                d.handled_domid = None

    def _rename_quietly(self, d: Domain, name: str) -> None:
        with d.lock:
            d.config = d.config.replace(name=name)
        d.write_dom("name", name)

    # -- restore --------------------------------------------------------------------------------
    def domain_restore(self, path: Any, paused: Any = False) -> list:
        path = str(path)
        try:
            f = open(path, "rb")
        except OSError as ex:
            raise XendError("can't read guest state file %s: %s" % (path, ex.strerror)) \
                from None
        with f:
            d = self.restore_from_stream(f, relocating=False, paused=bool_arg(paused),
                                         source=path)
        return self._record(d, full=True)

    def restore_from_stream(self, fileobj: BinaryIO, relocating: bool = False,
                            paused: bool = False, *,
                            managed_dom: Optional[Domain] = None,
                            source: str = "a stream") -> Domain:
        """Build a domain from the image on ``fileobj`` and return it (unpaused unless
        ``paused``). A relocating restore skips the duplicate name/uuid check. On failure
        nothing is left: the half-built domain is destroyed (by a restarted xend, from the
        journal entry ``restore-<uuid>``, if this one is killed meanwhile). XendErrors keep
        their message; anything else becomes ``Restore failed``."""
        try:
            return self._restore(fileobj, relocating, paused, managed_dom, source)
        except XendError:
            log.exception("Restore failed")
            raise
        except Exception:  # noqa: BLE001
            log.exception("Restore failed")
            raise XendError("Restore failed") from None

    def _restore(self, fileobj: BinaryIO, relocating: bool, paused: bool,
                 managed_dom: Optional[Domain], source: str) -> Domain:
        cfg = self._parse(read_config(fileobj))
        if cfg.nomigrate:
            raise XendError("cannot restore non-migratable domain")
        pages = open_memory_section(fileobj)
        if pages.kind != self.hv.image_kind:
            raise XendError("this image holds %s, which this host's hypervisor (%s) cannot "
                            "restore" % ("pages saved by xend" if pages.kind == "pages" else
                                         "a %s stream" % pages.format, self.hv.name))
        image_mib, rest = divmod(pages.nr_pages * PAGE_SIZE, 1024 * 1024) \
            if pages.kind == "pages" else (cfg.memory, 0)
        if image_mib != cfg.memory and not rest and 1 <= image_mib <= cfg.maxmem:
            # the guest's allocation differed from its target when it was saved: the
            # domain is built with the memory the image holds
            log.info("Restoring %s with %d MiB, the size of its memory image (target %d MiB)",
                     cfg.name, image_mib, cfg.memory)
            cfg = cfg.replace(memory=image_mib)
        if not relocating:
            for other in self._all():
                if other.domid is not None and (other.name == cfg.name or
                                                other.uuid == cfg.uuid):
                    raise VmError("Domain '%s' already exists with ID '%d'"
                                  % (other.name, other.domid))
        target = managed_dom if managed_dom is not None else self._managed_inactive(cfg.uuid)
        with self._reserve(cfg, check_uuid=not relocating, check_name=not relocating,
                           exclude=target):
            # (an incoming migration has the relocation journal: xend.relocation.recovery)
            journal = not relocating
            if journal:
                self._journal_write("restore", cfg.uuid, name=cfg.name, source=source)
            try:
                dom = Domain(self.hv, cfg, managed=target is not None)
                op = self.tracker.start("restore", cfg.name, cfg.uuid)
                try:
                    with dom.op_lock:
                        if pages.kind == "stream":
                            domid = self._build(dom, paused=True, fresh=True,
                                                make=self._from_stream(pages, op, cfg))
                        else:
                            domid = self._build(dom, paused=True, fresh=True)
                            try:
                                self._load_pages(domid, pages, op)
                            except BaseException:
                                self._teardown(dom)
                                raise
                        self._devices_ready(dom)
                finally:
                    op.finish()
                self._replace(target, dom)
                log.info("Domain %s (%d) restored%s.", dom.name, domid,
                         " (relocating)" if relocating else "")
                if not paused:
                    self.hv.unpause(domid)
            finally:
                if journal:
                    self._journal_remove("restore", cfg.uuid)
        return dom

    def _from_stream(self, stream, op, cfg) -> Callable[[Any], int]:
        """How ``_build`` makes the domain of a restore from a hypervisor's stream."""
        expected = cfg.memory * 1024 * 1024

        def make(spec) -> int:
            return restore_native(self.hv, lambda fd: self.hv.restore_stream(spec, fd),
                                  stream, lambda n: op.update(n, max(n, expected)))
        return make

    def _load_pages(self, domid: int, pages, op) -> None:
        have = self.hv.nr_pages(domid)
        if pages.nr_pages != have:
            raise XendError("Restore failed: the image holds %d pages but the domain has %d"
                            % (pages.nr_pages, have))
        total = have * (PAGE_SIZE + 8)

        def counted() -> Iterator[Tuple[Any, memoryview]]:
            for batch in pages.batches():
                op.update(pages.bytes, max(total, pages.bytes))
                yield batch

        self.hv.write_page_batches(domid, counted())
        if not pages.finished:
            pages.drain()               # the checksum is checked at the end of the stream
        op.update(pages.bytes, pages.bytes)

    def unpause_restored(self, dom: Domain) -> None:
        """Unpause a domain ``restore_from_stream(paused=True)`` returned."""
        d = self._get(dom)
        if d.domid is None:
            raise VMBadState("Domain '%s' is not started" % d.name)
        self.hv.unpause(d.domid)

    def discard_restored(self, dom: Domain) -> None:
        """Destroy a domain ``restore_from_stream`` returned (the sender kept its copy)."""
        try:
            d = self._get(dom)
        except XendInvalidDomain:
            return
        with d.op_lock:
            self._destroy(d)

    # -- managed suspend / resume ---------------------------------------------------------------
    def domain_suspend(self, dom: Any) -> None:
        """Managed domain -> ``<uuid>/checkpoint.chk``; state suspended."""
        d = self._save_checks(dom, "suspend")
        if not os.path.exists(self.store.config_path(d.uuid)):
            raise XendError("Domain is not managed by Xend lifecycle support.")
        self._save_to_file(d, self.store.checkpoint_path(d.uuid), False, "suspend")

    def domain_resume(self, dom: Any, start_paused: Any = False) -> None:
        d = self._get(dom)
        try:
            if d.is_dom0:
                raise XendError("Cannot resume privileged domain %s" % dom)
            if self._state(d) != SUSPENDED:
                raise XendError("Cannot resume domain that is not suspended.")
            chkpath = self.store.checkpoint_path(d.uuid)
            if not os.path.exists(chkpath):
                raise XendError("Domain was not suspended by Xend")
            try:
                f = open(chkpath, "rb")
            except OSError:
                raise XendError("Failed to read stored checkpoint file") from None
            with f:
                self.restore_from_stream(f, relocating=False, paused=bool_arg(start_paused),
                                         managed_dom=d, source=chkpath)
            try:
                os.unlink(chkpath)
            except OSError:
                raise XendError("Failed to delete checkpoint file") from None
        except Exception as ex:  # noqa: BLE001 - the original wrapped every failure
            log.exception("Exception occurred when resuming")
            raise XendError("Error occurred when resuming: %s" % ex) from None

    # -- the journal of saves and restores in progress ---------------------------------------------
    def _operations_journal(self) -> Optional[OperationsJournal]:
        state = self.settings.state_path
        return OperationsJournal(os.path.join(state, JOURNAL_DIR)) if state else None

    def _journal_write(self, kind: str, uuid: str, **fields: Any) -> None:
        """Record an operation before its first step; XendError if that is not possible (a
        save or restore that could not be undone after a crash is not started)."""
        journal = self._operations_journal()
        if journal is None:
            return
        try:
            journal.write(kind, uuid, **fields)
        except OSError as ex:
            raise XendError("cannot record the %s in %s: %s"
                            % (kind, journal.directory, ex.strerror or ex)) from None

    def _journal_remove(self, kind: str, uuid: str) -> None:
        journal = self._operations_journal()
        if journal is None:
            return
        try:
            journal.remove(kind, uuid)
        except OSError as ex:
            log.error("Cannot remove the journal entry %s-%s: %s", kind, uuid, ex)

    def _recover_operations(self) -> None:
        """At start, after the hypervisor's domains were adopted: undo or finish the saves
        and restores a killed xend left (its journal entries), whatever the hypervisor.

        * restore: the domain it was building is destroyed (its memory is not the image's);
        * save, image not yet whole: the unfinished file goes, the domain is resumed;
        * save, image whole (synced): it is renamed into place if it was not yet, and the
          domain is destroyed as the save would have done (a checkpoint's is resumed)."""
        journal = self._operations_journal()
        if journal is None:
            return
        for entry in journal.entries("restore"):
            for d in self._all():
                if d.uuid == entry["uuid"] and d.domid is not None:
                    log.warning("Domain %s (%d) was being restored from %s when xend stopped: "
                                "destroying it (a restore that did not finish is never kept)",
                                d.name, d.domid, entry.get("source", "?"))
                    self._recover_step(self._destroy, d)
            journal.remove("restore", entry["uuid"])
        for entry in journal.entries("save"):
            self._recover_save(entry)
            journal.remove("save", entry["uuid"])

    def _recover_save(self, entry: dict) -> None:
        path, tmp, domid = entry.get("path", "?"), entry.get("tmp"), entry.get("domid")
        written = entry.get("phase") == "written"
        if isinstance(tmp, str) and os.path.exists(tmp):
            if written:
                self._recover_step(_finish_rename, tmp, path)
            else:
                log.warning("Removing %s, the unfinished image of an interrupted save to %s",
                            tmp, path)
                _unlink_quietly(tmp)
        d = next((d for d in self._all() if d.uuid == entry["uuid"] and d.domid is not None
                  and d.domid == domid), None)
        if d is None:
            return
        if written and not entry.get("keep_running"):
            log.warning("Domain %s (%d) was saved to %s when xend stopped: destroying it, as "
                        "the save would have", d.name, d.domid, path)
            self._recover_step(self._destroy, d)
            return
        log.warning("The save of domain %s (%d) to %s was interrupted when xend stopped: "
                    "resuming the domain", d.name, d.domid, path)
        try:
            info = self.hv.domain_info(d.domid)
        except HypervisorError:
            return
        # paused (xend's pages) or suspended (a hypervisor's stream: its own resume)
        if info.paused or (info.shutdown and info.shutdown_reason == SHUTDOWN_SUSPEND):
            self._recover_step(self._run_on, d, d.domid)

    @staticmethod
    def _recover_step(fn: Callable, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - log it and go on with the next one
            log.exception("Recovery: %s failed", getattr(fn, "__name__", fn))


class OperationsJournal(Journal):
    """``<xend-state-path>/operations/``: ``save-<uuid>`` and ``restore-<uuid>``."""
    KINDS = ("save", "restore")


def _finish_rename(tmp: str, path: str) -> None:
    log.warning("Completing the save to %s (its image %s was whole)", path, tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
