"""Signing in and out, and the first start's one-time link that makes the first admin.

Sign-in is ``POST /login`` with ``username``, ``password`` and the form's CSRF token; success opens a
session (:func:`node.users.open_session`) in an HttpOnly, SameSite=Strict cookie. Failures are
answered alike whatever was wrong, slowed down and then locked by :func:`node.users.authenticate`,
and audited; passwords are never logged.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from node import actions, audit, users
from node.console import auth
from node.console.state import Console
from node.console.web import read_form, render
from node.errors import NodeError


def _client(request: Request) -> str | None:
    """The address the browser came from, for the audit trail."""
    return request.client.host if request.client else None


def _local(target: str) -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await read_form(request) if request.method == "POST" else {}
    return await run_in_threadpool(_login, console, request, form)


def _login(console: Console, request: Request, form: dict[str, str]) -> Response:
    target = _local(form.get("next") or request.query_params.get("next", "/"))
    if request.method == "GET":
        if auth.session_user(console, request) is not None:
            return RedirectResponse(target, status_code=303)
        return _form(console, request, "login.html", next=target)
    if not auth.csrf_ok(console, request, form.get("csrf", "")):
        return _form(console, request, "login.html", status=403, next=target,
                     error="The sign-in form expired; please try again.")
    name = form.get("username", "").strip()
    try:
        user = users.authenticate(console.index(), name, form.get("password", ""))
    except NodeError as exc:  # locked for a while after repeated failures
        audit.append(console.config, "user-sign-in-failed", user=name, reason="locked", address=_client(request))
        return _form(console, request, "login.html", status=429, next=target, error=str(exc))
    if user is None:
        audit.append(console.config, "user-sign-in-failed", user=name, reason="wrong name or password",
                     address=_client(request))
        return _form(console, request, "login.html", status=401, next=target, error="Wrong name or password.")
    audit.append(console.config, "user-signed-in", user=user.name, role=user.role, address=_client(request))
    return _signed_in(console, user, target)


def _signed_in(console: Console, user: users.User, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    auth.set_cookie(console, response, auth.SESSION_COOKIE, users.open_session(console.index(), user))
    response.delete_cookie(auth.FORM_COOKIE, path="/")
    return response


def _form(console: Console, request: Request, template: str, *, status: int = 200, **context: object) -> Response:
    """A sign-in form, giving a new visitor the cookie its CSRF token is made from."""
    basis, new = auth.form_basis(request)
    response = render(console, request, template, status=status, csrf=auth.token_for(console, basis), **context)
    if new:
        auth.set_cookie(console, response, auth.FORM_COOKIE, basis)
    return response


async def logout(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await read_form(request)
    return await run_in_threadpool(_logout, console, request, form)


def _logout(console: Console, request: Request, form: dict[str, str]) -> Response:
    user = auth.session_user(console, request)
    if user is not None and not auth.csrf_ok(console, request, form.get("csrf", "")):
        return render(console, request, "error.html", status=403, user=user,
                      message="This form has expired or did not come from this console; reload the page and try again.")
    session = request.cookies.get(auth.SESSION_COOKIE)
    if session:
        users.close_session(console.index(), session)
    if user is not None:
        audit.append(console.config, "user-signed-out", user=user.name, address=_client(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


async def first(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await read_form(request) if request.method == "POST" else {}
    return await run_in_threadpool(_first, console, request, form)


def _first(console: Console, request: Request, form: dict[str, str]) -> Response:
    """The first start's link: a form that makes the first admin. The link is redeemed by the form
    (a GET spends nothing: a link preview cannot use it up); a name or password the node refuses
    gives a fresh link, since the old one is spent."""
    secret = request.path_params["secret"]
    if request.method == "GET":
        return _form(console, request, "first.html")
    if not auth.csrf_ok(console, request, form.get("csrf", "")):
        return _form(console, request, "first.html", status=403, error="The form expired; please try again.")
    index = console.index()
    if not users.redeem_link(index, secret):
        return render(console, request, "error.html", status=403,
                      message="This sign-in link was used already or has expired. Restart medianode serve "
                              "while no user exists for a new one, or add an admin with medianode users add.")
    name = form.get("username", "").strip()
    try:
        user = actions.add_user(index, console.config, name, "admin", form.get("password", ""), by=name)
    except NodeError as exc:
        fresh = users.first_start_link(index, console.config)
        if fresh is None:
            return render(console, request, "error.html", status=400, message=str(exc))
        return _form(console, request, "first.html", status=400, error=str(exc), action=f"/first/{fresh}")
    audit.append(console.config, "user-signed-in", user=user.name, role=user.role, address=_client(request))
    return _signed_in(console, user, "/")
