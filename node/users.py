"""The people who use the console and the API: names, roles, passwords, API tokens, sessions,
the slow-down and lock-out of failed sign-ins, and the one-time sign-in link of a node's first start.

Passwords are argon2id hashes (argon2-cffi), verified only at sign-in. API tokens
(``<id>.<secret>``), session ids and sign-in links are random (:mod:`secrets`) and
only their SHA-256 is stored: checking one costs a hash and an index lookup, not a
password hash, and a copy of the index lets no one in. Secrets are compared in
constant time. Nothing here logs a password, a token or a session id.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
import time
from typing import NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from node import audit
from node.config import Config
from node.errors import NodeError, UsageError
from node.index import Index

logger = logging.getLogger(__name__)

#: The roles, each with the rights of the ones before it: viewer reads; clerk also retries, cancels
#: and re-burns; admin also manages users and the configuration.
ROLES = ("viewer", "clerk", "admin")

#: Failed sign-ins of a name that cost nothing; each one after waits twice as long as the one before,
#: from :data:`LOCK_AFTER` on the name is locked for :data:`LOCK_S`. Failures are forgotten
#: :data:`FORGET_S` after the last one, and by a successful sign-in.
FREE_FAILURES = 3
LOCK_AFTER = 10
LOCK_S = 15 * 60.0
FORGET_S = 60 * 60.0

#: How long the first start's sign-in link is valid.
LINK_S = 15 * 60.0

#: A token's last use is written at most this often (an API call reads, it does not write each time).
TOKEN_TOUCH_S = 60.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class User(NamedTuple):
    name: str
    role: str


class SignInLocked(NodeError):
    """Sign-ins of a name are refused for ``seconds`` more after repeated failures."""

    def __init__(self, name: str, seconds: float) -> None:
        self.seconds = max(1, int(seconds + 0.999))
        super().__init__(f"too many failed sign-ins as {name!r}: try again in {self.seconds} s")


def may(user: User, role: str) -> bool:
    """Whether ``user`` has the rights of ``role``.

    >>> may(User("ann", "clerk"), "viewer"), may(User("ann", "clerk"), "admin")
    (True, False)
    """
    return ROLES.index(user.role) >= ROLES.index(_role(role))


def add(index: Index, name: str, role: str, password: str) -> User:
    """Add a user; :class:`UsageError` for a bad or taken name, an unknown role, an empty password."""
    _check_name(name)
    _role(role)
    if not index.add_user(name, role, _hash(password), now=time.time()):
        raise UsageError(f"user {name!r} exists")
    logger.info("user %s added, role %s", name, role)
    return User(name, role)


def remove(index: Index, name: str) -> None:
    """Remove a user: its sessions end and its tokens stop working at once."""
    if not index.remove_user(name):
        raise UsageError(f"no user {name!r}")
    logger.info("user %s removed", name)


def passwd(index: Index, name: str, password: str) -> None:
    """Set a user's password; the user's open sessions end (tokens keep working)."""
    if not index.set_password(name, _hash(password)):
        raise UsageError(f"no user {name!r}")
    logger.info("user %s: password changed", name)


def list_users(index: Index) -> list[User]:
    return [User(name, role) for name, role in index.users()]


def authenticate(index: Index, name: str, password: str, *, now: float | None = None) -> User | None:
    """The user when the password is right, else None.

    A locked name raises :class:`SignInLocked` without looking at the password.
    A failure (unknown names too, which cost the same argon2 verification) counts
    against the name: after :data:`FREE_FAILURES` each attempt must wait longer,
    after :data:`LOCK_AFTER` the name is locked for :data:`LOCK_S`. The caller
    audits the outcome (it knows where the attempt came from).
    """
    now = time.time() if now is None else now
    until = index.locked_until(name)
    if until > now:
        raise SignInLocked(name, until - now)
    found = index.user(name)
    role, stored = found if found else ("", _dummy_hash())
    try:
        _hasher().verify(stored, password)
        ok = found is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        failures, until = index.count_sign_in_failure(name, now=now, forget_before=now - FORGET_S, lock=_lock_s)
        logger.warning("sign-in as %s failed (%d in a row)%s", name, failures,
                       f", locked for {until - now:.0f} s" if until > now else "")
        return None
    index.clear_sign_in_failures(name)
    if _hasher().check_needs_rehash(stored):
        index.rehash_password(name, stored, _hasher().hash(password))
    return User(name, role)


def new_token(index: Index, name: str) -> tuple[str, str]:
    """A new API token for a user: (its id, the token ``<id>.<secret>``). Only the secret's SHA-256 is kept:
    the token is shown once."""
    _user(index, name)
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    index.add_token(token_id, name, _sha256(secret), now=time.time())
    logger.info("user %s: token %s created", name, token_id)
    return token_id, f"{token_id}.{secret}"


def tokens(index: Index, name: str) -> list[dict[str, object]]:
    """A user's tokens: id, created and last used (seconds since the epoch; None when never used)."""
    _user(index, name)
    return [{"id": i, "created": created, "last_used": used} for i, created, used in index.user_tokens(name)]


