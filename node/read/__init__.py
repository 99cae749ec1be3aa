"""Read media (the FSR role): medium -> check (DICOMDIR vs files) -> import (C-STORE SCU).

The front door: a module outside this room imports only the modules named in
``__all__`` (header.py is the room's own). The door names modules, not names,
and imports nothing itself, so each module (most of them load pydicom) loads
when it is first used.
"""

__all__ = [
    "check",  # check_medium(): the ``check`` report
    "coerce",  # what ``import.coerce`` may change in a data set
    "importer",  # import_medium(): every instance of a medium sent, and the report
    "match",  # whether a local patient is the medium's: names, birth date, sex
    "medium",  # open_medium(): a folder, an ISO 9660 / UDF image or a device, read-only and root-guarded
    "query",  # the C-FIND SCU of reconciliation: worklist and archive
    "reconcile",  # each patient of a medium given its local identity, or held for a person
    "sender",  # the C-STORE SCU: presentation contexts, retries, fallbacks
    "watcher",  # the inbox, mount roots and drives watched for media
]
