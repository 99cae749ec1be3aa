"""Who may associate: the calling AE title, and the address it calls from.

``node.allowed_peers`` pairs calling AE titles with the addresses and networks
each may come from; ``node.allowed_calling_aets`` lists titles taken from any
address. A title in ``allowed_peers`` is accepted only from its networks; a
title in ``allowed_calling_aets`` from anywhere; when either list is set, every
other title is refused; when neither is, every title is accepted. A refusal is
an A-ASSOCIATE-RJ, rejected-permanent, calling AE title not recognised (PS3.8
9.3.4), by :func:`node.receive.scp.handle_requested`.

An AE title is only a claim, and so is an address on a network that does not
filter spoofed sources; together they narrow who may call, TLS client
certificates (``node.tls.ca``) prove it.

>>> from node.config import parse_config
>>> node = parse_config("node: {allowed_peers: {CT1: 10.0.0.0/24}, allowed_calling_aets: PACS}", source="x").node
>>> refusal(node, "CT1", "10.0.0.7") is None, refusal(node, "PACS", "192.0.2.1") is None
(True, True)
>>> refusal(node, "CT1", "10.0.1.7")
'wrong address: CT1 may call only from 10.0.0.0/24 (node.allowed_peers)'
>>> refusal(node, "CT2", "10.0.0.7")
'calling AE title not recognised'
"""

from __future__ import annotations

import ipaddress

from node.config import NodeConfig


def refusal(node: NodeConfig, calling: str, address: str) -> str | None:
    """Why ``calling`` may not associate from ``address``, or None when it may."""
    if not node.allowed_peers and not node.allowed_calling_aets:
        return None
    networks = dict(node.allowed_peers).get(calling)
    if networks is None:
        return None if calling in node.allowed_calling_aets else "calling AE title not recognised"
    peer = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) names no network
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:  # a dual-stack socket's IPv4 caller
        peer = peer.ipv4_mapped
    if any(peer in network for network in networks):
        return None
    return f"wrong address: {calling} may call only from {', '.join(map(str, networks))} (node.allowed_peers)"
