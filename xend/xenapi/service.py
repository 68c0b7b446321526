"""The whole Xen-API of one xend: its classes over the node's domain registry, sessions,
events and tasks, and the dispatcher every Xen-API listener uses.

One ``XenAPIService`` per running xend (``Node.xenapi_service``): sessions, events and tasks
outlive a reload of the listeners. The method table is built once, explicitly, from the
classes (nothing is found by ``dir()``); ``Async.<name>`` exists for the messages each class
lists as asynchronous.

Dispatch of ``<class>.<message>(session, args...)``:

* ``session.login_with_password(uname, pwd[, version, originator])`` needs no session; the
  listener's authenticator checks the credentials (SESSION_AUTHENTICATION_FAILED);
* every other Xen-API call needs a session of the same listener (SESSION_INVALID), the
  right number of arguments (MESSAGE_PARAMETER_COUNT_MISMATCH), a known name
  (MESSAGE_METHOD_UNKNOWN);
* results are ``{Status, Value}`` / ``{Status, ErrorDescription}`` structs, never faults;
* a listener without authentication also answers the legacy ``xend.*`` methods (as the
  original's Xen-API listeners did) with the legacy interface's faults; one with ``pam``
  does not, since they take no password.
"""
from __future__ import annotations

import logging
import os
import threading
import uuid as uuidlib
import xmlrpc.client
from typing import Any, Callable, Dict, List, Optional, Tuple
from xmlrpc.server import SimpleXMLRPCDispatcher

from xend.domains import config as cfgmod
from xend.domains.states import HALTED

from . import records as rec
from . import wire
from .devices import SR, VBD, VDI, VIF, Console, Network
from .errors import (INTERNAL_ERROR, MESSAGE_METHOD_UNKNOWN, MESSAGE_PARAMETER_COUNT_MISMATCH,
                     OPERATION_NOT_ALLOWED, SESSION_AUTHENTICATION_FAILED, XenAPIError,
                     bad_value, from_xend, handle_invalid)
from .events import EventBus
from .host import Host, HostCpu, HostMetrics, Pool
from .metrics import VMGuestMetrics, VMMetrics
from .objects import ApiClass, Call, Record, arity
from .sessions import Session, Sessions
from .store import ApiStore, TooMany
from .tasks import Tasks
from .vm import VM

log = logging.getLogger("xend.XendAPI")

MAX_TRANSIENT = 256         # VMs made with other_config transient and not started yet


# -- the classes of the session, event and task machinery -------------------------------------
class SessionClass(ApiClass):
    name = "session"
    fields = ("uuid", "this_host", "this_user", "last_active")
    messages = ("logout",)

    def refs(self) -> List[str]:
        return [s.ref for s in self.api.sessions.all()]

    def record(self, ref: str) -> Record:
        s = self.api.sessions.find(ref)
        if s is None:
            raise self.invalid(ref)
        return {"uuid": s.ref, "this_host": self.api.host_ref, "this_user": s.user,
                "last_active": int(s.last_active)}

    def logout(self, call: Call) -> None:
        self.api.sessions.logout(call.session.ref)


class EventClass(ApiClass):
    name = "event"
    messages = ("register", "unregister", "next")

    def refs(self) -> List[str]:
        return []

    def record(self, ref: str) -> Record:
        raise self.invalid(ref)

    def methods(self) -> Dict[str, Callable]:
        return {f"event.{m}": getattr(self, m) for m in self.messages}

    def register(self, call: Call, classes: Any) -> None:
        self.api.events.register(call.session.ref, wire.as_list(classes))

    def unregister(self, call: Call, classes: Any) -> None:
        self.api.events.unregister(call.session.ref, wire.as_list(classes))

    def next(self, call: Call) -> List[Dict[str, Any]]:
        return self.api.events.next(call.session.ref)


class TaskClass(ApiClass):
    name = "task"
    fields = ("uuid", "name_label", "name_description", "status", "session", "progress",
              "type", "result", "error_info", "allowed_operations", "created", "finished")
    messages = ("cancel", "destroy")

    def refs(self) -> List[str]:
        return self.api.tasks.refs()

    def record(self, ref: str) -> Record:
        task = self.api.tasks.get(ref)
        if task is None:
            raise self.invalid(ref)
        return task.record()

    def cancel(self, call: Call, ref: Any) -> None:
        self.record(self.ref_arg(ref))
        raise XenAPIError(OPERATION_NOT_ALLOWED, "tasks of this xend cannot be cancelled")

    def destroy(self, call: Call, ref: Any) -> None:
        if not self.api.tasks.destroy(self.ref_arg(ref)):
            raise self.invalid(ref)


