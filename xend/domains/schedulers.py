"""The credit2 and sedf scheduler calls of ``xm sched-credit2`` / ``xm sched-sedf`` (reference
§5.3: ``sched_credit2_get``/``_set``, ``cpu_sedf_get``/``_set``); part of DomainRegistry.

Xen 4.17 runs credit2 by default; its weight is the domain's ``cpu_weight`` (kept in the
configuration, shared with the credit scheduler). sedf left Xen in 4.6: its calls say so.
"""
from __future__ import annotations

from typing import Any, Dict

from xend.errors import XendError

from .operations import hv_errors, int_arg
from .states import PAUSED, RUNNING

SEDF_GONE = ("the sedf scheduler is not in this Xen (Xen 4.6 removed it; Xen %s runs the %s "
             "scheduler: xm sched-credit2 or xm sched-credit)")


class SchedulersMixin:
    def domain_sched_credit2_get(self, dom: Any) -> Dict[str, int]:
        d = self._get(dom)
        if self._state(d) in (RUNNING, PAUSED):
            with hv_errors():
                return {"weight": self.hv.sched_credit2_get(d.domid)}
        return {"weight": d.config.cpu_weight}

    def domain_sched_credit2_set(self, dom: Any, weight: Any = None) -> int:
        d = self._get(dom)
        if weight is None:
            return 0
        weight = int_arg("weight", weight)
        if not 1 <= weight <= 65535:
            raise XendError("Cpu weight out of range, valid values are within range from 1 "
                            "to 65535")
        with self._persisting(d, d.config.replace(cpu_weight=weight)):
            if self._state(d) in (RUNNING, PAUSED):
                with hv_errors():
                    self.hv.sched_credit2_set(d.domid, weight)
        return 0

    def _sedf_gone(self) -> XendError:
        ver = self.hv.version()
        return XendError(SEDF_GONE % ("%d.%d" % (ver.major, ver.minor), ver.scheduler))

    def domain_cpu_sedf_get(self, dom: Any) -> None:
        self._get(dom)
        raise self._sedf_gone()

    def domain_cpu_sedf_set(self, dom: Any, *_args: Any) -> None:
        self._get(dom)
        raise self._sedf_gone()
