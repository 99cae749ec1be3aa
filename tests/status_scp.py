"""A Storage SCP answering chosen C-STORE statuses, run as its own process by the ``status_scp`` fixture.

storescp cannot refuse one instance and accept the next, so the import tests use
this: ``python tests/status_scp.py PORT FOLDER CONFIG.json``. CONFIG holds
``statuses`` (SOP Instance UID -> status to answer, PS3.4 B.2.3) and
``abort_once`` (UIDs whose first C-STORE aborts the association, as a PACS
that drops a connection does), ``abort_always`` (UIDs that abort it every time)
``garble_once`` (UID -> ``pdv``: before its first response, a P-DATA-TF whose PDV runs past the PDU;
``message_id``: a C-STORE-RSP to another Message ID) and ``max_pdu`` (the largest P-DATA it takes; 0 for no limit). Instances answered with success or a warning
are written to FOLDER as ``<SOP Instance UID>.dcm``.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from pydicom import uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.status import STATUS_FAILURE, code_to_category

SUCCESS = 0x0000


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


_RSP = b"".join((_element(0x0100, struct.pack("<H", 0x8001)), _element(0x0120, struct.pack("<H", 0xFFFF)),
                 _element(0x0800, struct.pack("<H", 0x0101)), _element(0x0900, struct.pack("<H", 0x0000))))
_RSP = _element(0x0000, struct.pack("<L", len(_RSP))) + _RSP
#: What ``garble_once`` sends before the real response (PS3.8 9.3.5: PDU type, length, then PDV items).
GARBLED = {
    "pdv": struct.pack(">BBLLBB", 0x04, 0, 6, 100, 1, 0x03),  # the PDV claims 100 bytes of a 6-byte PDU
    "message_id": struct.pack(">BBLLBB", 0x04, 0, len(_RSP) + 6, len(_RSP) + 2, 1, 0x03) + _RSP,
}


def main(port: int, folder: Path, config: dict[str, object]) -> None:
    statuses = {uid: int(code) for uid, code in dict(config.get("statuses", {})).items()}  # type: ignore[call-overload]
    abort_once = set(config.get("abort_once", []))  # type: ignore[call-overload]
    abort_always = set(config.get("abort_always", []))  # type: ignore[call-overload]
    garble_once = dict(config.get("garble_once", {}))  # type: ignore[call-overload]

    def handle_store(event: Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in garble_once:
            event.assoc.dul.socket.socket.sendall(GARBLED[garble_once.pop(uid)])
        if uid in abort_always or uid in abort_once:
            abort_once.discard(uid)
            event.assoc.abort()
            return SUCCESS  # never sent: the association is gone
        status = statuses.get(uid, SUCCESS)
        if code_to_category(status) != STATUS_FAILURE:
            ds = event.dataset
            ds.file_meta = event.file_meta
            ds.save_as(folder / f"{uid}.dcm", enforce_file_format=True)
        return status

    ae = AE(ae_title="STATUSSCP")
    ae.require_called_aet = True
    ae.maximum_pdu_size = int(config.get("max_pdu", 16382))  # type: ignore[call-overload]
    ae.add_supported_context(Verification)
    for name, value in vars(uid).items():  # every storage SOP class pydicom knows
        if isinstance(value, uid.UID) and name.endswith("Storage") and value.startswith("1.2.840.10008.5.1.4."):
            ae.add_supported_context(value, ALL_TRANSFER_SYNTAXES)
    ae.maximum_associations = 8
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, handle_store)])


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text()))
