"""The resource tree of the legacy HTTP/SXP server (reference section 6.2).

``/``, ``/xend/``, ``/xend/node`` (+ ``dmesg``, ``log``), ``/xend/domain`` (+ ``<dom>``) and
``/xend/vnet``. A resource answers GET with a ``Response`` and POST through its table of ops;
each op names the registry method it calls and its typed form fields, in the registry's
argument order (section 5.3). Resources raise; ``xend.server.http`` maps what they raise to
statuses and bodies in one place. No wire format is written here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from xend import errors, sxp
from xend.server.http_forms import Args, Field, convert, opt

# -- what resources return and raise ----------------------------------------------------------


@dataclass
class Request:
    method: str                    # GET, HEAD or POST
    segments: List[str]            # decoded path elements, empty ones dropped
    path: str                      # the path as sent, without the query
    args: Args
    base_url: str                  # "http://host[:port]"
    op: Optional[str] = None       # the POST op being performed, once known
    op_error_status: Optional[int] = None  # threaded ops: status kept when they fail

    @property
    def url(self) -> str:
        return self.base_url + quote("/" + "/".join(self.segments))


@dataclass
class Response:
    """``kind``: ``sxp`` (value written with sxp.to_string), ``ls`` (a directory listing),
    ``text`` (text/plain), ``error`` (the message of a failed request: ``(xend.err ...)``)
    or ``empty``."""
    kind: str
    value: Any = None
    status: int = 200
    headers: List[Tuple[str, str]] = field(default_factory=list)


def sxp_response(value: Any, status: int = 200, **kw) -> Response:
    return Response("empty" if value is None else "sxp", value, status, **kw)


class HttpError(Exception):
    """Ends a request with ``status`` and a text/plain body ``message``."""

    status = 500
    reason = ""          # the standard phrase of ``status`` unless set

    def __init__(self, message: str = "", headers: Sequence[Tuple[str, str]] = ()):
        super().__init__(message)
        self.message = message
        self.headers = list(headers)


class BadRequest(HttpError):
    status = 400


class NotFound(HttpError):
    status = 404


class InvalidRequest(HttpError):
    """POST without exactly one ``op``."""
    status = 406
    reason = "Invalid request"


class LengthRequired(HttpError):
    status = 411


class BodyTooLarge(HttpError):
    status = 413


class OpNotImplemented(HttpError):
    status = 501

    def __init__(self, op: str):
        super().__init__(f"Operation not implemented: {op}")


# -- ops --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    method: Optional[str]              # registry/node method; None: always "Unsupported"
    fields: Tuple[Field, ...] = ()
    accepted: bool = False             # answers 202 Accepted, Location: <url>/..
    error_status: Optional[int] = None  # threaded op: status kept when it fails


def F(name: str, type: str = "str") -> Field:  # noqa: A002,N802 - a required field
    return Field(name, type)


DOMAIN_OPS: Dict[str, Op] = {
    "unpause": Op("domain_unpause"),
    "pause": Op("domain_pause"),
    "rename": Op("domain_setName", (F("name"),), accepted=True),
    "shutdown": Op("domain_shutdown", (F("reason"),), accepted=True),
    "delete": Op("domain_delete", accepted=True),
    "start": Op("domain_start", (opt("paused", "bool", False),), accepted=True),
    "sysrq": Op("domain_send_sysrq", (F("key", "key"),), accepted=True),
    "wait_for_devices": Op("domain_waitForDevices", accepted=True),
    "destroy": Op("domain_destroy", accepted=True),
    "reset": Op("domain_reset", accepted=True),
    "save": Op("domain_save", (F("file"),), accepted=True, error_status=202),
    "dump": Op("domain_dump", (opt("file"), opt("live", "bool", False),
                               opt("crash", "bool", False), opt("reset", "bool", False)),
               accepted=True, error_status=202),
    "migrate": Op("domain_migrate", (F("destination"), opt("live", "bool", False),
                                     opt("port", "int", 0), opt("node", "int", -1),
                                     opt("ssl", "bool", None),
                                     opt("change_home_server", "bool", False)),
                  error_status=200),
    "pincpu": Op("domain_pincpu", (F("vcpu"), F("cpumap"))),
    "cpu_sedf_get": Op("domain_cpu_sedf_get"),
    "cpu_sedf_set": Op("domain_cpu_sedf_set", tuple(F(n, "int") for n in
                                                   ("period", "slice", "latency", "extratime",
                                                    "weight"))),
    "domain_sched_credit_get": Op("domain_sched_credit_get"),
    "domain_sched_credit_set": Op("domain_sched_credit_set", (opt("weight", "int"),
                                                              opt("cap", "int"))),
    "domain_sched_credit2_get": Op("domain_sched_credit2_get"),
    "domain_sched_credit2_set": Op("domain_sched_credit2_set", (opt("weight", "int"),)),
    "maxmem_set": Op("domain_maxmem_set", (F("memory", "int"),)),
    "mem_target_set": Op("domain_setMemoryTarget", (F("target", "int"),)),
    "set_vcpus": Op("domain_setVCpuCount", (F("vcpus", "int"),)),
    "vcpuinfo": Op("domain_getVCPUInfo"),
    "devices": Op("domain_getDeviceSxprs", (F("type"),)),
    "device_create": Op("domain_device_create", (F("config", "sxpr"),)),
    "device_destroy": Op("domain_destroyDevice", (F("type"), F("dev"),
                                                  opt("force", "bool", False),
                                                  opt("rm_cfg", "bool", False))),
    "device_configure": Op("domain_device_configure", (F("config", "sxpr"), opt("dev"))),
    "vif_limit_set": Op("domain_vif_limit_set", (F("vif", "int"), F("credit", "int"),
                                                 F("period", "int"))),
    "configure": Op(None),
}

DOMAIN_DIR_OPS: Dict[str, Op] = {
    "create": Op("domain_create", (F("config", "sxpr"),)),
    "new": Op("domain_new", (F("config", "sxpr"),)),
    "restore": Op("domain_restore", (F("file"), opt("paused", "bool", False)), error_status=200),
    "list": Op("domains"),
}


def call(target: Any, op_name: str, op: Op, args: Args, *lead: Any) -> Any:
    if op.method is None:
        raise errors.XendError("Unsupported")
    fn = getattr(target, op.method, None)
    if fn is None:
        raise OpNotImplemented(op_name)
    return fn(*lead, *convert(op.fields, args))


# -- resources --------------------------------------------------------------------------------


class Resource:
    ops: Dict[str, Op] = {}

    def child(self, name: str) -> "Resource":
        raise NotFound(f"Not found: {name}")

    def get(self, req: Request) -> Response:
        raise NotFound(f"Not found: {req.path}")

    def post(self, req: Request) -> Response:
        values = req.args.get("op") or []
        if len(values) != 1:
            raise InvalidRequest("")
        name = values[0]
        op = self.ops.get(name)
        if op is None:
            raise OpNotImplemented(name)
        req.op = name
        req.op_error_status = op.error_status
        return self.perform(name, op, req)

    def perform(self, name: str, op: Op, req: Request) -> Response:
        raise OpNotImplemented(name)


class Directory(Resource):
    def __init__(self, children: Dict[str, Resource], hidden: Sequence[str] = ()):
        self.children = children
        self.hidden = set(hidden)

    def child(self, name: str) -> Resource:
        try:
            return self.children[name]
        except KeyError:
            raise NotFound(f"Not found: {name}") from None

    def get(self, req: Request) -> Response:
        return Response("ls", [n for n in self.children if n not in self.hidden])


class NodeResource(Directory):
    ops = {"shutdown": Op("noop"), "reboot": Op("noop")}

    def __init__(self, node):
        super().__init__({"dmesg": DmesgResource(node), "log": LogResource(node)})
        self.node = node

    def get(self, req: Request) -> Response:
        return sxp_response(["node", *self.node.info()])

    def perform(self, name: str, op: Op, req: Request) -> Response:
        return sxp_response(0)   # shutdown/reboot of the host were never done by xend


class DmesgResource(Resource):
    ops = {"clear": Op("dmesg_clear")}

    def __init__(self, node):
        self.node = node

    def get(self, req: Request) -> Response:
        return Response("text", self.node.dmesg_info())

    def perform(self, name: str, op: Op, req: Request) -> Response:
        return Response("text", call(self.node, name, op, req.args))


class LogResource(Resource):
    def __init__(self, node):
        self.node = node

    def get(self, req: Request) -> Response:
        return Response("text", self.node.log_text())


class VnetDirectory(Resource):
    """Vnets were never part of this xend: an empty list."""

    def get(self, req: Request) -> Response:
        return sxp_response([])


class DomainDirectory(Resource):
    ops = DOMAIN_DIR_OPS

    def __init__(self, node):
        self.node = node

    @property
    def registry(self):
        return self.node.domains

    def child(self, name: str) -> Resource:
        self.registry.domain(name, False)   # XendInvalidDomain -> 404 with the fault text
        return DomainResource(self.node, name)

    def get(self, req: Request) -> Response:
        detail = "detail" in req.args
        state = req.args.get("state")
        if state:
            return sxp_response(self.registry.domains_with_state(detail, state[0], detail))
        return sxp_response(self.registry.domains(detail, detail))

    def perform(self, name: str, op: Op, req: Request) -> Response:
        if name == "list":
            return sxp_response(self.registry.domains(True, True))
        result = call(self.registry, name, op, req.args)
        if name in ("create", "restore") and sxp.elementp(result, "domain"):
            dom = sxp.child_value(result, "name", "")
            return sxp_response(result, 201,
                                headers=[("Location", f"{req.url}/{quote(str(dom), safe='')}")])
        return sxp_response(result)


class DomainResource(Resource):
    ops = DOMAIN_OPS

    def __init__(self, node, dom: str):
        self.node = node
        self.dom = dom

    def get(self, req: Request) -> Response:
        if (req.args.get("op") or [None])[0] == "vcpuinfo":
            req.op = "vcpuinfo"
            return self.perform("vcpuinfo", DOMAIN_OPS["vcpuinfo"], req)
        return sxp_response(self.node.domains.domain(self.dom, True))

    def perform(self, name: str, op: Op, req: Request) -> Response:
        result = call(self.node.domains, name, op, req.args, self.dom)
        if isinstance(result, dict):
            result = [[str(k), v] for k, v in result.items()]
        if op.accepted:
            return sxp_response(result, 202, headers=[("Location", req.url + "/..")])
        return sxp_response(result)


def build_tree(node) -> Resource:
    xend = Directory({"node": NodeResource(node), "domain": DomainDirectory(node),
                      "vnet": VnetDirectory()})
    return Directory({"xend": xend}, hidden=("xend",))


def resolve(root: Resource, segments: Sequence[str]) -> Resource:
    res = root
    for seg in segments:
        res = res.child(seg)
    return res
