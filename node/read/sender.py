"""C-STORE SCU for import: presentation contexts, associations, raw bytes, worker processes.

Every SOP class gets a presentation context per transfer syntax its instances
are in, plus one offering Explicit and Implicit VR Little Endian (PS3.5 10.1,
the default every SCP accepts); past 128 contexts (PS3.8 9.3.2.2) the classes
are spread over several associations. An instance goes out as its own bytes
when the destination accepted its syntax, else decoded: decompressed with
:func:`node.pixels.decompress`, or re-encoded by pynetdicom between Explicit and
Implicit VR (PS3.5 A.1, A.2). Its C-STORE status is interpreted by PS3.4 B.2.3
and PS3.7 C: success, warning (0xB000 coercion, 0xB006 elements discarded,
0xB007 data set does not match the SOP class: stored all the same), failure
(0xA7xx out of resources, 0xA9xx does not match, 0xCxxx cannot understand, and
PS3.7 C.4/C.5 general failures).

Raw bytes use pynetdicom's ``STORE_SEND_CHUNKED_DATASET``, which reads a host
file: a PS3.10 file of a folder medium is handed over as ``/proc/self/fd/N`` of
the descriptor :meth:`Medium.open` checked (so a symlink swapped in afterwards
is never followed); anything else (a file on an ISO image, one without usable
File Meta) is first copied, in 1 MiB pieces, into an unnamed temporary file
behind a File Meta group naming it. Memory stays bounded by one piece, except
on the decode path, which holds one instance.

pynetdicom sets no TCP_NODELAY (Nagle costs 40 ms per C-STORE against DCMTK,
BENCHMARKS.md): it is set when the connection opens (``EVT_CONN_OPEN``). Its
association reactor also polls the DIMSE queue while ``send_c_store`` waits on
it; when a fast peer answers before the reactor has parked, the reactor takes
the C-STORE response ("Received unexpected C-STORE service message") and
``send_c_store`` waits for the DIMSE timeout: the 30 s stall of BENCHMARKS.md,
reproduced here in 8 of 25 two-process runs. :func:`_reactor_takes_no_messages`
closes that race.

Several associations run in worker processes (pynetdicom's per-PDU work holds
the GIL), which claim instances from a shared counter only once associated, so
a destination that serves one association at a time still gets everything.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import (
    STATUS_SUCCESS,
    STATUS_WARNING,
    STORAGE_SERVICE_CLASS_STATUS,
    code_to_category,
)

from node.dicom import (
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LE,
)
from node.errors import MediumError
from node.read.medium import FolderMedium, Medium, open_medium

logger = logging.getLogger(__name__)

#: Presentation contexts one association may propose (PS3.8 9.3.2.2: IDs are odd, 1-255).
MAX_CONTEXTS = 128
#: Seconds to wait before each new attempt to associate, after the first.
RETRY_DELAYS = (0.2, 0.5, 1.0)
#: An instance during whose transfer the association is lost this often is failed.
MAX_DROPS = 2
#: Below this many instances per association, another process costs more than it gains.
ITEMS_PER_WORKER = 24
CONNECT_TIMEOUT = 10.0
ACSE_TIMEOUT = 30.0
DIMSE_TIMEOUT = 60.0
_PIECE = 1 << 20
_UNCOMPRESSED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)


@dataclass(frozen=True)
class Destination:
    """The SCP to store into, and the AE title we call it with."""

    ae_title: str
    host: str
    port: int
    calling_aet: str = "MEDIANODE"

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Item:
    """One instance to send, as the survey found it (see :class:`node.read.check.Instance`)."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    offset: int
    part10: bool


@dataclass(frozen=True)
class Result:
    """What became of ``items[index]``: sent (with a success or warning status) or failed."""

    index: int
    result: Literal["sent", "failed"]
    status: int | None
    reason: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    """The presentation contexts of one association and the items sent over it."""

    contexts: tuple[tuple[str, tuple[str, ...]], ...]
    indices: tuple[int, ...]


