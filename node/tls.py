"""TLS contexts for every connection the node makes or accepts, one profile for all.

PS3.15 B.9 (BCP 195 TLS Secure Transport Connection Profile): TLS 1.2 or later, and under
TLS 1.2 only the AEAD suites with forward secrecy that BCP 195 (RFC 9325 4.2) recommends;
TLS 1.3's suites all qualify. The server (our Storage SCP) and the clients (the import SCU,
syslog over TLS, later SCUs) are built here so that no connection is weaker than another.
"""

from __future__ import annotations

import ipaddress
import re
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


def _no_password() -> bytes:
    """An encrypted key fails to load instead of OpenSSL prompting on a terminal a service has not got."""
    return b""


def server_context(certificate: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """Our side of an accepted connection: our certificate; callers' certificates required
    (and verified against ``ca``) when a CA is given."""
    ctx = _profile(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca) if ca else None))
    ctx.load_cert_chain(str(certificate), str(key), password=_no_password)
    ctx.verify_mode = ssl.CERT_REQUIRED if ca else ssl.CERT_NONE
    return ctx


def client_context(ca: Path, certificate: Path | None = None, key: Path | None = None, *,
                   host: str | None = None) -> ssl.SSLContext:
    """Our side of a connection we open to ``host``: the peer's certificate verified against ``ca``
    (never the system's store: a hospital's PKI is its own), and our certificate when the peer
    asks for one.

    When ``host`` is a name, the peer's certificate must also carry it (subjectAltName, as
    RFC 9525 and BCP 195 ask), so that a certificate the same CA gave another device cannot stand
    in for this one. When it is an address, the chain alone authenticates the peer (PS3.15 B.9):
    hospital PKIs seldom put addresses in certificates. Pass the same ``host`` to the socket's
    ``server_hostname``. Raises :class:`ssl.SSLError` or :class:`OSError` for a file that cannot
    be used (not PEM, a key that does not match its certificate).
    """
    ctx = _profile(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca)))
    ctx.check_hostname = host is not None and not is_address(host)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if certificate is not None:
        ctx.load_cert_chain(str(certificate), str(key) if key else None, password=_no_password)
    return ctx


def is_address(host: str) -> bool:
    """An IPv4 or IPv6 address, not a name.

    >>> is_address("127.0.0.1"), is_address("::1"), is_address("pacs.example.org")
    (True, True, False)
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


#: What a handshake's OpenSSL reason means here, where the bare reason would puzzle an administrator.
_NO_COMMON_PROFILE = "no TLS version or cipher suite in common: we offer TLS 1.2 or later with BCP 195's suites"
_HINTS = {
    "SSLV3_ALERT_HANDSHAKE_FAILURE": _NO_COMMON_PROFILE,
    "TLSV1_ALERT_PROTOCOL_VERSION": _NO_COMMON_PROFILE,
    "UNSUPPORTED_PROTOCOL": _NO_COMMON_PROFILE,
    "NO_CIPHERS_AVAILABLE": _NO_COMMON_PROFILE,
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS on this port",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires our certificate (tls.certificate, tls.key)",
}


def failure(exc: OSError) -> str:
    """Why TLS failed (a handshake, a file that could not be loaded), in one line, without OpenSSL's
    library and source location.

    >>> failure(ssl.SSLError(1, "[SSL: PEM_LIB] PEM lib (_ssl.c:3926)"))
    'PEM lib'
    """
    if not isinstance(exc, ssl.SSLError):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message.rstrip('.')}"
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    text = re.sub(r"^\[\w+(: \w+)?\] | \(_ssl\.c:\d+\)$", "", text).strip() or type(exc).__name__
    hint = _HINTS.get(getattr(exc, "reason", None) or "")
    return f"{text} ({hint})" if hint else text
