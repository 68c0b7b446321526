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
from xend.hypervisor.base import PAGE_SIZE

from .config import config_sxp
from .domain import Domain
from .image import SaveStats, read_image, write_image
from .operations import bool_arg
from .states import RUNNING, SUSPENDED

log = logging.getLogger("xend.XendCheckpoint")

MIGRATING_PREFIX = "migrating-"


class SaveRestoreMixin:
    # -- save -----------------------------------------------------------------------------------
    def domain_save(self, dom: Any, path: Any, checkpoint: Any = False) -> None:
        """Write the domain's image to ``path``; the domain is destroyed afterwards unless
        ``checkpoint`` (then it keeps running)."""
        d = self._save_checks(dom, "save")
        path = str(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s" % (path, ex.strerror)) \
                from None
        regular = stat.S_ISREG(os.fstat(fd).st_mode)  # not /dev/null, a pipe...
        try:
            with os.fdopen(fd, "wb") as f:
                self.save_to_stream(d, f, live=False, keep_running=bool_arg(checkpoint))
                f.flush()
                if regular:
                    os.fsync(f.fileno())
        except (OSError, XendError) as ex:
            # disk full and the like (save_to_stream resumed the domain and re-raised the
            # OSError as a XendError): a torn image is worse than none, so it goes
            cause = ex if isinstance(ex, OSError) else ex.__cause__
            if not isinstance(cause, OSError):
                raise
            if regular:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise XendError("can't write guest state file %s: %s"
                            % (path, cause.strerror or cause)) from None

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
                       operation: str = "save") -> SaveStats:
        """Stream the image of a running domain to ``fileobj``.

        On success the domain is destroyed, or (``keep_running``) unpaused. On failure it is
        resumed where it is (``Save failed on domain <name> (<id>) - resuming.``) and the
        error re-raised. ``migrating`` renames it ``migrating-<name>`` meanwhile; ``node``
        >= 0 puts ``(node N)`` after ``vcpus`` in the config; ``step(n)`` is called for the
        device migration steps 1-3 (see image.write_image)."""
        d = self._save_checks(dom, "migrate" if migrating else "save")
        with d.op_lock:
            domid = d.domid
            if domid is None:
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
            try:
                stats = write_image(self.hv, record, domid, fileobj, live=live,
                                    progress=op.update, step=step)
            except BaseException as e:
                log.error("Save failed on domain %s (%s) - resuming.", name, domid)
                if migrating:
                    self._rename_quietly(d, name)
                try:
                    self.hv.unpause(domid)
                except HypervisorError:
                    log.exception("Resuming domain %s (%s) failed", name, domid)
                if isinstance(e, (XendError, KeyboardInterrupt, SystemExit)):
                    raise
                if isinstance(e, HypervisorError):
                    raise XendError(e.message) from e
                raise XendError(str(e) or e.__class__.__name__) from e
            finally:
                op.finish()
            if keep_running:
                self.hv.unpause(domid)
                log.info("Domain %s (%d) checkpointed.", name, domid)
            else:
                if migrating:
                    self._rename_quietly(d, name)
                self._destroy(d)
                log.info("Domain %s (%d) saved.", name, domid)
        return stats

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
            d = self.restore_from_stream(f, relocating=False, paused=bool_arg(paused))
        return self._record(d, full=True)

    def restore_from_stream(self, fileobj: BinaryIO, relocating: bool = False,
                            paused: bool = False, *,
                            managed_dom: Optional[Domain] = None) -> Domain:
        """Build a domain from the image on ``fileobj`` and return it (unpaused unless
        ``paused``). A relocating restore skips the duplicate name/uuid check. On failure
        nothing is left: the half-built domain is destroyed. XendErrors keep their message;
        anything else becomes ``Restore failed``."""
        try:
            return self._restore(fileobj, relocating, paused, managed_dom)
        except XendError:
            log.exception("Restore failed")
            raise
        except Exception:  # noqa: BLE001
            log.exception("Restore failed")
            raise XendError("Restore failed") from None

    def _restore(self, fileobj: BinaryIO, relocating: bool, paused: bool,
                 managed_dom: Optional[Domain]) -> Domain:
        cfg_sxp, pages = read_image(fileobj)
        cfg = self._parse(cfg_sxp)
        if cfg.nomigrate:
            raise XendError("cannot restore non-migratable domain")
        image_mib, rest = divmod(pages.nr_pages * PAGE_SIZE, 1024 * 1024)
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
            dom = Domain(self.hv, cfg, managed=target is not None)
            op = self.tracker.start("restore", cfg.name, cfg.uuid)
            try:
                with dom.op_lock:
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
        return dom

    def _load_pages(self, domid: int, pages, op) -> None:
        have = self.hv.nr_pages(domid)
        if pages.nr_pages != have:
            raise XendError("Restore failed: the image holds %d pages but the domain has %d"
                            % (pages.nr_pages, have))
        total = have * (PAGE_SIZE + 8)

        def counted() -> Iterator[Tuple[int, bytes]]:
            for n, item in enumerate(pages, 1):
                if n % 256 == 0:
                    op.update(pages.bytes, max(total, pages.bytes))
                yield item

        self.hv.write_pages(domid, counted())
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
        path = self.store.checkpoint_path(d.uuid)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", dir=os.path.dirname(path))
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s" % (path, ex.strerror)) \
                from None
        try:
            with os.fdopen(fd, "wb") as f:
                self.save_to_stream(d, f, live=False, keep_running=False, operation="suspend")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as ex:
            raise XendError("can't write guest state file %s: %s" % (path, ex.strerror)) \
                from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

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
                                         managed_dom=d)
            try:
                os.unlink(chkpath)
            except OSError:
                raise XendError("Failed to delete checkpoint file") from None
        except Exception as ex:  # noqa: BLE001 - the original wrapped every failure
            log.exception("Exception occurred when resuming")
            raise XendError("Error occurred when resuming: %s" % ex) from None