def plan_groups(items: Sequence[Item]) -> list[Group]:
    """Per SOP class, its own syntaxes and Explicit + Implicit VR LE; at most 128 contexts per group."""
    syntaxes: dict[str, set[str]] = {}
    for item in items:
        syntaxes.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax_uid)
    groups: list[tuple[list[tuple[str, tuple[str, ...]]], set[str]]] = []
    for sop_class in sorted(syntaxes):
        wanted = [(sop_class, (ts,)) for ts in sorted(syntaxes[sop_class])] + [(sop_class, _UNCOMPRESSED)]
        if not groups or len(groups[-1][0]) + len(wanted) > MAX_CONTEXTS:
            groups.append(([], set()))
        groups[-1][0].extend(wanted)
        groups[-1][1].add(sop_class)
    return [
        Group(tuple(contexts), tuple(i for i, item in enumerate(items) if item.sop_class_uid in classes))
        for contexts, classes in groups
    ]


def send(
    medium_path: str, items: Sequence[Item], *, destination: Destination, associations: int = 4
) -> list[Result]:
    """C-STORE ``items`` of the medium at ``medium_path``; one :class:`Result` per item, in order.

    Up to ``associations`` worker processes, each with one association at a time.
    Never raises for what the network or the destination does: that is a result.
    """
    groups = plan_groups(items)
    workers = max(1, min(associations, math.ceil(len(items) / ITEMS_PER_WORKER)))
    sink = _Collected()
    if not items:
        return []
    if workers == 1:
        claims: _Claims = _LocalClaims(groups)
        with _chunked_sending():
            _run_worker(medium_path, items, groups, destination, claims, sink, 0)
    else:
        _run_processes(medium_path, items, groups, destination, sink, workers)
    results = dict(sink.results)
    for number, group in enumerate(groups):
        reason = sink.gave_up.get(number, "not sent: the sending process ended unexpectedly")
        for index in group.indices:
            results.setdefault(index, Result(index, "failed", None, reason))
    return [results[i] for i in range(len(items))]


# -- shared work: claims and results ---------------------------------------------


class _Claims(Protocol):
    def claim(self, group: int) -> int | None: ...

    def remaining(self, group: int) -> bool: ...


class _Sink(Protocol):
    def result(self, result: Result) -> None: ...

    def give_up(self, group: int, reason: str) -> None: ...


class _LocalClaims:
    def __init__(self, groups: Sequence[Group]) -> None:
        self.pending = [deque(g.indices) for g in groups]

    def claim(self, group: int) -> int | None:
        return self.pending[group].popleft() if self.pending[group] else None

    def remaining(self, group: int) -> bool:
        return bool(self.pending[group])


class _SharedClaims:
    """Claims through one counter per group in shared memory (``multiprocessing.Array``)."""

    def __init__(self, groups: Sequence[Group], counters: Any) -> None:
        self.groups = groups
        self.counters = counters

    def claim(self, group: int) -> int | None:
        with self.counters.get_lock():
            position = int(self.counters[group])
            if position >= len(self.groups[group].indices):
                return None
            self.counters[group] = position + 1
        return self.groups[group].indices[position]

    def remaining(self, group: int) -> bool:
        return bool(self.counters[group] < len(self.groups[group].indices))


@dataclass
class _Collected:
    results: dict[int, Result] = field(default_factory=dict)
    gave_up: dict[int, str] = field(default_factory=dict)

    def result(self, result: Result) -> None:
        self.results[result.index] = result

    def give_up(self, group: int, reason: str) -> None:
        self.gave_up[group] = reason


class _Queued:
    def __init__(self, channel: Any) -> None:
        self.channel = channel

    def result(self, result: Result) -> None:
        self.channel.put(("result", result))

    def give_up(self, group: int, reason: str) -> None:
        self.channel.put(("gave_up", group, reason))


