"""Notifications: a word of signal bits per object (seL4); signal ORs a badge in, wait
takes the word (kernel side).

A waiter is registered on the capability it waits through, so removing that capability
(delete, revoke, its domain's teardown) fails the wait with
:class:`~capkern.errors.CapabilityRevoked`, as for a blocked endpoint operation.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import outcome
from trio.lowlevel import (
    Abort,
    Task,
    cancel_shielded_checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from . import _ipc
from ._cspace import Cap, KObject
from ._message import Delivered
from .errors import CapabilityRevoked

if TYPE_CHECKING:
    from ._ipc import Party

__all__ = ["Notification", "poll", "signal", "wait"]


class _Waiter:
    """A task blocked in :func:`wait` on a notification through ``cap``."""

    __slots__ = ("cap", "ntfn", "task")

    def __init__(self, task: Task, ntfn: Notification, cap: Cap) -> None:
        self.task = task
        self.ntfn = ntfn
        self.cap = cap

    def cancel(self, why: str) -> None:
        self.ntfn.waiters.remove(self)
        reschedule(self.task, outcome.Error(CapabilityRevoked(why)))


class Notification(KObject):
    """A word of signal bits: signal ORs a badge in, wait takes the word (seL4)."""

    kind = "Notification"

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.word = 0
        self.waiters: deque[_Waiter] = deque()



def signal(dom: Party, cap: Cap) -> None:
    """OR the capability's badge (1 if unbadged) into the word, or wake one waiter."""
    ntfn: Notification = cap.obj  # type: ignore[assignment]
    dom.kernel.stats.signals += 1
    bits = cap.badge or 1
    if ntfn.waiters:
        waiter = ntfn.waiters.popleft()
        waiter.cap.unblock(waiter)
        reschedule(waiter.task, Delivered(bits | ntfn.word))
        ntfn.word = 0
    else:
        ntfn.word |= bits


def poll(cap: Cap) -> int:
    ntfn: Notification = cap.obj  # type: ignore[assignment]
    word, ntfn.word = ntfn.word, 0
    return word


async def wait(cap: Cap) -> int:
    if _ipc.answering is not None:  # not on a caller's task (capkern._inplace)
        _ipc.refuse_in_answer("a wait")
    ntfn: Notification = cap.obj  # type: ignore[assignment]
    await checkpoint_if_cancelled()
    if ntfn.word:
        word, ntfn.word = ntfn.word, 0
        await cancel_shielded_checkpoint()
        return word
    me = _Waiter(current_task(), ntfn, cap)
    ntfn.waiters.append(me)
    cap.block(me)

    def abort(_: Any) -> Abort:
        ntfn.waiters.remove(me)
        cap.unblock(me)
        return Abort.SUCCEEDED

    woken: int = await wait_task_rescheduled(abort)
    return woken
