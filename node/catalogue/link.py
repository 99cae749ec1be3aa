"""The connection to the catalogue: ``node.catalogue`` (a URL without a password) and the password, read from
``node.catalogue_password_file`` when it is set, else found by libpq itself (``PGPASSWORD``, ``PGPASSFILE``,
``~/.pgpass``). Every failure is a :class:`CatalogueUnreachable` whose message names the server, never the
password."""

from __future__ import annotations

from typing import Any

import psycopg

from node.config import NodeConfig
from node.errors import NodeError

#: Seconds a connection attempt may take: the feeder retries later, a command says so.
CONNECT_TIMEOUT_S = 5

Connection = psycopg.Connection[Any]
#: What a lost or refused connection raises in the middle of a transaction.
Error = psycopg.Error


class CatalogueUnreachable(NodeError):
    """The catalogue cannot be reached or refused us (exit 1: the station's own data is as it was)."""


def where(node: NodeConfig) -> str:
    """The catalogue for messages: host, port and database, never a password."""
    info = psycopg.conninfo.conninfo_to_dict(node.catalogue or "")
    return f"{info.get('host', '?')}:{info.get('port', 5432)}/{info.get('dbname', '?')}"


def connect(node: NodeConfig, *, autocommit: bool = False) -> Connection:
    """A new connection to ``node.catalogue``."""
    assert node.catalogue is not None, "the station has no catalogue"
    extra: dict[str, Any] = {}
    if node.catalogue_password_file is not None:
        try:
            extra["password"] = node.catalogue_password_file.read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise CatalogueUnreachable(f"node.catalogue_password_file {node.catalogue_password_file}: "
                                       f"cannot be read: {getattr(exc, 'strerror', None) or 'it is empty'}") from None
    try:
        return psycopg.connect(node.catalogue, connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit,
                               application_name=f"medianode {node.station_name}", **extra)
    except psycopg.Error as exc:
        raise CatalogueUnreachable(f"the catalogue {where(node)} cannot be reached: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    """The first line of a database error, as a log or a status shows it."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
