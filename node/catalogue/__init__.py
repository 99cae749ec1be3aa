"""The catalogue several stations share: one PostgreSQL database, fed by each station's outbox.

A station keeps its SQLite index for everything a C-STORE acknowledgement needs; what the stations share
(studies, jobs, volumes, imports, media requests, users) reaches the catalogue through the index's outbox
(:data:`node.index._VERSION_9`), which :mod:`node.catalogue.feeder` drains while PostgreSQL answers. An
outage delays the catalogue and nothing else; what waited is pushed when the database is back.

- :mod:`~node.catalogue.link`: the connection (``node.catalogue``, its password file), the only user of psycopg.
- :mod:`~node.catalogue.schema`: the catalogue's versioned schema, migrated under an advisory lock.
- :mod:`~node.catalogue.mirror`: what each outbox kind is in SQLite and in the catalogue, and one drain.
- :mod:`~node.catalogue.claims`: jobs several stations may build: claims, leases, fencing tokens.
- :mod:`~node.catalogue.shared`: ``serve``'s builder with a shared spool: offers, claims, fenced publication.
- :mod:`~node.catalogue.feeder`: the drain loop ``serve`` runs, and the station's heartbeat.
- :mod:`~node.catalogue.views`: the whole catalogue as ``status``, ``jobs`` and ``volumes`` list it.
"""

__all__ = ["claims", "feeder", "link", "mirror", "schema", "shared", "views"]
