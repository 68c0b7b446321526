"""The machinery every Xen-API class shares: refs, records, generated field getters, setters
and messages, and the call context.

A class is an ``ApiClass``: it lists its refs and builds a record for one of them; from the
record's keys come ``get_<field>`` for every field, with ``get_all``, ``get_all_records``,
``get_record``, ``get_by_uuid``, ``get_uuid`` (and ``get_by_name_label`` for named classes).
Setters are methods named ``set_<field>``; maps also get ``add_to_<field>`` and
``remove_from_<field>`` from their setter. Other messages are the methods listed in
``messages``; those in ``async_messages`` also exist as ``Async.<class>.<message>``.

Refs are the objects' uuids (as the original xend's were); ``OpaqueRef:NULL`` is no object.
Every method takes the call context first, then the API's own arguments.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Tuple

from . import wire
from .errors import handle_invalid

#: field getters are generated from the record of this (empty) object; see ``fields``
Record = Dict[str, Any]


@dataclass
class Call:
    """Who calls: the session (None for login), the listener's name, the whole API."""
    api: Any
    session: Any
    listener: str


class ApiClass:
    name = ""
    #: the record's fields, in the datamodel's order (drives the generated getters)
    fields: Tuple[str, ...] = ()
    #: fields that are (string -> string) maps with a setter: add_to_ / remove_from_ too
    map_fields: Tuple[str, ...] = ()
    messages: Tuple[str, ...] = ()
    async_messages: Tuple[str, ...] = ()

    def __init__(self, api: Any):
        self.api = api

    # -- to be provided ----------------------------------------------------------------------
    def refs(self) -> List[str]:
        raise NotImplementedError

    def record(self, ref: str) -> Record:
        """The record of ``ref``; HANDLE_INVALID if there is no such object."""
        raise NotImplementedError

    def records(self) -> Dict[str, Record]:
        out = {}
        for ref in self.refs():
            try:
                out[ref] = self.record(ref)
            except Exception:  # noqa: BLE001 - gone meanwhile: not listed
                continue
        return out

    # -- generic messages ----------------------------------------------------------------------
    def invalid(self, ref: Any):
        return handle_invalid(self.name, ref)

    def ref_arg(self, ref: Any) -> str:
        if not isinstance(ref, str):
            raise self.invalid(ref)
        return ref

    def get_all(self, call: Call) -> List[str]:
        return self.refs()

    def get_all_records(self, call: Call) -> Dict[str, Record]:
        return self.records()

    def get_record(self, call: Call, ref: Any) -> Record:
        return self.record(self.ref_arg(ref))

    def get_by_uuid(self, call: Call, uuid: Any) -> str:
        uuid = self.ref_arg(uuid)
        self.record(uuid)                   # HANDLE_INVALID if absent
        return uuid

    def get_by_name_label(self, call: Call, label: Any) -> List[str]:
        label = wire.as_str(label)
        return [ref for ref, rec in self.records().items() if rec.get("name_label") == label]

    def field_getter(self, field: str) -> Callable:
        def getter(call: Call, ref: Any) -> Any:
            return self.record(self.ref_arg(ref))[field]
        getter.__name__ = "get_" + field
        return getter

    def map_adder(self, field: str) -> Callable:
        setter = getattr(self, "set_" + field)

        def add(call: Call, ref: Any, key: Any, value: Any) -> None:
            current = dict(self.record(self.ref_arg(ref))[field])
            current[wire.as_str(key)] = wire.as_str(value)
            setter(call, ref, current)
        return add

    def map_remover(self, field: str) -> Callable:
        setter = getattr(self, "set_" + field)

        def remove(call: Call, ref: Any, key: Any) -> None:
            current = dict(self.record(self.ref_arg(ref))[field])
            if current.pop(wire.as_str(key), None) is not None:
                setter(call, ref, current)
        return remove

    # -- the method table ----------------------------------------------------------------------
    def methods(self) -> Dict[str, Callable]:
        """``<class>.<message>`` -> callable(call, *args), explicitly: nothing by ``dir()``."""
        out: Dict[str, Callable] = {}
        for msg in ("get_all", "get_all_records", "get_record", "get_by_uuid"):
            out[msg] = getattr(self, msg)
        if "name_label" in self.fields:
            out["get_by_name_label"] = self.get_by_name_label
        for field in self.fields:
            out["get_" + field] = self.field_getter(field)
            setter = getattr(self, "set_" + field, None)
            if setter is not None:
                out["set_" + field] = setter
                if field in self.map_fields:
                    out["add_to_" + field] = self.map_adder(field)
                    out["remove_from_" + field] = self.map_remover(field)
        for msg in self.messages:
            out[msg] = getattr(self, msg)
        return {f"{self.name}.{k}": v for k, v in out.items()}

    def async_methods(self) -> Iterable[str]:
        return (f"{self.name}.{m}" for m in self.async_messages)


def arity(fn: Callable) -> Tuple[int, int]:
    """(least, most) API arguments of a method (its parameters after the call context)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return (len([p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD
                     and p.default is p.empty]), 1 << 30)
    least = len([p for p in params if p.default is p.empty])
    return least, len(params)