def _run_processes(
    medium_path: str, items: Sequence[Item], groups: Sequence[Group], destination: Destination,
    sink: _Collected, workers: int,
) -> None:
    """Fork when this process has a single thread (cheap and safe), else use a fork server."""
    ctx: Any = multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
    counters = ctx.Array("q", len(groups))
    channel = ctx.Queue()
    processes = [
        ctx.Process(target=_worker_main, args=(medium_path, items, groups, destination, counters, channel, n),
                    name=f"medianode-send-{n}", daemon=True)
        for n in range(workers)
    ]
    for process in processes:
        process.start()

    def take(message: tuple[Any, ...]) -> None:
        if message[0] == "result":
            sink.result(message[1])
        else:
            sink.give_up(message[1], message[2])

    while any(p.is_alive() for p in processes):
        try:
            take(channel.get(timeout=0.1))
        except queue.Empty:
            continue
    while True:
        try:
            take(channel.get(timeout=0.05))
        except queue.Empty:
            break
    for process in processes:
        process.join()
        if process.exitcode:
            logger.error("sending process %s ended with status %s", process.name, process.exitcode)
    channel.close()


def _worker_main(
    medium_path: str, items: Sequence[Item], groups: Sequence[Group], destination: Destination,
    counters: Any, channel: Any, number: int,
) -> None:
    _config.STORE_SEND_CHUNKED_DATASET = True
    _run_worker(medium_path, items, groups, destination, _SharedClaims(groups, counters), _Queued(channel), number)
    channel.close()
    channel.join_thread()


