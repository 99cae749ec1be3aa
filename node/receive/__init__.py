"""Receive (the DIGATE role): the Storage SCP in receiver processes -> spool -> index.

The front door: a module outside this room imports only the modules named in
``__all__``. The door names modules, not names, and imports nothing itself, so
pynetdicom loads only where a receiver runs.
"""

__all__ = [
    "instance",
    "mcm",  # the Media Creation Management SCP's requests (PS3.4 Annex S)  # what the receiver reads of an instance; re-indexing the spool at start-up
    "scp",  # the AE, its presentation contexts and handlers
    "spool",  # durable placement of received files
    "workers",  # the receiver processes sharing one port
]
