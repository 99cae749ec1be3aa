"""The whole catalogue as ``status``, ``jobs``, ``volumes`` and the console show it: every station's rows,
each with its station, and the stations themselves, alive or down since when.

A station is down when its heartbeat (:data:`node.catalogue.feeder.HEARTBEAT_S`) is older than
:data:`DOWN_AFTER_S`, judged on the database's clock. Reads use a short connection timeout: a command
that cannot reach the catalogue falls back to the station's own index and says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from node.catalogue import link
from node.config import NodeConfig
from node.index import Job, Volume, date_range, fold, like

#: Seconds without a heartbeat after which a station counts as down (six beats missed).
DOWN_AFTER_S = 30.0


@contextmanager
def reading(node: NodeConfig) -> Iterator[link.Connection]:
    """A connection for reading the catalogue; any failure is a :class:`link.CatalogueUnreachable`."""
    db = link.connect(node, autocommit=True)
    try:
        yield db
    except link.Error as exc:
        raise link.CatalogueUnreachable(f"the catalogue {link.where(node)} failed: {link.reason(exc)}") from None
    finally:
        db.close()


def stations(db: link.Connection) -> list[dict[str, Any]]:
    """Every station that ever beat: name, AE title, last heartbeat (epoch), whether it is up, changes behind."""
    rows = db.execute("SELECT name, ae_title, extract(epoch FROM heartbeat)::float8, "
                      "extract(epoch FROM now() - heartbeat)::float8, behind, behind_since FROM stations ORDER BY name")
    return [{"station": name, "ae_title": aet, "heartbeat": beat, "up": age <= DOWN_AFTER_S, "silent_s": round(age),
             "behind": behind, "behind_since": since} for name, aet, beat, age, behind, since in rows]


def waiting(db: link.Connection) -> list[dict[str, Any]]:
    """Jobs of every station waiting on their output (a blank disc, the robot): station, job, since, what for."""
    rows = db.execute("SELECT station, id, waiting_since, waiting, waiting_media FROM jobs WHERE waiting IS NOT NULL "
                      "AND state IN ('building', 'built', 'delivering') ORDER BY waiting_since")
    return [{"station": s, "id": i, "since": since, "message": m, "media": bool(media)} for s, i, since, m, media in rows]


def jobs(db: link.Connection, *, limit: int = 100) -> list[tuple[str, Job]]:
    """The newest jobs of every station, newest first."""
    rows = db.execute("SELECT station, id, route, state, created, started, finished, attempts, error, late FROM jobs "
                      "ORDER BY created DESC, station, id DESC LIMIT %s", (limit,))
    return [(r[0], Job(r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]))) for r in rows]


def volumes(db: link.Connection, *, study: str | None = None, patient: str | None = None, name: str = "",
            label: str = "", date: str = "", accession: str = "", newest: int = 0) -> list[tuple[str, Volume]]:
    """The volumes of every station, filtered as :meth:`node.index.Index.volumes` and ``find_volumes`` filter
    (``name``: a patient name holding it, case and carets ignored; ``label``: a label holding it), oldest first,
    or the ``newest`` of them newest first."""
    where: list[str] = []
    args: list[object] = []
    inner = ("(station, label) IN (SELECT v.station, v.label FROM volume_studies v JOIN studies s "
             "ON s.station = v.station AND s.study_uid = v.study_uid WHERE ")
    for column, value in (("study_uid", study), ("patient_id", patient)):
        if value and value.strip():
            where.append(f"(station, label) IN (SELECT station, label FROM volume_studies WHERE {column} = %s)")
            args.append(value.strip())
    if fold(name):
        where.append("(station, label) IN (SELECT station, label FROM volume_studies WHERE "
                     r"""btrim(regexp_replace(lower(translate(patient_name, '^', ' ')), '\s+', ' ', 'g')) """
                     "LIKE %s ESCAPE '\\')")
        args.append(f"%{like(fold(name))}%")
    if label.strip():
        where.append("label LIKE %s ESCAPE '\\'")
        args.append(f"%{like(label.strip().upper())}%")
    if date.strip():
        first, last = date_range(date)
        terms = [t for t, v in (("s.study_date >= %s", first), ("s.study_date <= %s", last)) if v]
        where.append(inner + f"s.study_date <> '' AND {' AND '.join(terms)})")
        args += [v for v in (first, last) if v]
    if accession.strip():
        where.append(inner + "s.accession_number = %s)")
        args.append(accession.strip())
    order = " ORDER BY created DESC, station LIMIT %s" if newest else " ORDER BY created, station"
    rows = db.execute(("SELECT station, label, job_id, kind, created, copies, paths, bytes, superseded_by, addendum_of, "
                       "label_record FROM volumes" + (" WHERE " + " AND ".join(where) if where else "")
                       + order).encode(), [*args, newest] if newest else args).fetchall()
    found = []
    for station, label_, job_id, kind, created, copies, paths, size, superseded, addendum, record in rows:
        studies = db.execute("SELECT v.study_uid, v.patient_id, v.patient_name, COALESCE(s.study_date, ''), "
                             "COALESCE(s.accession_number, '') FROM volume_studies v LEFT JOIN studies s "
                             "ON s.station = v.station AND s.study_uid = v.study_uid WHERE v.station = %s "
                             "AND v.label = %s ORDER BY v.study_uid", (station, label_)).fetchall()
        found.append((station, Volume(label_, job_id, kind, created, copies, json.loads(paths), size, superseded,
                                      [(u, p, n) for u, p, n, _, _ in studies], addendum,
                                      study_keys={u: (d, a) for u, _, _, d, a in studies},
                                      label_record=json.loads(record) if record else None)))
    return found
