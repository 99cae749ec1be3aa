"""C-STORE SCU for import: presentation contexts, associations, raw bytes, worker processes.

Every SOP class gets a presentation context per transfer syntax its instances
are in, plus one offering Explicit and Implicit VR Little Endian (PS3.5 10.1,
the default every SCP accepts); past 128 contexts (PS3.8 9.3.2.2) the classes
are spread over several associations. An instance goes out as its own bytes
when the destination accepted its syntax, else decoded (decompressed with
:func:`node.pixels.decompress` if need be) and encoded in Explicit or Implicit
VR Little Endian (PS3.5 A.2, A.1), whichever was accepted. An instance that the
import's coercion changes (:mod:`node.read.coerce`, decided from its header) is
never sent as its own bytes: it is read whole, coerced and encoded again, in its
own syntax when that was accepted (encapsulated pixel data byte for byte), else
as above. Its C-STORE status is read by PS3.4 B.2.3 and
PS3.7 C: success; warning (0xB000 coercion of data elements, 0xB006 elements
discarded, 0xB007 data set does not match the SOP class: stored all the same);
failure (0xA7xx refused, out of resources; 0xA9xx data set does not match the
SOP class; 0xCxxx cannot understand; the general failures of PS3.7 C.4, C.5).

The association is ours end to end, over our own socket (:mod:`node.pdu`): A-ASSOCIATE-RQ, its AC or
RJ read (PS3.8 9.3.2-9.3.4), A-RELEASE or A-ABORT at the end (9.3.6-9.3.8). Importing pynetdicom (and the
pydicom and numpy it pulls in) cost each process a third of a second of its start; pydicom is now loaded
only where a data set is decoded or coerced. The bytes are framed here straight
from :meth:`Medium.open`'s stream (a folder's file or an ISO image's extent
alike), into P-DATA-TF PDUs no longer than the destination's maximum (PS3.8
9.3.5, E.2), after a C-STORE-RQ command set (PS3.7 9.3.1.1, E.1), and the
C-STORE-RSP is read through :class:`node.pdu.Wire`, with the few elements
it needs (Message ID Being Responded To, Status, Error Comment). Meanwhile the next instance's first piece
is read from the medium. Memory stays at one 1 MiB piece per association (two
while one is read ahead); only the decode path holds one instance.

TCP_NODELAY is set before anything is sent (Nagle costs 40 ms per C-STORE against DCMTK, BENCHMARKS.md).

Several associations run in worker processes (reading media and encoding hold the GIL).
They claim instances from a shared counter only once associated, so a
destination that serves one association at a time still gets everything.
A :class:`Stream` starts its workers before the instances are known, over
presentation contexts decided beforehand, and feeds them one by one through a
pipe: they send while the caller is still finding the rest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import multiprocessing
import queue
import select
import socket
import ssl
import struct
import threading
import time
import warnings
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

from node.dicom import (
    DEFLATED_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MEDIANODE_CLASS_UID,
    MEDIANODE_VERSION_NAME,
    syntax_name,
)
from node.errors import MediumError, one_line
from node.pdu import (
    A_ABORT,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    ASSOCIATE_RQ_MAX,
    COMMAND,
    COMMAND_MAX,
    LAST,
    P_DATA_TF,
    PDU_HEADER,
    Accepted,
    Closed,
    Malformed,
    Rejected,
    Wire,
    a_abort,
    a_associate_rq,
    a_release,
    associate_answer,
    c_store_rq,
    command_elements,
    p_data_tf,
    pdu_header,
    pdvs,
)
from node.read.medium import Medium, open_medium
from node.tls import client_context, failure

if TYPE_CHECKING:  # types only: an import loads neither the configuration's module nor pydicom (coerce's)
    from pydicom import Dataset

    from node.config import ClientTLS
    from node.read.coerce import Change, Coercing

logger = logging.getLogger(__name__)

#: Presentation contexts one association may propose (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128
#: Seconds to wait before each new attempt to associate, after the first.
RETRY_DELAYS = (0.2, 0.5, 1.0)
#: An instance during whose transfer the association is lost this often is failed.
MAX_DROPS = 2
#: Below this many instances per association, another process costs more than it gains.
ITEMS_PER_WORKER = 24
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for the destination's A-ASSOCIATE-AC or -RJ, and for its A-RELEASE-RP.
ACSE_TIMEOUT = 30.0
#: Seconds to wait for a C-STORE response once the data set is sent, and at most for a send to progress.
DIMSE_TIMEOUT = 60.0
#: The largest P-DATA-TF PDU we take (PS3.8 D.1), as A-ASSOCIATE-RQ announces it: pynetdicom's default
#: (``AE.maximum_pdu_size``), which the import announced while pynetdicom associated for it.
MAX_PDU_LENGTH = 16382
_PIECE = 1 << 20
#: The second context proposed for every SOP class, beside one per syntax its instances are in: the
#: uncompressed syntaxes an instance is decoded into when the destination accepted none of its own.
FALLBACK_SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


@dataclass(frozen=True)
class SendTarget:
    """The SCP to store into, and the AE title we call it with."""

    ae_title: str
    host: str
    port: int
    calling_aet: str = "MEDIANODE"
    #: TLS (PS3.15 B.9) with the destination; None is plain TCP. Paths, not a context: a target
    #: crosses into the sending processes, and each builds its own (:func:`node.tls.client_context`).
    tls: ClientTLS | None = None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        """The TLS context of our profile and the server name to give it (checked when the host is a name)."""
        if self.tls is None:
            return None
        return client_context(self.tls.ca, self.tls.certificate, self.tls.key, host=self.host), self.host


@dataclass(frozen=True)
class Item:
    """One instance to send, as the survey found it (see :class:`node.read.check.MediumInstance`)."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    offset: int
    part10: bool
    #: The import's coercion, when it may change this instance: its data set decides, and a changed
    #: instance is re-encoded, never sent as its own bytes.
    coerce: Coercing | None = None


