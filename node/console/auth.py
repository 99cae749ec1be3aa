"""Who is asking: a session cookie for the pages, a Bearer token for the API; and the CSRF token every
state-changing form carries.

The session cookie is HttpOnly and SameSite=Strict (Secure under TLS); the session itself is
:mod:`node.users`' (stored hashed, 30 minutes idle). A form's CSRF token is an HMAC, under the
console's key, of the session cookie, or before sign-in of a random ``medianode_form`` cookie: a
page of another site can neither read it nor make it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from node import users
from node.console.state import Console

SESSION_COOKIE = "medianode_session"
FORM_COOKIE = "medianode_form"
#: A session unused this long is over (seconds).
IDLE_S = 30 * 60.0


def session_user(console: Console, request: Request) -> users.User | None:
    """The user of the request's session cookie, or None (none, expired, or the user was removed)."""
    session = request.cookies.get(SESSION_COOKIE)
    return users.session_user(console.index(), session, idle_s=IDLE_S) if session else None


def token_user(console: Console, request: Request) -> users.User | None:
    """The user of the request's ``Authorization: Bearer TOKEN``, or None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return users.user_for_token(console.index(), token.strip())


def csrf_token(console: Console, request: Request) -> str:
    """The CSRF token of the request's forms ('' when it has neither cookie yet: see :func:`form_cookie`)."""
    basis = request.cookies.get(SESSION_COOKIE) or request.cookies.get(FORM_COOKIE) or ""
    return token_for(console, basis) if basis else ""


def csrf_ok(console: Console, request: Request, sent: str) -> bool:
    """Whether a form's token is the one its cookies make."""
    expected = csrf_token(console, request)
    return bool(expected) and hmac.compare_digest(expected, sent)


def set_cookie(console: Console, response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=console.secure)


def form_basis(request: Request) -> tuple[str, bool]:
    """What a sign-in form's CSRF token is made from: the visitor's cookie, or a new random value
    (True: to be set as the ``medianode_form`` cookie)."""
    value = request.cookies.get(SESSION_COOKIE) or request.cookies.get(FORM_COOKIE)
    return (value, False) if value else (secrets.token_urlsafe(32), True)


def token_for(console: Console, basis: str) -> str:
    """The CSRF token forms carry for a cookie value ``basis``."""
    return hmac.new(console.key, basis.encode(), hashlib.sha256).hexdigest()
