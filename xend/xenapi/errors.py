"""Xen-API failures: an ErrorDescription (``[CODE, param, ...]``, all strings), and the one
place where xend's own errors become them.

Codes (datamodel §Error Codes): HANDLE_INVALID(class, handle), INTERNAL_ERROR(message),
MESSAGE_METHOD_UNKNOWN(method), MESSAGE_PARAMETER_COUNT_MISMATCH(method, expected,
received), OPERATION_NOT_ALLOWED, PERMISSION_DENIED, SESSION_AUTHENTICATION_FAILED,
SESSION_INVALID(handle), SESSION_NOT_REGISTERED(handle), VALUE_NOT_SUPPORTED(field, value,
reason), VM_BAD_POWER_STATE(vm, expected, actual), SECURITY_ERROR(xserr, message).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, List, Optional

from xend import errors as xend_errors

log = logging.getLogger("xend.XendAPI")

HANDLE_INVALID = "HANDLE_INVALID"
INTERNAL_ERROR = "INTERNAL_ERROR"
MESSAGE_METHOD_UNKNOWN = "MESSAGE_METHOD_UNKNOWN"
MESSAGE_PARAMETER_COUNT_MISMATCH = "MESSAGE_PARAMETER_COUNT_MISMATCH"
OPERATION_NOT_ALLOWED = "OPERATION_NOT_ALLOWED"
PERMISSION_DENIED = "PERMISSION_DENIED"
SESSION_AUTHENTICATION_FAILED = "SESSION_AUTHENTICATION_FAILED"
SESSION_INVALID = "SESSION_INVALID"
SESSION_NOT_REGISTERED = "SESSION_NOT_REGISTERED"
VALUE_NOT_SUPPORTED = "VALUE_NOT_SUPPORTED"
VM_BAD_POWER_STATE = "VM_BAD_POWER_STATE"
DEVICE_ALREADY_ATTACHED = "DEVICE_ALREADY_ATTACHED"
DEVICE_ALREADY_DETACHED = "DEVICE_ALREADY_DETACHED"
SECURITY_ERROR = "SECURITY_ERROR"


class XenAPIError(Exception):
    """A failure to report as ``{'Status': 'Failure', 'ErrorDescription': [...]}``."""

    def __init__(self, code: str, *params: Any):
        self.description: List[str] = [code] + [_text(p) for p in params]
        super().__init__(str(self.description))

    @property
    def code(self) -> str:
        return self.description[0]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def handle_invalid(cls: str, ref: Any) -> XenAPIError:
    return XenAPIError(HANDLE_INVALID, cls, ref)


def bad_value(field: str, value: Any, reason: str) -> XenAPIError:
    return XenAPIError(VALUE_NOT_SUPPORTED, field, value, reason)


def bad_power_state(ref: str, expected: str, actual: str) -> XenAPIError:
    return XenAPIError(VM_BAD_POWER_STATE, ref, expected, actual)


@contextlib.contextmanager
def from_xend(cls: str = "VM", ref: Optional[str] = None, field: Optional[str] = None,
              value: Any = None) -> Iterator[None]:
    """xend's errors inside a call, as Xen-API failures: an unknown domain is HANDLE_INVALID;
    a bad value given for ``field`` is VALUE_NOT_SUPPORTED(field, value, message); a domain in
    the wrong state is VM_BAD_POWER_STATE (the expected state unknown here: callers check the
    state first and raise their own); any other refusal is INTERNAL_ERROR(message), the
    message being the one the legacy interface gives."""
    try:
        yield
    except XenAPIError:
        raise
    except xend_errors.XendInvalidDomain:
        raise handle_invalid(cls, ref) from None
    except xend_errors.XendConfigError as e:
        if field is not None:
            raise bad_value(field, value, e.message) from None
        raise XenAPIError(INTERNAL_ERROR, e.message) from None
    except xend_errors.VMBadState as e:
        raise XenAPIError(VM_BAD_POWER_STATE, ref or "", "", e.message) from None
    except xend_errors.XendError as e:
        if field is not None and isinstance(e, xend_errors.VmError):
            raise bad_value(field, value, e.message) from None
        raise XenAPIError(INTERNAL_ERROR, e.message) from None