def _run_worker(
    medium_path: str, items: Sequence[Item], groups: Sequence[Group], destination: Destination,
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


@contextmanager
def _chunked_sending() -> Iterator[None]:
    """pynetdicom streams a file it is given by path, instead of decoding it (a process-wide setting)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


# -- one worker: associations and C-STOREs ---------------------------------------------


class _NoAssociation(Exception):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class _Dropped(Exception):
    """The association was lost while an instance was being sent."""


class _Worker:
    def __init__(self, medium: Medium, items: Sequence[Item], destination: Destination,
                 claims: _Claims, sink: _Sink) -> None:
        self.medium = medium
        self.items = items
        self.destination = destination
        self.claims = claims
        self.sink = sink

    def run_group(self, number: int, group: Group) -> None:
        """Associate (again, with back-off, after a drop) until no item of the group is left."""
        pending: deque[int] = deque()
        drops: dict[int, str] = {}  # index -> why the association was lost while sending it
        counts: dict[int, int] = {}
        index: int | None
        while pending or self.claims.remaining(number):
            try:
                assoc = associate(self.destination, group.contexts)
            except _NoAssociation as exc:
                for index in pending:
                    self.sink.result(Result(index, "failed", None, f"not sent: {exc.reason}"))
                self.sink.give_up(number, f"not sent: {exc.reason}")
                return
            try:
                while (index := pending.popleft() if pending else self.claims.claim(number)) is not None:
                    try:
                        result = self.send_one(assoc, index)
                    except _Dropped as exc:
                        counts[index] = counts.get(index, 0) + 1
                        drops[index] = str(exc)
                        if counts[index] >= MAX_DROPS:
                            reason = f"the association was lost {counts[index]} times while sending it ({exc})"
                            self.sink.result(Result(index, "failed", None, reason))
                        else:
                            pending.appendleft(index)
                        break
                    if index in drops:
                        why = f" (sent again after the association was lost: {drops[index]})"
                        result = Result(index, result.result, result.status, result.reason + why, result.notes)
                    self.sink.result(result)
            finally:
                if assoc.is_established:
                    assoc.release()

    def send_one(self, assoc: Association, index: int) -> Result:
        """Send one item as it is, or decoded when its syntax was not accepted; raise _Dropped."""
        item = self.items[index]
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class_uid}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if item.transfer_syntax_uid in accepted:
                    result = self.send_raw(assoc, index)
                elif accepted & set(_UNCOMPRESSED):
                    result = self.send_decoded(assoc, index)
                else:
                    result = Result(index, "failed", None, "the destination accepted no presentation context for "
                                    f"{_name(item.sop_class_uid)}, neither in {_name(item.transfer_syntax_uid)} "
                                    "nor uncompressed")
            except MediumError as exc:
                result = Result(index, "failed", None, f"unreadable: {exc}")
        notes = tuple(f"pydicom: {str(w.message).strip()}" for w in caught)
        return Result(result.index, result.result, result.status, result.reason, notes) if notes else result

    def send_raw(self, assoc: Association, index: int) -> Result:
        """The file's own data set bytes, streamed by pynetdicom from a host file."""
        item = self.items[index]
        with self.medium.open(item.path) as fp:
            if item.part10 and isinstance(self.medium, FolderMedium) and _PROC_FD.exists():
                return self.store(assoc, index, Path(f"{_PROC_FD}/{fp.fileno()}"), "stored")
            with tempfile.TemporaryFile(prefix="medianode-") as part10:
                _write_part10(part10, item, fp)
                return self.store(assoc, index, Path(f"{_PROC_FD}/{part10.fileno()}"), "stored")

    def send_decoded(self, assoc: Association, index: int) -> Result:
        """The data set read whole, decompressed or re-encoded into a syntax the destination accepted."""
        from node import pixels

        item = self.items[index]
        syntax = UID(item.transfer_syntax_uid)
        if syntax == EXPLICIT_VR_BE:
            return Result(index, "failed", None, "the destination does not accept Explicit VR Big Endian (retired, "
                                                 "PS3.5 A.3) for this class, and its data are not byte-swapped")
        try:
            with self.medium.open(item.path) as fp:
                ds = dcmread(fp, force=not item.part10)
            ds.file_meta.TransferSyntaxUID = syntax
            if syntax.is_compressed:
                pixels.decompress(ds)
                how = f"stored after decompressing {syntax.name}, which the destination did not accept"
            else:
                how = f"stored re-encoded from {syntax.name}, which the destination did not accept"
        except MediumError:
            raise
        except Exception as exc:  # pydicom and the codecs raise many kinds of error on hostile bytes
            return Result(index, "failed", None, f"cannot convert {syntax.name} for the destination: {_one_line(exc)}")
        return self.store(assoc, index, ds, how)

    def store(self, assoc: Association, index: int, what: Path | Dataset, how: str) -> Result:
        """One C-STORE; the status interpreted per PS3.4 B.2.3 and PS3.7 C."""
        started = time.monotonic()
        try:
            response = assoc.send_c_store(what)
        except (ValueError, AttributeError) as exc:  # no usable context, or not encodable
            return Result(index, "failed", None, f"not sent: {_one_line(exc)}")
        except (RuntimeError, OSError) as exc:
            raise _Dropped(_one_line(exc)) from exc
        if "Status" not in response:
            waited = time.monotonic() - started >= DIMSE_TIMEOUT
            raise _Dropped(f"no response within {DIMSE_TIMEOUT:.0f} s" if waited else "aborted")
        status = int(response.Status)
        category = code_to_category(status)
        meaning = STORAGE_SERVICE_CLASS_STATUS.get(status, (category, ""))[1] or category
        comment = str(response.get("ErrorComment", "") or "").strip()
        text = f"0x{status:04X} {meaning}" + (f": {comment}" if comment else "")
        if category == STATUS_SUCCESS:
            return Result(index, "sent", status, how)
        if category == STATUS_WARNING:
            return Result(index, "sent", status, f"{how}, with warning {text}")
        return Result(index, "failed", status, f"refused by the destination: {text}")


# -- associating ---------------------------------------------------------------------------


def associate(destination: Destination, contexts: Sequence[tuple[str, Sequence[str]]]) -> Association:
    """An established association with TCP_NODELAY set; retried with back-off (:data:`RETRY_DELAYS`).

    Raises :class:`_NoAssociation` with a one-line reason when it cannot be had,
    at once when the rejection is permanent (PS3.8 7.1.1.9) or no context was accepted.
    """
    last: _NoAssociation | None = None
    for delay in (0.0, *RETRY_DELAYS):
        time.sleep(delay)
        try:
            return _associate_once(destination, contexts)
        except _NoAssociation as exc:
            if exc.permanent:
                raise
            last = exc
            logger.info("no association with %s (%s); retrying", destination, exc.reason)
    assert last is not None
    raise last


def _associate_once(destination: Destination, contexts: Sequence[tuple[str, Sequence[str]]]) -> Association:
    ae = AE(ae_title=destination.calling_aet)
    ae.connection_timeout = CONNECT_TIMEOUT
    ae.acse_timeout = ACSE_TIMEOUT
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.network_timeout = DIMSE_TIMEOUT
    proposed: list[PresentationContext] = [build_context(sop, list(syntaxes)) for sop, syntaxes in contexts]
    with _connection_errors() as errors, warnings.catch_warnings():
        # pynetdicom drops, unclosed, the socket whose connect() failed: not our leak to report
        warnings.simplefilter("ignore", ResourceWarning)
        assoc = ae.associate(destination.host, destination.port, contexts=proposed, ae_title=destination.ae_title,
                             evt_handlers=[(evt.EVT_CONN_OPEN, _set_nodelay)])
    if assoc.is_established:
        _reactor_takes_no_messages(assoc)
        return assoc
    where = str(destination)
    if errors:
        raise _NoAssociation(f"cannot connect to {where}: {errors[-1]}", permanent=False)
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        detail = f"{rsp.result_str}, {rsp.source_str}: {rsp.reason_str}" if rsp is not None else "rejected"
        raise _NoAssociation(f"{where} rejected the association ({detail})",
                             permanent=rsp is not None and rsp.result == 0x01)
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        classes = sorted({_name(str(cx.abstract_syntax)) for cx in assoc.rejected_contexts})
        raise _NoAssociation(f"{where} accepted none of the SOP classes: {', '.join(classes)}", permanent=True)
    if assoc.is_aborted:
        raise _NoAssociation(f"{where} aborted the association request", permanent=False)
    raise _NoAssociation(f"no association with {where}: no answer within {ACSE_TIMEOUT:.0f} s", permanent=False)


def _set_nodelay(event: evt.Event) -> None:
    """Turn Nagle off as soon as the connection is open, before A-ASSOCIATE-RQ (BENCHMARKS.md)."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reactor_takes_no_messages(assoc: Association) -> None:
    """Leave DIMSE responses (and the abort marker) to ``send_c_store``, never to the reactor.

    The requestor's reactor polls ``dimse.get_msg(block=False)`` to serve requests
    the peer sends; an SCU that only stores proposes no SCP role, so none may come.
    Only ``send_c_store`` blocks on the queue: non-blocking polls get nothing.
    """
    blocking: Callable[[bool], Any] = assoc.dimse.get_msg

    def get_msg(block: bool = False) -> Any:
        return blocking(True) if block else (None, None)

    assoc.dimse.get_msg = get_msg  # type: ignore[method-assign]


class _ErrorLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("TCP Initialisation Error: "):
            self.lines.append(message.removeprefix("TCP Initialisation Error: "))


@contextmanager
def _connection_errors() -> Iterator[list[str]]:
    """The OS's reason (e.g. "[Errno 111] Connection refused"), which pynetdicom only logs."""
    handler = _ErrorLines()
    transport = logging.getLogger("pynetdicom.transport")
    transport.addHandler(handler)
    try:
        yield handler.lines
    finally:
        transport.removeHandler(handler)


# -- helpers ----------------------------------------------------------------------------------

_PROC_FD = Path("/proc/self/fd")


def _write_part10(out: BinaryIO, item: Item, source: BinaryIO) -> None:
    """A PS3.10 file naming ``item``: preamble, File Meta, then its data set copied piece by piece."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(item.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(item.sop_instance_uid)
    meta.TransferSyntaxUID = UID(item.transfer_syntax_uid)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    encoded = DicomBytesIO()
    write_file_meta_info(encoded, meta, enforce_standard=True)
    out.write(bytes(128) + b"DICM" + encoded.getvalue())
    source.seek(item.offset)
    shutil.copyfileobj(source, out, _PIECE)
    out.flush()  # pynetdicom reopens it by name: through the page cache, not this buffer


def _name(uid: str) -> str:
    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"


def _one_line(message: object) -> str:
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__
