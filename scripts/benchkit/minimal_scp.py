"""A minimal Storage SCP: the ceiling of one pynetdicom process (../shared/BENCHMARKS.md).

Each data set is written as it was received (event.encoded_dataset(): preamble, File Meta, the data set's
bytes, nothing decoded) to a temporary file, fsync'd and renamed to OUT/<SOP Instance UID>.dcm; no index,
no directory fsync. Unlimited maximum PDU, TCP_NODELAY on every accepted socket, pynetdicom's per-PDU
debug handlers unbound. Stops on SIGTERM or SIGINT.

    .venv/bin/python scripts/benchkit/minimal_scp.py --port PORT --out DIR [--aet MINSCP]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def on_open(event: Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]


def on_store(event: Event, out: Path) -> int:
    uid = str(event.request.AffectedSOPInstanceUID)  # type: ignore[union-attr]
    tmp = out / f".{uid}.{threading.get_ident()}.tmp"
    with tmp.open("wb") as f:
        f.write(event.encoded_dataset())
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, out / f"{uid}.dcm")
    return 0x0000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--aet", default="MINSCP")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # inherited by every thread
    _config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=args.aet)
    ae.maximum_pdu_size = 0  # unlimited
    ae.maximum_associations = 16
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_STORE, on_store, [args.out])]
    server = ae.start_server(("127.0.0.1", args.port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False returns it
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.shutdown()


if __name__ == "__main__":
    main()
