"""TLS contexts for every connection the node makes or accepts, one profile for all.

PS3.15 B.9 (BCP 195 TLS Secure Transport Connection Profile): TLS 1.2 or later, and under
TLS 1.2 only the AEAD suites with forward secrecy that BCP 195 (RFC 9325 4.2) recommends;
TLS 1.3's suites all qualify. The server (our Storage SCP) and the clients (the import SCU,
syslog over TLS, later SCUs) are built here so that no connection is weaker than another.
"""

from __future__ import annotations

import ssl
from pathlib import Path

#: RFC 9325 4.2: the TLS 1.2 cipher suites BCP 195 recommends, by their OpenSSL names.
BCP195_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
))


def _profile(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    return ctx


def server_context(certificate: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """Our side of an accepted connection: our certificate; callers' certificates required
    (and verified against ``ca``) when a CA is given."""
    ctx = _profile(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca) if ca else None))
    ctx.load_cert_chain(str(certificate), str(key))
    ctx.verify_mode = ssl.CERT_REQUIRED if ca else ssl.CERT_NONE
    return ctx


def client_context(ca: Path, certificate: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Our side of a connection we open: the peer's certificate verified against ``ca`` (never
    the system's store: a hospital's PKI is its own), and our certificate when the peer asks
    for one. Host names are not checked: DICOM peers are configured by address, and PS3.15 B.9
    authenticates the peer by its certificate's chain."""
    ctx = _profile(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca)))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    if certificate is not None:
        ctx.load_cert_chain(str(certificate), str(key) if key else None)
    return ctx