CLASSES = (SessionClass, EventClass, TaskClass, Host, HostMetrics, HostCpu, Pool, VM,
           VMMetrics, VMGuestMetrics, VBD, VIF, VDI, SR, Network, Console)


class Staging:
    """VMs made by ``VM.create`` with other_config ``transient``: not managed domains, so not
    in the registry until ``VM.start`` creates them (as ``xm create`` does); they belong to the
    session that made them and go with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vms: Dict[str, Tuple[cfgmod.DomainConfig, str]] = {}

    def add(self, cfg: cfgmod.DomainConfig, session: str) -> None:
        with self._lock:
            if len(self._vms) >= MAX_TRANSIENT:
                raise XenAPIError(OPERATION_NOT_ALLOWED,
                                  f"{MAX_TRANSIENT} transient VMs wait to be started already")
            self._vms[cfg.uuid] = (cfg, session)

    def get(self, uuid: str) -> Optional[cfgmod.DomainConfig]:
        with self._lock:
            entry = self._vms.get(uuid)
            return entry[0] if entry else None

    def replace(self, cfg: cfgmod.DomainConfig) -> None:
        with self._lock:
            if cfg.uuid in self._vms:
                self._vms[cfg.uuid] = (cfg, self._vms[cfg.uuid][1])

    def remove(self, uuid: str) -> bool:
        with self._lock:
            return self._vms.pop(uuid, None) is not None

    def all(self) -> List[cfgmod.DomainConfig]:
        with self._lock:
            return [cfg for cfg, _ in self._vms.values()]

    def drop_session(self, session: str) -> None:
        with self._lock:
            for uuid in [u for u, (_, s) in self._vms.items() if s == session]:
                del self._vms[uuid]


class XenAPIService:
    def __init__(self, node: Any):
        self.node = node
        self.store = ApiStore(node.opts["xend-state-path"])
        self.sessions = Sessions()
        self.staging = Staging()
        self.events = EventBus(self._record_of, self.vm_views)
        self.tasks = Tasks(self.events.publish)
        self.sessions.on_end += [lambda s: self.events.drop(s.ref),
                                 lambda s: self.tasks.drop_session(s.ref),
                                 lambda s: self.staging.drop_session(s.ref)]
        self.classes: Dict[str, ApiClass] = {c.name: c(self) for c in CLASSES}
        self.table: Dict[str, Callable] = {}
        self.arity: Dict[str, Tuple[int, int]] = {}
        self.async_names: Dict[str, str] = {}       # Async.X -> X
        for cls in self.classes.values():
            for name, fn in cls.methods().items():
                self.table[name] = fn
                self.arity[name] = arity(fn)
            for name in cls.async_methods():
                self.async_names["Async." + name] = name
        self._device_owner: Dict[Tuple[str, str], str] = {}

    # -- where things are ------------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        return self.node.domains

    @property
    def host_ref(self) -> str:
        return self.store.get("host")["uuid"]

    @property
    def storage_path(self) -> str:
        return self.node.opts["xend-storage-path"]

    def method_names(self) -> List[str]:
        return sorted(list(self.table) + list(self.async_names)
                      + ["session.login_with_password"])

    # -- VMs: the registry's domains and the transient ones -------------------------------------
    def vm_views(self) -> List[rec.VmView]:
        views = [rec.VmView(d.config, d.domid, info if d.domid is not None else None, state,
                            d.managed, d.start_time)
                 for d, info, state in self.registry.snapshot()]
        views += [rec.VmView(cfg, None, None, HALTED, False) for cfg in self.staging.all()]
        return views

    def vm_view_or_none(self, ref: str) -> Optional[rec.VmView]:
        if not isinstance(ref, str) or not ref:
            return None
        staged = self.staging.get(ref)
        if staged is not None:
            return rec.VmView(staged, None, None, HALTED, False)
        try:
            uuid = cfgmod.normalise_uuid(ref)
        except Exception:  # noqa: BLE001 - not a uuid: no VM has that ref
            return None
        try:
            d, info, state = self.registry.entry(uuid)
        except Exception:  # noqa: BLE001 - XendInvalidDomain
            return None
        if d.uuid != uuid:          # a domain *named* like the uuid: look by uuid alone
            return next((v for v in self.vm_views() if v.uuid == uuid), None)
        return rec.VmView(d.config, d.domid, info if d.domid is not None else None, state,
                          d.managed, d.start_time)

    def vm_view(self, ref: Any) -> rec.VmView:
        v = self.vm_view_or_none(ref) if isinstance(ref, str) else None
        if v is None:
            raise handle_invalid("VM", ref)
        return v

    def change_config(self, ref: str, change: Callable, field: str, value: Any) -> None:
        """A new configuration for VM ``ref`` (effective at its next start), checked as the
        registry checks any; VALUE_NOT_SUPPORTED(field, value, why) when it is refused."""
        staged = self.staging.get(ref)
        if staged is not None:
            try:
                new = cfgmod.parse_config(cfgmod.config_sxp(change(staged)))
            except cfgmod.XendConfigError as e:
                raise bad_value(field, value, e.message) from None
            except Exception as e:  # noqa: BLE001 - VmError for a bad name and the like
                raise bad_value(field, value, str(e)) from None
            self.staging.replace(new)
        else:
            with from_xend("VM", ref, field, value):
                self.registry.update_config(ref, change)
        self.events.poke()

    def create_transient(self, sxp: list, session: Session) -> None:
        try:
            cfg = cfgmod.parse_config(sxp)
        except Exception as e:  # noqa: BLE001 - XendConfigError, VmError
            raise bad_value("VM", "record", getattr(e, "message", str(e))) from None
        other = rec.extra_map(cfg, "other_config")
        other.pop("transient", None)        # how it was made, not part of it
        cfg = rec.with_extra(cfg, "other_config", other)
        self.staging.add(cfg, session.ref)
        self.events.poke()

    def start_transient(self, uuid: str, paused: bool) -> None:
        cfg = self.staging.get(uuid)
        if cfg is None:
            raise handle_invalid("VM", uuid)
        reg = self.registry
        with from_xend("VM", uuid):
            reg.domain_create(cfgmod.config_sxp(cfg))
        self.staging.remove(uuid)
        try:
            with from_xend("VM", uuid):
                reg.domain_waitForDevices(uuid)
                if not paused:
                    reg.domain_unpause(uuid)
        except XenAPIError:
            try:
                reg.domain_destroy(uuid)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                log.exception("cleaning up transient VM %s", uuid)
            raise
        finally:
            self.events.poke()

    def find_device(self, group: str, ref: str):
        """(VmView, DeviceView) of VBD/VIF ``ref``; None if there is none."""
        owner = self._device_owner.get((group, ref))
        if owner is not None:
            v = self.vm_view_or_none(owner)
            if v is not None:
                for d in rec.devices_of(v.cfg, group):
                    if d.uuid == ref:
                        return v, d
        for v in self.vm_views():
            for d in rec.devices_of(v.cfg, group):
                if len(self._device_owner) > 65536:
                    self._device_owner.clear()
                self._device_owner[(group, d.uuid)] = v.uuid
                if d.uuid == ref:
                    found = (v, d)
                    return found
        return None

    # -- storage and networks ----------------------------------------------------------------------
    def vdi_location(self, ref: str) -> Optional[str]:
        try:
            return self.classes["VDI"].record(ref)["location"]
        except XenAPIError:
            return None

    def network_bridge(self, ref: str) -> Optional[str]:
        try:
            return self.classes["network"].record(ref)["bridge"]
        except XenAPIError:
            return None

    def default_bridge(self) -> str:
        bridges = self.host_bridges()
        return bridges[0] if bridges else rec.DEFAULT_BRIDGE

    @staticmethod
    def host_bridges() -> List[str]:
        try:
            names = sorted(os.listdir("/sys/class/net"))
        except OSError:
            return []
        return [n for n in names if os.path.isdir(f"/sys/class/net/{n}/bridge")]

    def new_image_file(self, size: int) -> str:
        """A sparse image file of ``size`` bytes in xend-storage-path (for VDI.create)."""
        directory = self.storage_path
        path = os.path.join(directory, f"{uuidlib.uuid4()}.img")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError as e:
            raise XenAPIError(INTERNAL_ERROR, f"cannot make {path}: {e.strerror or e}") \
                from None
        return path

    def store_update(self, section: str, change: Callable, key: Optional[str] = None,
                     create: bool = False) -> None:
        try:
            self.store.update(section, change, key=key, create=create)
        except (OSError, TooMany) as e:
            raise XenAPIError(INTERNAL_ERROR, f"cannot keep the change in {self.store.path}: "
                              f"{getattr(e, 'strerror', None) or e}") from None

    def store_remove(self, section: str, key: str) -> bool:
        try:
            return self.store.remove(section, key)
        except OSError as e:
            raise XenAPIError(INTERNAL_ERROR, f"cannot keep the change in {self.store.path}: "
                              f"{e.strerror or e}") from None

    def _record_of(self, cls: str, ref: str) -> Optional[dict]:
        try:
            return self.classes[cls].record(ref)
        except Exception:  # noqa: BLE001 - gone meanwhile
            return None

    # -- calls ------------------------------------------------------------------------------------
    def login(self, params: tuple, listener: str, auth: Any) -> Dict[str, Any]:
        if not 2 <= len(params) <= 4:
            return wire.failure([MESSAGE_PARAMETER_COUNT_MISMATCH,
                                 "session.login_with_password", "2", str(len(params))])
        try:
            user, password = wire.as_str(params[0]), wire.as_str(params[1])
            originator = wire.as_str(params[3]) if len(params) > 3 else ""
        except wire.BadArgument:
            return wire.failure([SESSION_AUTHENTICATION_FAILED, "",
                                 "user name and password must be strings"])
        if not auth.check(user, password):
            log.warning("Xen-API login of %r on %s refused", user, listener)
            return wire.failure([SESSION_AUTHENTICATION_FAILED, user, "Authentication failure"])
        s = self.sessions.login(user, listener, originator)
        log.debug("Xen-API login of %r on %s", user, listener)
        return wire.success(s.ref)

    def call(self, method: str, params: tuple, listener: str) -> Dict[str, Any]:
        """One Xen-API call (not the login) as its result struct."""
        target = self.async_names.get(method, method)
        fn = self.table.get(target)
        if fn is None:
            return wire.failure([MESSAGE_METHOD_UNKNOWN, method])
        least, most = self.arity[target]
        if not 1 + least <= len(params) <= 1 + most:
            return wire.failure([MESSAGE_PARAMETER_COUNT_MISMATCH, method, str(1 + most),
                                 str(len(params))])
        try:
            session = self.sessions.get(params[0], listener)
            call = Call(self, session, listener)
            if target != method:
                result_class = "VM" if target.endswith(".create") and target.startswith("VM") \
                    else target.split(".")[0] if target.endswith(".create") else ""
                return wire.success(self.tasks.start(
                    session.ref, target, lambda: self._invoke(fn, target, call, params[1:]),
                    result_class))
            return wire.success(self._invoke(fn, target, call, params[1:]))
        except XenAPIError as e:
            return wire.failure(e.description)

    def _invoke(self, fn: Callable, method: str, call: Call, args: tuple) -> Any:
        cls = method.split(".", 1)[0]
        first = args[0] if args and isinstance(args[0], str) else None
        try:
            with from_xend(cls, first):
                return fn(call, *args)
        except XenAPIError:
            raise
        except wire.BadArgument as e:
            raise bad_value(method, "argument", str(e)) from None
        except Exception as e:  # noqa: BLE001 - a bug here must not kill the connection
            log.exception("Internal error handling %s", method)
            raise XenAPIError(INTERNAL_ERROR, str(e)) from None


class XenAPIDispatcher(SimpleXMLRPCDispatcher):
    """What one listener answers: the Xen-API (with its authenticator), and the legacy
    ``xend.*`` methods when ``legacy`` is given."""

    def __init__(self, api: XenAPIService, listener: str, auth: Any, legacy: Any = None):
        super().__init__(allow_none=True, encoding="utf-8", use_builtin_types=False)
        self.api = api
        self.listener = listener
        self.auth = auth
        self.legacy = legacy

    def system_listMethods(self) -> List[str]:
        names = self.api.method_names()
        if self.legacy is not None:
            names += [n for n in self.legacy.system_listMethods() if n not in names]
        return sorted(set(names) | {"system.listMethods"})

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None) -> bytes:
        """Xen-API calls are answered with ``wire.dumps_result``; the legacy and introspection
        calls, and requests that do not parse, as the legacy interface answers them."""
        try:
            params, method = xmlrpc.client.loads(data, use_builtin_types=False)
        except Exception:  # noqa: BLE001 - not XML-RPC: the standard library's fault
            return super()._marshaled_dispatch(data, dispatch_method, path)
        if not isinstance(method, str) or method.startswith(("xend.", "system.")):
            return super()._marshaled_dispatch(data, dispatch_method, path)
        try:
            result = self._dispatch(method, params)
            return wire.dumps_result(result)
        except Exception as e:  # noqa: BLE001 - never a broken reply
            log.exception("Internal error handling %s", method)
            return wire.dumps_result(wire.failure([INTERNAL_ERROR, str(e)]))

    def _dispatch(self, method: str, params: tuple) -> Any:
        if method == "session.login_with_password":
            return self.api.login(params, self.listener, self.auth)
        if method == "system.listMethods":
            return self.system_listMethods()
        if self.legacy is not None and (method.startswith("xend.")
                                        or method.startswith("system.")):
            return self.legacy._dispatch(method, params)
        return self.api.call(method, params, self.listener)