@dataclass(frozen=True)
class Result:
    """What became of ``items[index]``: sent (with a success or warning status) or failed.

    ``changes`` are the coercions made in the data set that was sent (:mod:`node.read.coerce`).
    """

    index: int
    result: Literal["sent", "failed"]
    status: int | None
    reason: str
    notes: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()


#: The items a worker sends, by index: all of them, or those fed so far (:class:`Stream`).
Items = Sequence[Item] | Mapping[int, Item]
Contexts = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class ContextGroup:
    """The presentation contexts of one association and the items sent over it."""

    contexts: Contexts
    indices: tuple[int, ...]


def class_contexts(sop_class: str, syntaxes: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The contexts proposed for one SOP class: one per syntax of its instances, then Explicit + Implicit VR LE.

    >>> class_contexts("1.2.3", {"1.2.840.10008.1.2.1"})
    [('1.2.3', ('1.2.840.10008.1.2.1',)), ('1.2.3', ('1.2.840.10008.1.2.1', '1.2.840.10008.1.2'))]
    """
    return [(sop_class, (ts,)) for ts in sorted(syntaxes)] + [(sop_class, FALLBACK_SYNTAXES)]


def plan_groups(items: Sequence[Item]) -> list[ContextGroup]:
    """Per SOP class, its own syntaxes and Explicit + Implicit VR LE; at most 128 contexts per group."""
    syntaxes: dict[str, set[str]] = {}
    for item in items:
        syntaxes.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax_uid)
    groups: list[tuple[list[tuple[str, tuple[str, ...]]], set[str]]] = []
    for sop_class in sorted(syntaxes):
        wanted = class_contexts(sop_class, syntaxes[sop_class])
        if not groups or len(groups[-1][0]) + len(wanted) > MAX_CONTEXTS:
            groups.append(([], set()))
        groups[-1][0].extend(wanted)
        groups[-1][1].add(sop_class)
    return [
        ContextGroup(tuple(contexts), tuple(i for i, item in enumerate(items) if item.sop_class_uid in classes))
        for contexts, classes in groups
    ]


def send(
    medium_path: str, items: Sequence[Item], *, destination: SendTarget, associations: int = 4
) -> list[Result]:
    """C-STORE ``items`` of the medium at ``medium_path``; one :class:`Result` per item, in order.

    Up to ``associations`` worker processes, each with one association at a time.
    Never raises for what the network or the destination does: that is a result.
    """
    if not items:
        return []
    groups = plan_groups(items)
    workers = max(1, min(associations, math.ceil(len(items) / ITEMS_PER_WORKER)))
    sink = _Collected()
    if workers == 1:
        _run_worker(medium_path, items, groups, destination, _LocalClaims(groups), sink, 0)
    else:
        _run_processes(medium_path, items, groups, destination, sink, workers)
    return sink.every(groups, len(items))


class Stream:
    """Items C-STOREd as they are given (:meth:`put`), over contexts decided beforehand, by worker processes
    started at once: sending overlaps whatever finds the items (an import's survey of its medium)."""

    def __init__(self, medium_path: str, contexts: Contexts, *, destination: SendTarget, workers: int) -> None:
        ctx = _context()
        self.contexts = contexts
        self.count = 0
        reader, self.feed = ctx.Pipe(duplex=False)
        self.lock = ctx.Lock()  # kept: a fork server's workers find it by name, gone once collected
        self.channel = ctx.Queue()
        self.processes = [
            ctx.Process(target=_fed_worker_main,
                        args=(medium_path, contexts, destination, (reader, self.feed), self.lock, self.channel, n),
                        name=f"medianode-send-{n}", daemon=True)
            for n in range(workers)
        ]
        for process in self.processes:
            process.start()
        reader.close()  # the workers' only: once every one has ended, put() fails instead of waiting

    def put(self, item: Item) -> int | None:
        """Hand ``item`` to the workers: its index among the results, or None when every worker has ended
        (given up on the destination), for the caller to send it otherwise."""
        try:
            self.feed.send((self.count, item))
        except OSError:
            return None
        self.count += 1
        return self.count - 1

    def finish(self) -> list[Result]:
        """Wait for the workers to send what they were given; one :class:`Result` per item, in order."""
        for _ in self.processes:
            try:
                self.feed.send(None)
            except OSError:
                break
        self.feed.close()
        sink = _Collected()
        _collect(self.processes, self.channel, sink)
        return sink.every([ContextGroup(self.contexts, tuple(range(self.count)))], self.count)


# -- shared work: claims and results ---------------------------------------------


class _Claims(Protocol):
    def claim(self, group: int, *, wait: bool = True) -> int | None: ...

    def remaining(self, group: int) -> bool: ...


class _Sink(Protocol):
    def result(self, result: Result) -> None: ...

    def give_up(self, group: int, reason: str) -> None: ...


class _LocalClaims:
    def __init__(self, groups: Sequence[ContextGroup]) -> None:
        self.pending = [deque(g.indices) for g in groups]

    def claim(self, group: int, *, wait: bool = True) -> int | None:
        return self.pending[group].popleft() if self.pending[group] else None

    def remaining(self, group: int) -> bool:
        return bool(self.pending[group])


class _SharedClaims:
    """Claims through one counter per group in shared memory (``multiprocessing.Array``)."""

    def __init__(self, groups: Sequence[ContextGroup], counters: Any) -> None:
        self.groups = groups
        self.counters = counters

    def claim(self, group: int, *, wait: bool = True) -> int | None:
        with self.counters.get_lock():
            position = int(self.counters[group])
            if position >= len(self.groups[group].indices):
                return None
            self.counters[group] = position + 1
        return self.groups[group].indices[position]

    def remaining(self, group: int) -> bool:
        return bool(self.counters[group] < len(self.groups[group].indices))


class _FedClaims:
    """Claims of what a :class:`Stream` feeds through a pipe (``(index, item)``, then None per worker), read
    by one worker at a time (``lock``); ``wait=False`` takes only what has arrived."""

    def __init__(self, feed: Any, lock: Any, items: dict[int, Item]) -> None:
        self.feed = feed
        self.lock = lock
        self.items = items
        self.closed = False

    def claim(self, group: int, *, wait: bool = True) -> int | None:
        if self.closed or not self.lock.acquire(block=wait):
            return None
        try:
            if not wait and not self.feed.poll():
                return None
            message = self.feed.recv()
        except EOFError:
            message = None
        finally:
            self.lock.release()
        if message is None:
            self.closed = True
            return None
        index, item = message
        self.items[index] = item
        return int(index)

    def remaining(self, group: int) -> bool:
        return not self.closed


@dataclass
class _Collected:
    results: dict[int, Result] = field(default_factory=dict)
    gave_up: dict[int, str] = field(default_factory=dict)

    def result(self, result: Result) -> None:
        self.results[result.index] = result

    def give_up(self, group: int, reason: str) -> None:
        self.gave_up[group] = reason

    def every(self, groups: Sequence[ContextGroup], count: int) -> list[Result]:
        """The ``count`` results in order, an item no worker answered failed with its group's reason."""
        results = dict(self.results)
        for number, group in enumerate(groups):
            reason = self.gave_up.get(number, "not sent: the sending process ended unexpectedly")
            for index in group.indices:
                results.setdefault(index, Result(index, "failed", None, reason))
        return [results[i] for i in range(count)]


class _Queued:
    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def result(self, result: Result) -> None:
        self.channel.put(("result", result))

    def give_up(self, group: int, reason: str) -> None:
        self.channel.put(("gave_up", group, reason))


def _run_processes(
    medium_path: str, items: Sequence[Item], groups: Sequence[ContextGroup], destination: SendTarget,
    sink: _Collected, workers: int,
) -> None:
    """Send ``items`` from ``workers`` processes claiming them through shared counters."""
    ctx = _context()
    counters = ctx.Array("q", len(groups))
    channel = ctx.Queue()
    processes = [
        ctx.Process(target=_worker_main, args=(medium_path, items, groups, destination, counters, channel, n),
                    name=f"medianode-send-{n}", daemon=True)
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    _collect(processes, channel, sink)


def _context() -> Any:
    """Fork when this process has a single thread (cheap and safe), else use a fork server."""
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")


def _collect(processes: Sequence[Any], channel: Any, sink: _Collected) -> None:
    """Take the workers' results and give-ups until each has said it is done, or has ended without."""
    done = 0
    while done < len(processes):
        try:
            message = channel.get(timeout=0.1)
        except queue.Empty:
            if any(p.is_alive() for p in processes):
                continue
            try:  # every one has ended: what they sent last may still be on its way
                message = channel.get(timeout=0.05)
            except queue.Empty:
                break
        if message[0] == "result":
            sink.result(message[1])
        elif message[0] == "gave_up":
            sink.give_up(message[1], message[2])
        else:
            done += 1
    for process in processes:
        process.join()
        if process.exitcode:
            logger.error("sending process %s ended with status %s", process.name, process.exitcode)
    channel.close()


def _worker_main(
    medium_path: str, items: Sequence[Item], groups: Sequence[ContextGroup], destination: SendTarget,
    counters: Any, channel: Any, number: int,
) -> None:
    _run_worker(medium_path, items, groups, destination, _SharedClaims(groups, counters), _Queued(channel), number)
    _done(channel)


def _fed_worker_main(
    medium_path: str, contexts: Contexts, destination: SendTarget, pipe: tuple[Any, Any], lock: Any, channel: Any,
    number: int,
) -> None:
    feed, writer = pipe
    writer.close()  # the caller's end only: should the caller die, the feed ends instead of waiting forever
    items: dict[int, Item] = {}
    _run_worker(medium_path, items, [ContextGroup(contexts, ())], destination, _FedClaims(feed, lock, items),
                _Queued(channel), number)
    _done(channel)


def _done(channel: Any) -> None:
    """Say this worker is done, after its results (one process's messages arrive in order)."""
    channel.put(("done",))
    channel.close()
    channel.join_thread()


def _run_worker(
    medium_path: str, items: Items, groups: Sequence[ContextGroup], destination: SendTarget,
    claims: _Claims, sink: _Sink, number: int,
) -> None:
    try:
        medium = open_medium(medium_path)
    except MediumError as exc:
        for group in range(len(groups)):
            sink.give_up(group, f"not sent: {exc}")
        return
    with medium:
        worker = _Worker(medium, items, destination, claims, sink)
        for k in range(len(groups)):
            group = (number + k) % len(groups)
            worker.run_group(group, groups[group])


# -- one worker: associations and C-STOREs ---------------------------------------------


class _NoAssociation(Exception):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class _Dropped(Exception):
    """The association was lost while an instance was being sent."""


class _Unreadable(Exception):
    """The medium failed (a read error of a damaged disc) after part of an instance was sent: the
    association was aborted, so that the destination never keeps the part; the instance failed."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.reason)
        self.result = result


@dataclass
class _Ahead:
    """An instance claimed while the previous one was answered, and, when it goes out as its own bytes,
    its file open and its first piece read."""

    index: int
    fp: BinaryIO | None = None
    first: bytes | None = None

    def close(self) -> None:
        if self.fp is not None:
            self.fp.close()


class _Worker:
    def __init__(self, medium: Medium, items: Items, destination: SendTarget,
                 claims: _Claims, sink: _Sink) -> None:
        self.medium = medium
        self.items = items
        self.destination = destination
        self.claims = claims
        self.sink = sink
        self.ahead: _Ahead | None = None

    def run_group(self, number: int, group: ContextGroup) -> None:
        """Associate (again, with back-off, after a drop) until no item of the group is left."""
        pending: deque[int] = deque()
        drops: dict[int, list[str]] = {}  # index -> why the association was lost while sending it
        index: int | None
        while pending or self.claims.remaining(number):
            if pending:  # the association dropped: give the destination a moment before the next one
                time.sleep(RETRY_DELAYS[0])
            try:
                session = associate(self.destination, group.contexts)
            except (_NoAssociation, ValueError) as exc:  # ValueError: an AE title or UID no PDU can carry
                reason = f"not sent: {exc.reason if isinstance(exc, _NoAssociation) else one_line(exc)}"
                for index in pending:
                    self.sink.result(Result(index, "failed", None, reason))
                self.sink.give_up(number, reason)
                return
            try:
                while (index := self.next_index(pending, number)) is not None:
                    try:
                        result = self.send_one(session, index, lambda: self.read_ahead(session, number))
                    except _Unreadable as exc:
                        self.sink.result(exc.result)
                        break
                    except _Dropped as exc:
                        drops.setdefault(index, []).append(str(exc))
                        if len(drops[index]) < MAX_DROPS:
                            pending.appendleft(index)
                        else:
                            reason = f"the association was lost {len(drops[index])} times while sending it ({exc})"
                            self.sink.result(Result(index, "failed", None, reason))
                        break
                    if index in drops:
                        why = f" (sent again after the association was lost: {drops[index][-1]})"
                        result = replace(result, reason=result.reason + why)
                    self.sink.result(result)
            finally:
                if self.ahead is not None:  # the session ended before sending it: sent on the next one
                    pending.append(self.ahead.index)
                    self.ahead.close()
                    self.ahead = None
                session.close()

    def next_index(self, pending: deque[int], group: int) -> int | None:
        """An instance sent again after a drop first, then the one read ahead, then a new claim."""
        if pending:
            return pending.popleft()
        if self.ahead is not None:
            return self.ahead.index
        return self.claims.claim(group)

    def read_ahead(self, session: _Session, group: int) -> None:
        """While the destination answers an instance, claim the next and read its first piece, when it
        goes out as its own bytes; a failure here is left for its turn to report."""
        if self.ahead is not None or (index := self.claims.claim(group, wait=False)) is None:
            return
        item = self.items[index]
        self.ahead = _Ahead(index)
        if item.coerce is not None or item.transfer_syntax_uid not in session.syntaxes(item.sop_class_uid):
            return
        try:
            fp = self.medium.open(item.path)
        except Exception:  # MediumError and what a damaged medium raises: reported when it is sent
            return
        try:
            fp.seek(item.offset)
            self.ahead.first = fp.read(session.piece_size)
        except Exception:
            fp.close()
            return
        self.ahead.fp = fp

    def send_one(self, session: _Session, index: int, meanwhile: Callable[[], None]) -> Result:
        """Send one item as it is, or re-encoded when coerced or its syntax was not accepted; raise _Dropped.
        ``meanwhile`` runs once its bytes are sent, while the destination answers."""
        item = self.items[index]
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead.index != index:  # not its turn (a drop came first): kept for later
            self.ahead, ahead = ahead, None
        accepted = session.syntaxes(item.sop_class_uid)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                changes = self.changes(item)
                if ahead is not None and ahead.fp is not None and item.transfer_syntax_uid in accepted:
                    with ahead.fp as fp:
                        result = session.store_raw(index, item, fp, meanwhile=meanwhile, first=ahead.first)
                elif item.transfer_syntax_uid in accepted and not changes:
                    with self.medium.open(item.path) as fp:
                        fp.seek(item.offset)
                        result = session.store_raw(index, item, fp, meanwhile=meanwhile)
                elif item.transfer_syntax_uid in accepted:
                    result = self.send_decoded(session, index, item.transfer_syntax_uid, changes, meanwhile)
                elif accepted & set(FALLBACK_SYNTAXES):
                    target = EXPLICIT_VR_LE if EXPLICIT_VR_LE in accepted else IMPLICIT_VR_LE
                    result = self.send_decoded(session, index, target, changes, meanwhile)
                else:
                    result = Result(index, "failed", None, "the destination accepted no presentation context for "
                                    f"{syntax_name(item.sop_class_uid)}, neither in {syntax_name(item.transfer_syntax_uid)} "
                                    "nor uncompressed")
            except (_Dropped, _Unreadable):
                raise
            except MediumError as exc:
                result = Result(index, "failed", None, f"unreadable: {exc}")
            except _coercion_error() as exc:  # evaluated for an error only: pydicom stays unloaded until needed
                result = Result(index, "failed", None, f"not sent: cannot coerce it: {exc}")
            except Exception as exc:  # a bug or a hostile value: this instance fails, the import goes on
                logger.exception("sending %s failed", item.path)
                result = Result(index, "failed", None, f"not sent: {type(exc).__name__}: {one_line(exc)}")
            finally:
                if ahead is not None:
                    ahead.close()
        notes = tuple(f"pydicom: {str(w.message).strip()}" for w in caught)
        return replace(result, notes=notes) if notes else result

    def changes(self, item: Item) -> tuple[Change, ...]:
        """What the import's coercion changes in this instance, read from its header (pixel data not read)."""
        if item.coerce is None:
            return ()
        from pydicom import dcmread

        with self.medium.open(item.path) as fp:
            header = dcmread(fp, stop_before_pixels=True, defer_size=_PIECE, force=not item.part10)
        return item.coerce.changes(header)

    def send_decoded(self, session: _Session, index: int, target: str, changes: tuple[Change, ...],
                     meanwhile: Callable[[], None]) -> Result:
        """The data set read whole, coerced, decompressed if need be, and encoded in ``target``.

        ``target`` is the instance's own syntax (a coerced instance: compressed pixel data are kept as
        they are) or, when the destination did not accept that, Explicit or Implicit VR LE.
        """
        from pydicom import dcmread
        from pydicom.uid import UID

        from node import pixels
        from node.read.coerce import CoercionError

        item = self.items[index]
        syntax = UID(item.transfer_syntax_uid)
        if syntax == EXPLICIT_VR_BE and target != syntax:
            return Result(index, "failed", None, "the destination does not accept Explicit VR Big Endian (retired, "
                                                 "PS3.5 A.3) for this class, and its data are not byte-swapped")
        try:
            with self.medium.open(item.path) as fp:
                ds = dcmread(fp, force=not item.part10)
            ds.file_meta.TransferSyntaxUID = syntax
            if item.coerce is not None:
                item.coerce.apply(ds, changes)
            if target == syntax:
                how = f"stored re-encoded in its own {syntax.name}"
            elif syntax.is_compressed:
                pixels.decompress(ds)
                how = f"stored after decompressing {syntax.name}, which the destination did not accept"
            else:
                how = f"stored re-encoded from {syntax.name}, which the destination did not accept"
            encoded = _encoded(ds, target)
        except (MediumError, CoercionError):
            raise
        except Exception as exc:  # pydicom and the codecs raise many kinds of error on hostile bytes
            what = "coerce" if target == syntax else f"convert {syntax.name} for the destination"
            return Result(index, "failed", None, f"cannot {what}: {one_line(exc)}")
        as_sent = Item(item.path, item.sop_class_uid, item.sop_instance_uid, target, 0, item.part10)
        result = session.store_raw(index, as_sent, io.BytesIO(encoded), how, meanwhile=meanwhile)
        return replace(result, changes=changes)


class _Session:
    """One established association over our own socket: C-STOREs framed here, their answers read here."""

    def __init__(self, sock: socket.socket, wire: Wire, answers: _Answers, accepted: Accepted) -> None:
        self.socket = sock
        self.wire = wire
        self.answers = answers
        self.message_id = 0
        self.contexts = {(abstract, syntax): number for number, (abstract, syntax) in accepted.contexts.items()}
        peer_maximum = accepted.max_length  # of a P-DATA-TF's variable field (PS3.8 D.1)
        self.fragment = peer_maximum - 6 if peer_maximum > 6 else _PIECE  # 0: unlimited
        self.open = True

    def close(self) -> None:
        """Release (PS3.8 7.2): A-RELEASE-RQ, then the destination's A-RELEASE-RP awaited for at most
        :data:`ACSE_TIMEOUT`, then the connection closed. A release collision (the destination's own
        A-RELEASE-RQ) is answered with A-RELEASE-RP; an A-ABORT, a close or anything else ends the wait."""
        if not self.open:
            return
        self.open = False
        try:
            self.socket.sendall(a_release(A_RELEASE_RQ))
            self.answers.deadline = time.monotonic() + ACSE_TIMEOUT
            while True:
                kind, length = pdu_header(self.wire.take(PDU_HEADER))
                if length > _MAX_RESPONSE_PDU:
                    break
                for _ in self.wire.stream(length):  # a late P-DATA-TF, or the release PDU's reserved bytes
                    pass
                if kind == A_RELEASE_RQ:
                    self.socket.sendall(a_release(A_RELEASE_RP))
                elif kind != P_DATA_TF:
                    break
        except (OSError, Closed):  # TimeoutError too: the connection is closed all the same
            pass
        finally:
            self.socket.close()

    def abort(self) -> None:
        """A-ABORT as the service user (PS3.8 9.3.8), then close the connection."""
        if not self.open:
            return
        self.open = False
        try:
            self.socket.sendall(a_abort(0, source=0))
        except OSError:
            pass
        self.socket.close()

    def syntaxes(self, sop_class: str) -> set[str]:
        return {ts for cls, ts in self.contexts if cls == sop_class}

    @property
    def piece_size(self) -> int:
        """Bytes read from the medium per step: whole fragments, about :data:`_PIECE`."""
        return max(1, _PIECE // self.fragment) * self.fragment

    def store_raw(self, index: int, item: Item, data: BinaryIO, how: str = "stored", *,
                  meanwhile: Callable[[], None] | None = None, first: bytes | None = None) -> Result:
        """C-STORE-RQ then the data set's bytes as they are, read from ``data`` piece by piece (``first``:
        its first piece, read already); ``meanwhile`` runs once they are sent, before the answer is read."""
        context = self.contexts[(item.sop_class_uid, item.transfer_syntax_uid)]
        piece_size = self.piece_size
        try:
            piece = data.read(piece_size) if first is None else first
        except OSError as exc:
            raise MediumError(f"read error: {one_line(exc)}") from exc
        if not piece:
            return Result(index, "failed", None, "unreadable: the file ends before its data set")
        self.message_id = self.message_id % 0xFFFF + 1
        command = c_store_rq(self.message_id, item.sop_class_uid, item.sop_instance_uid)
        started = time.monotonic()
        try:
            self.socket.sendall(b"".join(p_data_tf(context, command, self.fragment, COMMAND | LAST)))
            while piece:
                following = self._read(index, data, piece_size)
                self.socket.sendall(b"".join(p_data_tf(context, piece, self.fragment, 0 if following else LAST)))
                piece = following
        except OSError as exc:
            raise _Dropped(one_line(exc)) from exc
        if meanwhile is not None:
            meanwhile()
        try:
            self.answers.deadline = started + DIMSE_TIMEOUT
            response = _read_response(self.wire)
        except TimeoutError:
            why = f"no response within {DIMSE_TIMEOUT:.0f} s"
        except (OSError, Closed, Malformed):  # closed, reset, an A-ABORT, or what no C-STORE-RSP is
            why = "aborted"
        else:
            status = response.get(_STATUS)
            if status is not None and response.get(_RESPONDED_TO) == self.message_id:
                return _interpret(index, status, response.get(_ERROR_COMMENT), how)
            why = "a response that answers no request of ours"
        self.abort()
        raise _Dropped(why)


    def _read(self, index: int, data: BinaryIO, size: int) -> bytes:
        """The next piece of an instance being sent; :class:`_Unreadable` (the association aborted) when
        the medium fails, not :class:`_Dropped`: the destination is not to blame, and sending again
        would read the same damaged sectors."""
        try:
            return data.read(size)
        except OSError as exc:
            self.abort()
            raise _Unreadable(Result(index, "failed", None, f"unreadable: read error: {one_line(exc)}; the "
                                     "association was aborted so that the destination keeps no part of it")) from exc


#: The largest PDU taken as a response: a C-STORE-RSP's command set is a few hundred bytes.
_MAX_RESPONSE_PDU = 1 << 20
#: Message ID Being Responded To, Status, Error Comment (PS3.7 9.3.1.2, C.4).
_RESPONDED_TO, _STATUS, _ERROR_COMMENT = 0x0120, 0x0900, 0x0902


class _Answers:
    """The destination's socket as a :class:`node.pdu.Wire` reads it, each read bounded by :attr:`deadline`
    (monotonic seconds): TimeoutError past it. It waits with select, leaving the socket's own timeout
    to bound what is sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = 0.0

    def recv_into(self, buffer: memoryview, nbytes: int) -> int:
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        left = self.deadline - time.monotonic()
        if not pending and (left <= 0 or not select.select([self.sock], [], [], left)[0]):
            raise TimeoutError
        return self.sock.recv_into(buffer, nbytes)


def _read_response(wire: Wire) -> dict[int, Any]:
    """The next command set the destination sends (PS3.8 9.3.5, E.2), as {element: value} of group 0000.

    Data set fragments (a C-STORE-RSP has none) are passed over, and the PDU that ends the command set is
    read to its end. Raises TimeoutError past the deadline, OSError when the connection fails,
    :class:`node.pdu.Closed` when the destination closes it, :class:`node.pdu.Malformed` for an A-ABORT or
    any other PDU.
    """
    command = bytearray()
    while True:
        kind, length = pdu_header(wire.take(PDU_HEADER))
        if kind != P_DATA_TF or length > _MAX_RESPONSE_PDU:
            raise Malformed(f"PDU type 0x{kind:02X} of {length} bytes")
        whole: bytes | None = None
        for _, control, n in pdvs(wire, length):
            if control & COMMAND and whole is None:
                if len(command) + n > COMMAND_MAX:
                    raise Malformed(f"a command set over {COMMAND_MAX} bytes")
                command += wire.take(n)
                if control & LAST:
                    whole = bytes(command)
            else:
                for _ in wire.stream(n):
                    pass
        if whole is not None:
            return _command_set(whole)


def _command_set(data: bytes) -> dict[int, Any]:
    """Message ID Being Responded To and Status (US), Error Comment (LO) of a response's command set."""
    elements = command_elements(data)
    found: dict[int, Any] = {k: struct.unpack("<H", elements[k])[0]
                             for k in (_RESPONDED_TO, _STATUS) if len(elements.get(k, b"")) == 2}
    if _ERROR_COMMENT in elements:
        found[_ERROR_COMMENT] = elements[_ERROR_COMMENT].decode("ascii", "replace").strip(" \0")
    return found


#: C-STORE statuses (PS3.4 B.2.3), first match: (first, last, category, meaning).
_STORAGE_STATUSES = (
    (0xA700, 0xA7FF, "Failure", "Refused: Out of Resources"),
    (0xA900, 0xA9FF, "Failure", "Data Set Does Not Match SOP Class"),
    (0xC000, 0xCFFF, "Failure", "Cannot Understand"),
    (0xB000, 0xB000, "Warning", "Coercion of Data Elements"),
    (0xB006, 0xB006, "Warning", "Elements Discarded"),
    (0xB007, 0xB007, "Warning", "Data Set Does Not Match SOP Class"),
    (0xA000, 0xAFFF, "Failure", ""),
    (0xB000, 0xBFFF, "Warning", ""),
)
#: The general statuses (PS3.7 C) a C-STORE may be answered with, besides success.
_GENERAL_STATUSES = {
    0x0001: ("Warning", "Requested Optional Attributes Not Supported"),
    0x0105: ("Failure", "No Such Attribute"), 0x0106: ("Failure", "Invalid Attribute Value"),
    0x0107: ("Warning", "Attribute List Error"), 0x0110: ("Failure", "Processing Failure"),
    0x0111: ("Failure", "Duplicate SOP Instance"), 0x0112: ("Failure", "No Such SOP Instance"),
    0x0113: ("Failure", "No Such Event Type"), 0x0114: ("Failure", "No Such Argument"),
    0x0115: ("Failure", "Invalid Argument Value"), 0x0116: ("Warning", "Attribute Value Out of Range"),
    0x0117: ("Failure", "Invalid Object Instance"), 0x0118: ("Failure", "No Such SOP Class"),
    0x0119: ("Failure", "Class-Instance Conflict"), 0x0120: ("Failure", "Missing Attribute"),
    0x0121: ("Failure", "Missing Attribute Value"), 0x0122: ("Failure", "Refused: SOP Class Not Supported"),
    0x0123: ("Failure", "No Such Action"), 0x0124: ("Failure", "Refused: Not Authorised"),
    0x0210: ("Failure", "Duplicate Invocation"), 0x0211: ("Failure", "Unrecognised Operation"),
    0x0212: ("Failure", "Mistyped Argument"), 0x0213: ("Failure", "Resource Limitation"),
    0xFE00: ("Cancel", ""), 0xFF00: ("Pending", ""), 0xFF01: ("Pending", ""),
}


def _status(status: int) -> tuple[str, str]:
    """(category, meaning) of a C-STORE status; the meaning may be empty.

    >>> _status(0x0000), _status(0xA701), _status(0xB006), _status(0x0122), _status(0x7000)
    (('Success', ''), ('Failure', 'Refused: Out of Resources'), ('Warning', 'Elements Discarded'), \
('Failure', 'Refused: SOP Class Not Supported'), ('Unknown', ''))
    """
    if status == 0x0000:
        return "Success", ""
    if status in _GENERAL_STATUSES:
        return _GENERAL_STATUSES[status]
    return next(((category, meaning) for first, last, category, meaning in _STORAGE_STATUSES
                 if first <= status <= last), ("Unknown", ""))


def _interpret(index: int, status: int, comment: object, how: str) -> Result:
    """A C-STORE status by PS3.4 B.2.3 and PS3.7 C: warnings are stored, failures refused."""
    category, meaning = _status(status)
    text = f"0x{status:04X} {meaning or category}" + (f": {str(comment).strip()}" if comment else "")
    if category == "Success":
        return Result(index, "sent", status, how)
    if category == "Warning":
        return Result(index, "sent", status, f"{how}, with warning {text}")
    return Result(index, "failed", status, f"refused by the destination: {text}")


def _encoded(ds: Dataset, syntax: str) -> bytes:
    """The data set alone (no File Meta) in ``syntax``: Implicit VR LE, Explicit VR BE, or else Explicit VR
    LE, deflated as a whole for Deflated Explicit VR LE (PS3.5 A.1-A.5)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_implicit_VR = syntax == IMPLICIT_VR_LE
    fp.is_little_endian = syntax != EXPLICIT_VR_BE
    write_dataset(fp, ds)
    data = fp.getvalue()
    if syntax == DEFLATED_LE:
        deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = deflate.compress(data) + deflate.flush()
        data += b"\0" * (len(data) % 2)
    return bytes(data)


def _coercion_error() -> type[Exception]:
    """:class:`node.read.coerce.CoercionError`, imported when an error is to be matched against it."""
    from node.read.coerce import CoercionError

    return CoercionError


# -- associating ---------------------------------------------------------------------------


def associate(destination: SendTarget, contexts: Sequence[tuple[str, Sequence[str]]]) -> _Session:
    """An established association with TCP_NODELAY set; retried with back-off (:data:`RETRY_DELAYS`).

    Raises :class:`_NoAssociation` with a one-line reason when it cannot be had,
    at once when the rejection is permanent (PS3.8 7.1.1.9) or no context was accepted.
    """
    delays = iter(RETRY_DELAYS)
    while True:
        try:
            return _associate_once(destination, contexts)
        except _NoAssociation as exc:
            if exc.permanent:
                raise
            delay = next(delays, None)
            logger.info("no association with %s (%s)%s", destination, exc.reason, "" if delay is None else "; retrying")
            if delay is None:
                raise
        time.sleep(delay)


def _associate_once(destination: SendTarget, contexts: Sequence[tuple[str, Sequence[str]]]) -> _Session:
    """Connect, send A-ASSOCIATE-RQ (our Implementation Class UID and Version Name, PS3.7 D.3.3.2), and
    read the answer within :data:`ACSE_TIMEOUT`: a session, or :class:`_NoAssociation` saying why not."""
    where = str(destination)
    try:
        tls_args = destination.tls_args()
    except OSError as exc:  # ssl.SSLError too: the files changed since the configuration was read
        raise _NoAssociation(f"TLS with {where}: cannot load our TLS files: {failure(exc)}", permanent=True) from None
    request = a_associate_rq(destination.calling_aet, destination.ae_title, contexts, max_length=MAX_PDU_LENGTH,
                             implementation_class_uid=MEDIANODE_CLASS_UID, version_name=MEDIANODE_VERSION_NAME)
    sock = _connect(destination, tls_args)
    try:
        answers = _Answers(sock)
        wire = Wire(answers, COMMAND_MAX)
        answer = _answer(sock, wire, answers, request, contexts, where)
    except BaseException:
        sock.close()
        raise
    if isinstance(answer, Rejected):
        sock.close()
        raise _NoAssociation(f"{where} rejected the association ({answer})", permanent=answer.permanent)
    session = _Session(sock, wire, answers, answer)
    if not answer.contexts:
        session.abort()
        classes = sorted({syntax_name(abstract) for abstract, _ in contexts})
        raise _NoAssociation(f"{where} accepted none of the SOP classes: {', '.join(classes)}", permanent=True)
    return session


def _connect(destination: SendTarget, tls_args: tuple[ssl.SSLContext, str] | None) -> socket.socket:
    """A connection to the destination, TCP_NODELAY set before anything is sent, in TLS when configured."""
    where = str(destination)
    try:
        sock = socket.create_connection((destination.host, destination.port), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise _NoAssociation(f"cannot connect to {where}: {exc}", permanent=False) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls_args is not None:
        context, host = tls_args
        try:
            sock = context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLError as exc:  # a certificate or a profile the destination does not share: no retry mends it
            sock.close()
            raise _NoAssociation(f"TLS with {where} refused: {failure(exc)}", permanent=True) from None
        except OSError as exc:
            sock.close()
            hint = " (during the TLS handshake: does the destination speak TLS on this port?)" \
                if isinstance(exc, ConnectionResetError) else ""
            raise _NoAssociation(f"cannot connect to {where}: {exc}{hint}", permanent=False) from None
    sock.settimeout(DIMSE_TIMEOUT)
    return sock


def _alert_before(sock: socket.socket, refused: ssl.SSLError) -> ssl.SSLError:
    """What the destination said before closing, when TLS refused a write after the handshake (TLS 1.3: a
    client certificate found missing or unknown is told then): its alert when it is there to read, else
    ``refused``."""
    try:
        if select.select([sock], [], [], 0)[0]:
            sock.recv(1)
    except ssl.SSLError as alert:
        return alert
    except OSError:
        pass
    return refused


def _answer(sock: socket.socket, wire: Wire, answers: _Answers, request: bytes,
            contexts: Sequence[tuple[str, Sequence[str]]], where: str) -> Accepted | Rejected:
    """Send A-ASSOCIATE-RQ and read the destination's A-ASSOCIATE-AC or -RJ; :class:`_NoAssociation` for
    anything else (an A-ABORT, a close, a malformed PDU: A-ABORTed, no answer in time)."""
    answers.deadline = time.monotonic() + ACSE_TIMEOUT
    try:
        try:
            sock.sendall(request)
        except ssl.SSLError as exc:
            raise _alert_before(sock, exc) from None
        kind, length = pdu_header(wire.take(PDU_HEADER))
        if length > ASSOCIATE_RQ_MAX:
            raise Malformed(f"PDU type 0x{kind:02X} of {length} bytes, over the {ASSOCIATE_RQ_MAX} taken")
        body = b"".join(bytes(piece) for piece in wire.stream(length))
        if kind == A_ABORT:
            raise _NoAssociation(f"{where} aborted the association request", permanent=False)
        return associate_answer(kind, body, contexts)
    except ssl.SSLError as exc:  # TLS 1.3: a client certificate refused is told after the handshake
        raise _NoAssociation(f"TLS with {where} refused: {failure(exc)}", permanent=True) from None
    except TimeoutError:
        raise _NoAssociation(f"no association with {where}: no answer within {ACSE_TIMEOUT:.0f} s",
                             permanent=False) from None
    except Closed:
        raise _NoAssociation(f"{where} closed the connection instead of answering the association request",
                             permanent=False) from None
    except Malformed as exc:
        with contextlib.suppress(OSError):
            sock.sendall(a_abort(0, source=0))
        raise _NoAssociation(f"{where} answered the association request with a malformed PDU ({exc})",
                             permanent=False) from None
    except OSError as exc:
        raise _NoAssociation(f"no association with {where}: {one_line(exc)}", permanent=False) from None