def revoke(index: Index, name: str, token_id: str) -> None:
    if not index.remove_token(name, token_id):
        _user(index, name)
        raise UsageError(f"user {name!r} has no token {token_id!r}")
    logger.info("user %s: token %s revoked", name, token_id)


def user_for_token(index: Index, token: str, *, now: float | None = None) -> User | None:
    """The user of a valid API token, or None (malformed, revoked, or its user removed)."""
    token_id, _, secret = token.partition(".")
    found = index.token(token_id) if secret else None
    expected = found[2] if found else _sha256("")
    if not hmac.compare_digest(_sha256(secret), expected) or found is None:
        return None
    name, role, _, last_used = found
    now = time.time() if now is None else now
    if last_used is None or now - last_used >= TOKEN_TOUCH_S:
        index.touch_token(token_id, now=now)
    return User(name, role)


def open_session(index: Index, user: User, *, now: float | None = None) -> str:
    """A new session of a signed-in user; its id goes in the cookie, its SHA-256 in the index."""
    session_id = secrets.token_urlsafe(32)
    index.add_session(_sha256(session_id), user.name, now=time.time() if now is None else now)
    return session_id


def session_user(index: Index, session_id: str, *, idle_s: float = 1800, now: float | None = None) -> User | None:
    """The user of a session, its idle time starting again; None when unknown, idle longer than ``idle_s``
    (it is then ended) or its user removed.

    The lookup is by the id's SHA-256, so its timing tells nothing about the id.
    """
    now = time.time() if now is None else now
    key = _sha256(session_id)
    found = index.session(key)
    if found is None:
        return None
    name, role, last_seen = found
    if now - last_seen > idle_s:
        index.remove_session(key)
        return None
    index.touch_session(key, now=now)
    return User(name, role)


def close_session(index: Index, session_id: str) -> None:
    index.remove_session(_sha256(session_id))


def first_start_link(index: Index, config: Config, *, now: float | None = None) -> str | None:
    """When the node has no users: the secret of a one-time sign-in link for the first admin, valid for
    :data:`LINK_S` and usable once (an earlier one stops working); None when users exist.

    The caller shows it to the person starting the node, never in the log; the audit log records
    only that one was made.
    """
    if index.users():
        return None
    now = time.time() if now is None else now
    secret = secrets.token_urlsafe(32)
    index.replace_sign_in_link(_sha256(secret), now=now, expires=now + LINK_S)
    audit.append(config, "sign-in-link-created", valid_s=LINK_S)
    return secret


def redeem_link(index: Index, secret: str, *, now: float | None = None) -> bool:
    """True once for the sign-in link's secret, within :data:`LINK_S` of its making; False after."""
    return index.use_sign_in_link(_sha256(secret), now=time.time() if now is None else now)


def _lock_s(failures: int) -> float:
    """How long a name waits after its ``failures``-th failure in a row.

    >>> [_lock_s(n) for n in (1, 3, 4, 5, 9, 10)]
    [0.0, 0.0, 2.0, 4.0, 64.0, 900.0]
    """
    if failures >= LOCK_AFTER:
        return LOCK_S
    return 0.0 if failures <= FREE_FAILURES else float(2 ** (failures - FREE_FAILURES))


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad user name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-', "
                         f"starting with a letter or digit")


def _role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def _user(index: Index, name: str) -> None:
    if index.user(name) is None:
        raise UsageError(f"no user {name!r}")


def _hash(password: str) -> str:
    if not password:
        raise UsageError("the password is empty")
    return _hasher().hash(password)


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id with argon2-cffi's defaults (RFC 9106's second recommended option)."""
    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """What an unknown name's password is verified against, so that it costs as long as a known one's."""
    return _hasher().hash(secrets.token_urlsafe(16))


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
