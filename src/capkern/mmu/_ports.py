"""Server ports: how the fault path calls the pager and the sealer (trusted).

The fault path does not know how a server is reached.  It holds one :class:`ServerPort`
per server and makes calls of a label, a body and a deadline; a call returns the server's
``ok`` body, or raises a typed error:

* :class:`~capkern.errors.PagerUnavailable` -- no answer within the deadline;
* :class:`~capkern.errors.ServerError` -- a typed ``error`` reply (``reason``/``detail``);
* :class:`~capkern.errors.ContractViolation` -- a reply out of the server's contract;
* another :class:`~capkern.errors.IPCError` -- the channel failed (server died, revoked).

:class:`IpcPort` is today's implementation: a call from the root domain over a
capability-checked msgpack endpoint, the endpoint's contract checking every reply of the
(untrusted) server at its trap.  A socket transport, a remote pager or a pager set are
other implementations of the same protocol; a fake one serves the fault-path tests
(``capkern.testing.ports``).

:class:`PagerLink` wraps a pager port with what the fault path needs of every pager
call: a transport or protocol failure of the untrusted pager becomes
``PagerUnavailable`` (counted), so the pager can only deny service.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, wait_task_rescheduled

from .. import _ipc as ipc
from .._ipc import Party, Received
from .._states import ReplyState
from ..errors import CapkernError, ContractViolation, IPCError, PagerUnavailable, ServerError

if TYPE_CHECKING:
    from .._cspace import Cap
    from .._trace import Counters
    from ._watchdog import Watchdog

__all__ = ["IpcPort", "PagerLink", "ServerPort", "server_stats"]


#: ``failed(label, error)``: the error a failed call raises instead, or None to keep it
Failure = Callable[[str, CapkernError], CapkernError | None]


_WAITING = ReplyState.WAITING

#: deadlines, and labels per deadline, whose timeout errors an :class:`IpcPort` keeps
LATE_CACHE = 32


class ServerPort(Protocol):
    """A way to call one server: the answer, or a typed error within ``deadline``."""

    name: str

    async def call(self, label: str, body: Any, deadline: float) -> Any:
        """Call ``label`` with ``body``; return the ``ok`` reply body."""
        ...


class IpcPort:
    """A server reached by in-process IPC from ``dom`` (the root) through ``cap``.

    The request is one the kernel built itself, so it is encoded within the wire limits
    but not checked against the contract item by item (``check_requests`` turns that on,
    e.g. for debugging the kernel); the reply comes from the server and is always checked
    -- by the endpoint's contract, at the server's reply trap.  Deadlines are kept by the
    kernel's :class:`~.watchdog.Watchdog` (its task must be running).
    """

    def __init__(self, dom: Party, cap: Cap, watchdog: Watchdog, *,
                 check_requests: bool = False) -> None:
        self.dom = dom
        self.cap = cap
        self.name = cap.obj.label()
        self.watchdog = watchdog
        self.check_requests = check_requests
        #: a call answered in place (capkern._inplace) yields all the same: the pager
        #: link's calls do (a fault always yields); the sealer's need not
        self.yields = False
        # {deadline: {label: the error of a call the watchdog fails}}: the kernel calls a
        # few labels with a few deadlines, so this stays small
        self._late: dict[float, dict[str, Callable[[], PagerUnavailable]]] = {}

    def _late_error(self, label: str, deadline: float) -> Callable[[], PagerUnavailable]:
        """A new timeout error maker, kept for the next calls while the cache is small
        (it always is for the kernel's own calls; a caller with ever new labels or
        deadlines gets a fresh one each time instead of a growing cache)."""
        late = partial(self.late, label, deadline)
        lates = self._late.get(deadline)
        if lates is None and len(self._late) < LATE_CACHE:
            lates = self._late[deadline] = {}
        if lates is not None and len(lates) < LATE_CACHE:
            lates[label] = late
        return late

    def late(self, label: str, deadline: float) -> PagerUnavailable:
        """The error of a call to ``label`` the watchdog failed at its deadline."""
        return PagerUnavailable(f"{self.name} did not answer {label!r} within {deadline}s")

    async def call(self, label: str, body: Any, deadline: float,
                   failed: Failure | None = None) -> Any:
        """The ``ok`` reply body of ``label``.  ``failed`` (a :class:`PagerLink`'s rule)
        decides what a failed call raises; it is applied here, so that the link adds no
        coroutine frame of its own to every fault."""
        dom, cap = self.dom, self.cap
        try:
            if self.check_requests:
                msg = ipc.make_message(dom, cap, label, body, None, ())
            else:
                msg = ipc.kernel_message(dom, cap, label, body)
            # ipc.send's direct call, unrolled: one coroutine less per call
            await checkpoint_if_cancelled()
            reply = ipc.call_now(dom, cap, msg, None)
            if reply is not None and reply.state is not _WAITING:
                # answered in place (capkern._inplace): no task switch, and no deadline
                # to keep -- the answer is already there
                if self.yields:
                    await cancel_shielded_checkpoint()
                got: Received = reply.answered()
            else:
                try:  # a call's timeout error: made once per label and deadline
                    late = self._late[deadline][label]
                except KeyError:
                    late = self._late_error(label, deadline)
                watchdog = self.watchdog
                timer = watchdog.arm(deadline, late)
                try:
                    if reply is None:
                        got = await ipc.send(  # type: ignore[assignment]
                            dom, cap, msg, call=True, timer=timer, yields=self.yields,
                            bounded=False)  # the kernel's calls wait their turn: deadlines
                    else:
                        timer.waiting = reply
                        got = await wait_task_rescheduled(reply._caller_cancelled)
                finally:
                    watchdog.disarm(timer, deadline)
            return got.ok() if got.label == "error" else got.body  # ok() raises ServerError
        except CapkernError as exc:
            if failed is None or (instead := failed(label, exc)) is None:
                raise
            raise instead from None


class PagerLink:
    """Calls to the untrusted pager as the fault path makes them.

    A typed error reply passes through as :class:`ServerError` (the pager may refuse);
    anything else that is wrong with the pager -- silence, a reply out of contract, a
    dead channel -- is :class:`PagerUnavailable`, counted in ``stats``.  :meth:`call` is
    not a coroutine itself: it returns the port's own (an :class:`IpcPort` applies
    :meth:`failed` inside its call) or, for any other port, :meth:`_call`'s.
    """

    def __init__(self, port: ServerPort, deadline: float, stats: Counters) -> None:
        self.port = port
        self.deadline = deadline
        self.stats = stats
        self.calls = 0  # calls made (each one yields: the fault path checks it)
        self._ipc = port if type(port) is IpcPort else None
        if self._ipc is not None:
            self._ipc.yields = True  # every pager call yields, answered in place or not
        self._failed = self.failed  # (bound once, not at every call)

    def call(self, label: str, body: Any) -> Coroutine[Any, Any, Any]:
        """``await link.call(label, body)``: the pager's ``ok`` reply body."""
        self.calls += 1
        if self._ipc is not None:
            return self._ipc.call(label, body, self.deadline, self._failed)
        return self._call(label, body)

    async def _call(self, label: str, body: Any) -> Any:
        try:
            return await self.port.call(label, body, self.deadline)
        except CapkernError as exc:
            if (instead := self.failed(label, exc)) is None:
                raise
            raise instead from None

    def failed(self, label: str, exc: CapkernError) -> CapkernError | None:
        """What a failed pager call raises instead of ``exc`` (None: ``exc`` itself),
        counted: silence stays :class:`PagerUnavailable`, a typed refusal stays
        :class:`ServerError`, any other channel or contract failure becomes
        :class:`PagerUnavailable`."""
        if isinstance(exc, PagerUnavailable):
            self.stats.pager_timeouts += 1
            return None
        if isinstance(exc, ServerError) or not isinstance(exc, ContractViolation | IPCError):
            return None
        self.stats.pager_protocol_errors += 1
        return PagerUnavailable(f"pager failed {label!r}: {exc}")


async def server_stats(pager: PagerLink, crypt: ServerPort, crypt_deadline: float
                       ) -> dict[str, Any]:
    """``{"crypt": ..., "pager": ...}``: each server's ``stats`` reply, or its error."""
    out: dict[str, Any] = {}
    try:
        out["crypt"] = await crypt.call("stats", {}, crypt_deadline)
    except CapkernError as exc:
        out["crypt"] = {"error": str(exc)}
    try:
        out["pager"] = await pager.call("stats", {})
    except CapkernError as exc:
        out["pager"] = {"error": str(exc)}
    return out
