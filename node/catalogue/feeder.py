"""The task ``serve`` runs while the station has a catalogue: drain the outbox, take the users of the
catalogue (one set for every station), beat the heartbeat.

It has its own thread, its own index connection and its own catalogue connection, and nothing waits for it:
when PostgreSQL is away, changes wait in the outbox (``status`` says how many, since when), the attempt is
retried every :data:`RETRY_S`, and the first success pushes what waited. The outage is logged once when it
starts and once when it ends, not at every attempt.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from node.catalogue import link, mirror, schema
from node.config import NodeConfig
from node.index import Index
from node.words import counted

logger = logging.getLogger(__name__)

#: Seconds between drains when the outbox is empty (a change reaches the catalogue within about this).
POLL_S = 0.5
#: Seconds between attempts while the catalogue is unreachable.
RETRY_S = 2.0
#: Seconds between heartbeats.
HEARTBEAT_S = 5.0


class Feeder:
    """Drain ``data_dir/index.sqlite``'s outbox into ``node.catalogue`` until ``stop`` is set."""

    def __init__(self, index_path: Path, node: NodeConfig, stop: threading.Event, *, started: float) -> None:
        self.index_path, self.node, self.stop, self.started = index_path, node, stop, started
        self._down_since: float | None = None

    def run(self) -> None:
        index = Index(self.index_path)
        db: link.Connection | None = None
        beat = 0.0
        try:
            while not self.stop.is_set():
                try:
                    if db is None:
                        db = link.connect(self.node, autocommit=True)
                        schema.migrate(db)
                    if time.monotonic() - beat >= HEARTBEAT_S:  # first: alive, whatever the feed's trouble
                        self._beat(index, db)
                        beat = time.monotonic()
                    pushed = mirror.drain(index, db, self.node.station_name)
                    if not pushed:
                        mirror.adopt_users(index, db)
                    self._up()
                    if pushed:
                        continue  # more may wait: no pause while catching up
                    wait = POLL_S
                except (link.CatalogueUnreachable, link.Error) as exc:
                    self._down(index, exc)
                    if db is not None:
                        db.close()
                        db = None
                    wait = RETRY_S
                except sqlite3.OperationalError as exc:  # the index busy beyond its timeout: the next round
                    logger.error("catalogue feed: the index %s: %s", self.index_path, exc)
                    wait = RETRY_S
                self.stop.wait(wait)
        finally:
            if db is not None:
                db.close()
            index.close()

    def _beat(self, index: Index, db: link.Connection) -> None:
        """This station is alive: its row in ``stations``, on the database's clock, with how far behind it is."""
        state = index.feed_state() or {}
        db.execute("INSERT INTO stations (name, ae_title, started, heartbeat, behind, behind_since) "
                   "VALUES (%s, %s, %s, now(), %s, %s) ON CONFLICT (name) DO UPDATE SET ae_title = EXCLUDED.ae_title, "
                   "started = EXCLUDED.started, heartbeat = now(), behind = EXCLUDED.behind, "
                   "behind_since = EXCLUDED.behind_since",
                   (self.node.station_name, self.node.ae_title, self.started, state.get("behind", 0),
                    state.get("oldest")))

    def _down(self, index: Index, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, link.CatalogueUnreachable) else link.reason(exc)
        index.outbox_failed(reason, now=time.time())
        if self._down_since is None:
            self._down_since = time.time()
            logger.warning("catalogue %s unreachable, changes wait in the outbox: %s", link.where(self.node), reason)

    def _up(self) -> None:
        if self._down_since is not None:
            logger.info("catalogue %s reachable again after %.0f s", link.where(self.node),
                        time.time() - self._down_since)
            self._down_since = None


def start(index_path: Path, node: NodeConfig, stop: threading.Event, *, started: float) -> threading.Thread:
    """The feeder in its own (daemon) thread; it ends soon after ``stop`` is set."""
    thread = threading.Thread(target=Feeder(index_path, node, stop, started=started).run,
                              name="medianode-catalogue", daemon=True)
    thread.start()
    return thread


def migrate(node: NodeConfig) -> list[int]:
    """``medianode catalogue migrate``: bring the catalogue's schema up to date; return the versions applied."""
    with link.connect(node, autocommit=True) as db:
        return schema.migrate(db)


def copy_history(index: Index, node: NodeConfig) -> int:
    """``medianode catalogue copy``: queue the station's whole history (every study, job, volume, import,
    media request and user its index holds) and push it, with whatever waited; return how many records.
    Run twice, or beside a running ``serve``, it changes nothing twice: each record is an upsert."""
    index.feed(node.station_name, history=True)
    total = 0
    with link.connect(node, autocommit=True) as db:
        schema.migrate(db)
        try:
            while pushed := mirror.drain(index, db, node.station_name):
                total += pushed
        except link.Error as exc:
            raise link.CatalogueUnreachable(f"the catalogue {link.where(node)} was lost after "
                                            f"{counted(total, 'record')} "
                                            f"(the rest wait in the outbox; run it again): {link.reason(exc)}") from None
    return total
