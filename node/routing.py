"""Routing: which routes an instance records, and which jobs a study makes. Pure functions of the
routes, of what the association and the instance say, and of what each instance recorded.

The rule (README, "Routes"): for each instance the routes are tried in the order of the file; the
first matching ``reject`` refuses it, a matching ``store`` ends the trying, and every matching
``burn`` route before that is recorded with the instance (:func:`record`), as a
:class:`RouteSnapshot`, so that a later reload does not change what it was received under. A study
is burned by the recorded burn route with the lowest position, plus every later recorded one that
says ``also: true`` (:func:`decide`); it is decided when its job is cut, from all its instances,
so the order of arrival cannot change the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from node.config import Action, Group, Match, Route, VolumeKind, output_from_settings, output_settings
from node.syntaxes import Compression

#: What an instance that records no burn route gets: it is kept, and goes with its study.
STORE_ONLY = "[]"

#: The criteria of a route's ``match``, in the order they are tried and explained.
CRITERIA = ("called_aet", "calling_aet", "modality", "sop_class")


@dataclass(frozen=True)
class RouteSnapshot(Route):
    """A route as it was when an instance recorded it, where it stood in the file, and which volume of a
    patient's a job is: every setting a job needs, typed.

    Stored as JSON with each instance (``instances.route``, a list) and each job (``jobs.route``);
    :meth:`from_json` reads it back typed. ``position`` is the route's index in ``routes``;
    ``volume`` is this job's (n, m) of its patient's volumes, set by the scheduler's packing.
    """

    position: int = 0
    volume: tuple[int, int] = field(default=(1, 1))

    @classmethod
    def of(cls, route: Route, position: int) -> RouteSnapshot:
        """The snapshot of ``route``, the ``position``-th of the configuration's routes."""
        return cls(**{f.name: getattr(route, f.name) for f in fields(Route)}, position=position)

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(match={k: list(v) for k, v in asdict(self.match).items() if v},
                 compress=self.compress.as_json(),
                 compress_by_modality={k: v.as_json() for k, v in self.compress_by_modality},
                 output=output_settings(self.output) if self.output is not None else None,
                 viewer=str(self.viewer) if self.viewer else None, volume=list(self.volume),
                 stations=list(self.stations))
        if not self.stations:  # as jobs recorded it before stations could be named
            del d["stations"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RouteSnapshot:
        """Read :meth:`to_json` back (absent keys, as in jobs recorded by earlier versions: the defaults).

        >>> s = RouteSnapshot(Match(("BURN",)), "burn", profile="AUG-GEN-CD", output=Path("/o"), volume=(2, 3))
        >>> RouteSnapshot.from_json(s.to_json()) == s
        True
        """
        return cls.from_dict(_mapping(json.loads(text)))

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> RouteSnapshot:
        default = cls(Match(), "burn")
        by_modality = _mapping(d.get("compress_by_modality") or {})
        volume = d.get("volume") or default.volume
        if not isinstance(volume, (list, tuple)) or len(volume) != 2:
            raise ValueError(f"a route snapshot's volume is not (n, m): {volume!r}")
        output, viewer, pdi, label = d.get("output"), d.get("viewer"), d.get("pdi"), d.get("label")
        criteria = _mapping(d.get("match") or {})
        return cls(
            match=Match(**{c: tuple(str(v) for v in _values(criteria[c])) for c in CRITERIA if c in criteria}),
            action=_ACTIONS[str(d.get("action", default.action))],
            position=int(str(d.get("position", 0))),
            also=bool(d.get("also", False)),
            profile=str(d.get("profile", default.profile)),
            compress=Compression.from_json(d.get("compress")),
            compress_by_modality=tuple((str(k), Compression.from_json(v)) for k, v in by_modality.items()),
            lossy_mammography=bool(d.get("lossy_mammography")),
            bit_reduction=bool(d.get("bit_reduction")),
            new_uids=bool(d.get("new_uids")),
            deidentify=bool(d.get("deidentify")),
            burned_in_annotation=bool(d.get("burned_in_annotation")),
            repair=bool(d.get("repair")),
            copies=int(str(d.get("copies", 1))),
            group=_GROUPS[str(d.get("group", "study"))],
            label=None if label is None else str(label),
            kind=_KINDS[str(d.get("kind", "archive"))],
            output=None if output is None else output_from_settings(output),
            pdi=None if pdi is None else bool(pdi),
            web=bool(d.get("web")),
            viewer=Path(str(viewer)) if viewer else None,
            where=str(d.get("where", "")),
            stations=tuple(str(s) for s in _values(d.get("stations") or [])),
            volume=(int(volume[0]), int(volume[1])),
        )


_ACTIONS: dict[str, Action] = {"burn": "burn", "store": "store", "reject": "reject"}
_GROUPS: dict[str, Group] = {"study": "study", "patient": "patient"}
_KINDS: dict[str, VolumeKind] = {"archive": "archive", "backup": "backup"}


def _values(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"a route snapshot's match criterion is not a list: {value!r}")
    return value


def _mapping(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"a route snapshot is not a JSON object: {value!r}")
    return {str(k): v for k, v in value.items()}


# -- one instance ---------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """How one route fared with one instance: ``failed`` names the first criterion that does not hold
    (``"modality SR is not CT"``), empty when the route matched; ``tried`` is False for the routes
    after the one that ended the trying (a reject or a store)."""

    position: int
    route: Route
    failed: str = ""
    tried: bool = True

    @property
    def matched(self) -> bool:
        return self.tried and not self.failed


def failed_criterion(route: Route, values: Mapping[str, str]) -> str:
    """The first criterion of ``route.match`` that ``values`` does not meet, in words; '' when all hold.

    >>> from node.config import Match
    >>> failed_criterion(Route(Match(modality=("CT", "MR")), "burn"), {"modality": "SR", "called_aet": "X"})
    'modality SR is not CT or MR'
    """
    for key in CRITERIA:
        allowed: tuple[str, ...] = getattr(route.match, key)
        if allowed and values.get(key, "") not in allowed:
            return f"{key} {values.get(key, '') or '(none)'} is not {' or '.join(allowed)}"
    return ""


def trials(routes: Sequence[Route], *, called_aet: str, calling_aet: str, modality: str,
           sop_class: str) -> list[Trial]:
    """Each route tried with one instance, in file order, until a reject or a store matches."""
    values = {"called_aet": called_aet.strip(), "calling_aet": calling_aet.strip(), "modality": modality,
              "sop_class": sop_class}
    out: list[Trial] = []
    ended = False
    for position, route in enumerate(routes):
        if ended:
            out.append(Trial(position, route, tried=False))
            continue
        out.append(Trial(position, route, failed_criterion(route, values)))
        ended = out[-1].matched and route.action != "burn"
    return out


def record(routes: Sequence[Route], *, called_aet: str, calling_aet: str, modality: str,
           sop_class: str) -> tuple[Route | None, str]:
    """What an instance records at receipt: (the reject route refusing it, or None; the JSON list of
    the burn routes it matched, as snapshots, to store with it).

    >>> from node.config import Match
    >>> ct = Route(Match(modality=("CT",)), "burn", profile="STD-GEN-DVD-JPEG")
    >>> burn = Route(Match(called_aet=("BURN",)), "burn")
    >>> refused, text = record([ct, burn], called_aet="BURN", calling_aet="CT1", modality="CT", sop_class="1.2")
    >>> refused, [(s.position, s.profile) for s in snapshots(text)]
    (None, [(0, 'STD-GEN-DVD-JPEG'), (1, 'STD-GEN-CD')])
    >>> record([ct, burn], called_aet="STORE", calling_aet="CT1", modality="SR", sop_class="1.2")
    (None, '[]')
    """
    burns: list[RouteSnapshot] = []
    for trial in trials(routes, called_aet=called_aet, calling_aet=calling_aet, modality=modality,
                        sop_class=sop_class):
        if not trial.matched:
            continue
        if trial.route.action == "reject":
            return trial.route, STORE_ONLY
        if trial.route.action == "burn":
            burns.append(RouteSnapshot.of(trial.route, trial.position))
    return None, recorded(burns)


def recorded(burns: Iterable[RouteSnapshot]) -> str:
    """The JSON an instance stores of the burn routes it matched (:func:`snapshots` reads it back)."""
    return json.dumps([s.as_dict() for s in burns], sort_keys=True)


def snapshots(text: str) -> list[RouteSnapshot]:
    """The burn routes an instance recorded (:func:`record`). An instance indexed by an earlier version
    recorded one route's settings as an object: a burn one counts as the route at position 0."""
    value = json.loads(text)
    if isinstance(value, dict):
        return [RouteSnapshot.from_dict(_mapping(value))] if value.get("action") == "burn" else []
    if not isinstance(value, list):
        raise ValueError(f"an instance's recorded routes are not a JSON list: {text[:80]!r}")
    return [RouteSnapshot.from_dict(_mapping(v)) for v in value]


# -- one study ----------------------------------------------------------------------


def decide(records: Iterable[str]) -> list[RouteSnapshot]:
    """The jobs' routes of a study whose instances recorded ``records`` (oldest first): the burn route
    with the lowest position, then every later one with ``also: true``. Empty: the study is stored only.
    Where instances recorded different snapshots of one position (a reload between them), the latest wins.

    >>> dvd = RouteSnapshot(Match(), "burn", profile="STD-GEN-DVD-JPEG").as_dict()
    >>> cd = RouteSnapshot(Match(), "burn", position=1).as_dict()
    >>> [s.profile for s in decide([json.dumps([cd]), json.dumps([]), json.dumps([dvd, cd])])]
    ['STD-GEN-DVD-JPEG']
    >>> cd_also = RouteSnapshot(Match(), "burn", position=1, also=True).as_dict()
    >>> [s.profile for s in decide([json.dumps([cd_also]), json.dumps([dvd])])]
    ['STD-GEN-DVD-JPEG', 'STD-GEN-CD']
    """
    by_position: dict[int, RouteSnapshot] = {}
    parsed: dict[str, list[RouteSnapshot]] = {}  # a study's instances mostly recorded the same text
    for text in records:
        if text not in parsed:
            parsed[text] = snapshots(text)
        for snapshot in parsed[text]:
            by_position[snapshot.position] = snapshot
    if not by_position:
        return []
    first, *later = sorted(by_position)
    return [by_position[first], *(by_position[p] for p in later if by_position[p].also)]


# -- explaining (``medianode routes explain``, ``config check``) -------------------------------


@dataclass(frozen=True)
class Instance:
    """What routing looks at of one instance, and where it was read from (a path, or the index)."""

    source: str
    study_uid: str
    sop_instance_uid: str
    modality: str
    sop_class: str
    called_aet: str
    calling_aet: str


@dataclass(frozen=True)
class InstanceRouting:
    """How one instance fares with the routes: each route's trial, the reject refusing it (or None),
    the burn routes it records."""

    instance: Instance
    trials: tuple[Trial, ...]
    refused_by: int | None
    recorded: tuple[RouteSnapshot, ...]


@dataclass(frozen=True)
class StudyRouting:
    """The jobs a study would make: one per decided route (none: stored only)."""

    study_uid: str
    instances: int
    jobs: tuple[RouteSnapshot, ...]


def explain(routes: Sequence[Route], instances: Iterable[Instance]) -> tuple[list[InstanceRouting], list[StudyRouting]]:
    """Each instance's trials and records, and each study's decision, as :func:`record` and
    :func:`decide` make them at receipt and when the study's job is cut (refused instances are not stored)."""
    each: list[InstanceRouting] = []
    for inst in instances:
        tried = trials(routes, called_aet=inst.called_aet, calling_aet=inst.calling_aet, modality=inst.modality,
                       sop_class=inst.sop_class)
        refused, text = record(routes, called_aet=inst.called_aet, calling_aet=inst.calling_aet,
                               modality=inst.modality, sop_class=inst.sop_class)
        refused_by = next(t.position for t in tried if t.route is refused) if refused is not None else None
        each.append(InstanceRouting(inst, tuple(tried), refused_by, tuple(snapshots(text))))
    studies: dict[str, list[InstanceRouting]] = {}
    for r in each:
        if r.refused_by is None:
            studies.setdefault(r.instance.study_uid, []).append(r)
    return each, [StudyRouting(uid, len(rs), tuple(decide(recorded(r.recorded) for r in rs)))
                  for uid, rs in studies.items()]


def covers(earlier: Match, later: Match) -> bool:
    """Whether every instance ``later`` matches is matched by ``earlier`` too.

    >>> covers(Match(called_aet=("BURN",)), Match(called_aet=("BURN",), modality=("CT",)))
    True
    >>> covers(Match(modality=("CT",)), Match(called_aet=("BURN",)))
    False
    """
    for key in CRITERIA:
        wide: tuple[str, ...] = getattr(earlier, key)
        narrow: tuple[str, ...] = getattr(later, key)
        if wide and not (narrow and set(narrow) <= set(wide)):
            return False
    return True


def unreachable(routes: Sequence[Route]) -> list[tuple[int, int, str]]:
    """(route, earlier route, why) for each route no instance can reach: its match is covered by an
    earlier store or reject route's (which ends the trying), or it is a burn route without ``also``
    covered by an earlier burn route's (which every study it would burn takes first)."""
    found = []
    for i, route in enumerate(routes):
        for j, before in enumerate(routes[:i]):
            if not covers(before.match, route.match):
                continue
            if before.action != "burn":
                found.append((i, j, f"every instance it matches is {'refused' if before.action == 'reject' else 'stored'}"
                                    f" by routes[{j}] ({before.where or 'above'}) first"))
                break
            if route.action == "burn" and not route.also:
                found.append((i, j, f"every study it would burn is burned by routes[{j}] ({before.where or 'above'}) "
                                    f"instead (add also: true to burn it by both)"))
                break
    return found
