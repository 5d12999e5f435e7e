"""The typed errors of capkern: one hierarchy under :class:`CapkernError`.

Every error a domain can provoke -- a bad slot, a missing right, a malformed message,
an out-of-contract request, a page that fails its integrity check -- is one of these,
raised in the domain that caused or suffers it.  None of them ever escapes into the
kernel's own task or into another domain.
"""

from __future__ import annotations

__all__ = [
    "BadgeError",
    "CSpaceFull",
    "CallAborted",
    "CapabilityError",
    "CapabilityRevoked",
    "CapkernError",
    "ConfigError",
    "ContractViolation",
    "EmptySlot",
    "Fault",
    "IPCError",
    "InsufficientRights",
    "IntegrityFault",
    "InvalidSlot",
    "KernelShutdown",
    "MalformedMessage",
    "MessageError",
    "MessageTooLarge",
    "NestingTooDeep",
    "NoSuchProcess",
    "OutOfMemory",
    "PageInError",
    "PagerUnavailable",
    "ProcessError",
    "ProtectionFault",
    "QueueFull",
    "QuotaExceeded",
    "ReplyError",
    "ReplyRefused",
    "SegmentationFault",
    "ServerError",
    "SlotOccupied",
    "TooManyCaps",
    "UnencodableBody",
    "WrongObjectType",
]


class CapkernError(Exception):
    """Base of every error capkern raises on purpose."""


# -- capabilities -------------------------------------------------------------------


class CapabilityError(CapkernError):
    """A capability operation was refused (bad slot, missing right, bad badge...)."""


class InvalidSlot(CapabilityError):
    """The slot index is not a slot of the caller's CSpace (forged or out of range)."""


class EmptySlot(CapabilityError):
    """The slot exists but holds no capability (never filled, deleted or revoked)."""


class SlotOccupied(CapabilityError):
    """The destination slot already holds a capability."""


class InsufficientRights(CapabilityError):
    """The capability lacks a right the operation needs."""


class WrongObjectType(CapabilityError):
    """The capability names an object of the wrong kind for the operation."""


class BadgeError(CapabilityError):
    """A badged capability cannot be re-badged, or the badge is out of range."""


class CSpaceFull(CapabilityError):
    """The caller's CSpace has no free slot left."""


class CapabilityRevoked(CapabilityError):
    """The capability a blocked operation went through was revoked or deleted while it
    waited (seL4: removing a capability cancels the IPC blocked on it)."""


# -- IPC ----------------------------------------------------------------------------


class IPCError(CapkernError):
    """A message could not be sent, received or replied to."""


class MessageError(IPCError):
    """The message itself is bad; the kernel refused it at the sender's boundary."""


class MalformedMessage(MessageError):
    """The body bytes are not valid msgpack of an allowed shape."""


class MessageTooLarge(MessageError):
    """The encoded body exceeds the kernel's byte limit."""


class NestingTooDeep(MessageError):
    """The body nests containers deeper than the kernel allows."""


class TooManyCaps(MessageError):
    """More capabilities attached than one message may carry."""


class UnencodableBody(MessageError):
    """The body holds a value msgpack cannot carry (objects never cross domains)."""


class ContractViolation(MessageError):
    """The message (or reply) is outside the endpoint's declared contract."""


class ReplyError(IPCError):
    """There is no caller to reply to (no call received, or the reply cap was used)."""


class CallAborted(IPCError):
    """The server holding our reply capability died or discarded it without replying."""


class ReplyRefused(CallAborted):
    """The server's reply was refused by the kernel (it named the cause) and the server
    did not answer again before it ended, dropped the reply or received again."""


class QueueFull(IPCError):
    """Too many senders are already blocked on this endpoint."""


class ServerError(IPCError):
    """A server answered a call with a typed error reply (see ``reason``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# -- memory faults ------------------------------------------------------------------


class Fault(CapkernError):
    """A memory access could not be completed; delivered to the faulting process."""


class SegmentationFault(Fault):
    """The address is not mapped in the process's address space."""


class ProtectionFault(Fault):
    """The mapping does not allow this kind of access (e.g. a write to read-only)."""


class IntegrityFault(Fault):
    """A page came back from the untrusted side and failed its seal check.

    The page was tampered with, is an old version, or belongs to another place
    (page, process, incarnation or boot).  The frame was not mapped: no wrong data.
    """


class PageInError(Fault):
    """The pager could not supply the page (it failed the request, with ``reason``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"page-in failed: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


class PagerUnavailable(Fault):
    """The pager hung past its deadline, died, or answered out of contract."""


class OutOfMemory(Fault):
    """No frame could be found or freed for this fault."""


# -- processes ----------------------------------------------------------------------


class ProcessError(CapkernError):
    """A process-management request was refused."""


class NoSuchProcess(ProcessError):
    """No live or recorded domain has that pid."""


class QuotaExceeded(CapkernError):
    """A domain asked for more than its quota of a kernel resource; nothing was created."""

    def __init__(self, resource: str, limit: int, used: int, wanted: int = 1,
                 owner: str = "") -> None:
        who = f"{owner!r} " if owner else ""
        super().__init__(f"{who}quota of {resource} exceeded: {used} used + {wanted} "
                         f"asked > limit {limit}")
        self.resource = resource
        self.limit = limit
        self.used = used


class KernelShutdown(CapkernError):
    """The kernel is shutting down or has shut down."""


class ConfigError(CapkernError, ValueError):
    """A boot option or argument is invalid (also a :class:`ValueError`)."""
