"""The YAML configuration, parsed once into frozen, typed objects.

Every error names the file, the line and the key
(``config/medianode.yaml:14 routes[0].profile: 'STD-GEN-BR' is not one of ...``)
and is a :class:`~node.errors.ConfigError` (exit 2). Nothing here calls
``sys.exit`` or opens a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Action = Literal["burn", "store", "reject"]
Group = Literal["study", "patient"]
Kind = Literal["archive", "backup"]


@dataclass(frozen=True)
class TLS:
    """TLS for the Storage SCP (PS3.15 B.1): our certificate and key, the CA that signs callers."""

    certificate: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "MEDIANODE"
    host: str = "127.0.0.1"
    port: int = 11112
    data_dir: Path = Path("./var")
    #: Calling AE titles allowed to associate; empty means any.
    allowed_calling_aets: tuple[str, ...] = ()
    #: Private storage SOP classes accepted besides pynetdicom's storage classes.
    extra_sop_classes: tuple[str, ...] = ()
    #: Receiver processes sharing the port (SO_REUSEPORT).
    workers: int = 2
    #: Concurrent associations per receiver process.
    max_associations: int = 16
    #: C-STORE is refused with Out of Resources (0xA700) below this free space in data_dir.
    min_free_mb: int = 500
    #: Maximum PDU length we receive; 0 means unlimited.
    max_pdu: int = 0
    tls: TLS | None = None


@dataclass(frozen=True)
class Match:
    """What a route matches; an empty tuple matches anything. Values compare exactly (AE titles stripped)."""

    called_aet: tuple[str, ...] = ()
    calling_aet: tuple[str, ...] = ()
    modality: tuple[str, ...] = ()
    sop_class: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    match: Match
    action: Action
    profile: str = "STD-GEN-CD"
    compress: str = "none"
    copies: int = 1
    group: Group = "study"
    label: str | None = None
    kind: Kind = "archive"
    #: Folder the images go to; None means burn.output.
    output: Path | None = None
    #: Where in the file the route was written ("config/medianode.yaml:14"), for logs.
    where: str = ""


@dataclass(frozen=True)
class BurnConfig:
    output: Path = Path("./var/out")
    study_stable_seconds: float = 30.0
    #: Spooled instances are removed this long after their last job succeeded.
    retention_hours: float = 24.0


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class ImportConfig:
    inbox: Path = Path("./var/inbox")
    destination: Destination | None = None


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    burn: BurnConfig = field(default_factory=BurnConfig)
    routes: tuple[Route, ...] = ()
    imports: ImportConfig = field(default_factory=ImportConfig)
    #: The file this came from (for messages and reloads).
    source: Path | None = None

    @property
    def called_aets(self) -> frozenset[str]:
        """Every called AE title an association may use: the node's and each route's."""
        return frozenset({self.node.ae_title, *(t for r in self.routes for t in r.match.called_aet)})
