"""Exception types of xend and their XML-RPC fault codes (reference section 5.2).

Domain code raises these; the protocol adapters (XML-RPC, HTTP/SXP, relocation) map them to
wire errors in one place each. Nothing here imports a protocol module.
"""
from __future__ import annotations

ERROR_INTERNAL = 1
ERROR_GENERIC = 2
ERROR_INVALID_DOMAIN = 3


class XendError(Exception):
    """A failure a user can act on; fault code 2, the message is the faultString."""

    fault_code = ERROR_GENERIC

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class XendInvalidDomain(XendError):
    """Unknown domain; fault code 3 with the identifier as given as faultString."""

    fault_code = ERROR_INVALID_DOMAIN

    def __init__(self, dom: object):
        super().__init__(str(dom))
        self.dom = dom


class VmError(XendError):
    """A domain operation failed."""


class VMBadState(VmError):
    """The domain is not in a state that allows the operation."""


class XendConfigError(XendError):
    """A bad domain configuration. ``str()`` carries the original's log prefix; the fault does not."""

    def __str__(self) -> str:
        return "Invalid Configuration: " + self.message


class ConfigError(Exception):
    """A bad xend-config.sxp: every problem found, each as 'FILE:LINE: option NAME: reason'."""

    def __init__(self, problems: list):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class HypervisorError(Exception):
    """A hypervisor call failed; ``errno`` as the hypervisor reported it."""

    def __init__(self, errno: int, message: str):
        super().__init__(f"({errno}, '{message}')")
        self.errno = errno
        self.message = message


def fault_code(exc: BaseException) -> int:
    return getattr(exc, "fault_code", ERROR_INTERNAL)
