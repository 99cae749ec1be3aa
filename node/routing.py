"""Routing: which route an instance takes. A pure function of what the association and the
instance say; first match wins (DESIGN.md, "Configuration keys")."""

from __future__ import annotations

import json
from collections.abc import Sequence

from node.config import Route, output_settings

#: What an instance that no route matches gets: it is kept, and nothing is burned.
STORE_ONLY = '{"action": "store"}'


def match_route(routes: Sequence[Route], *, called_aet: str, calling_aet: str, modality: str, sop_class: str) -> Route | None:
    """The first route whose every non-empty criterion holds, or None.

    >>> from node.config import Match, Route
    >>> burn = Route(Match(called_aet=("BURN",)), "burn")
    >>> match_route([burn], called_aet="BURN", calling_aet="CT1", modality="CT", sop_class="1.2").action
    'burn'
    >>> match_route([burn], called_aet="STORE", calling_aet="CT1", modality="CT", sop_class="1.2") is None
    True
    """
    values = {"called_aet": called_aet.strip(), "calling_aet": calling_aet.strip(), "modality": modality, "sop_class": sop_class}
    for route in routes:
        m = route.match
        criteria = {"called_aet": m.called_aet, "calling_aet": m.calling_aet, "modality": m.modality, "sop_class": m.sop_class}
        if all(not allowed or values[key] in allowed for key, allowed in criteria.items()):
            return route
    return None


def settings(route: Route | None) -> str:
    """The route as recorded with each instance (JSON): a later config reload does not change it."""
    if route is None:
        return STORE_ONLY
    return json.dumps(
        {
            "action": route.action,
            "profile": route.profile,
            "compress": route.compress,
            "compress_by_modality": dict(route.compress_by_modality),
            "lossy_mammography": route.lossy_mammography,
            "bit_reduction": route.bit_reduction,
            "new_uids": route.new_uids,
            "deidentify": route.deidentify,
            "burned_in_annotation": route.burned_in_annotation,
            "copies": route.copies,
            "group": route.group,
            "label": route.label,
            "kind": route.kind,
            "output": output_settings(route.output) if route.output else None,
            "pdi": route.pdi,
            "web": route.web,
            "viewer": str(route.viewer) if route.viewer else None,
            "where": route.where,
        },
        sort_keys=True,
    )
