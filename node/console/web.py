"""The glue between Starlette and the console's handlers: who may call what, CSRF on every form,
templates rendered with autoescape, the handlers run on Starlette's thread pool (they read SQLite).

A page handler is a plain function of a :class:`Call` returning a response; :func:`page` and
:func:`api` wrap it into an endpoint that refuses the caller first: a page without a session
redirects to the sign-in page (303), an API call without a valid Bearer token is 401, a role
below the handler's is 403, a form without its CSRF token is 403.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from node import users
from node.console import auth, views
from node.console.state import Console
from node.errors import NodeError
from node.words import counted

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
#: The largest form or JSON body the console reads.
MAX_BODY = 64 << 10
FLASH_COOKIE = "medianode_flash"

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                   trim_blocks=True, lstrip_blocks=True)
_env.filters.update(day=views.day, duration=views.duration, counted=counted)


@dataclass
class Call:
    """One request as a handler sees it."""

    console: Console
    request: Request
    user: users.User
    form: dict[str, str] = field(default_factory=dict)
    #: A message for the next page (set by a form's handler, shown once).
    flash: str = ""

    def param(self, name: str) -> str:
        return self.request.query_params.get(name, "").strip()

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return render(self.console, self.request, template, status=status, user=self.user, **context)

    def back(self, to: str, message: str) -> RedirectResponse:
        """Redirect (303) to ``to`` after a form, with ``message`` shown there once."""
        response = RedirectResponse(to, status_code=303)
        auth.set_cookie(self.console, response, FLASH_COOKIE, quote(message), max_age=60)
        return response


Handler = Callable[[Call], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def render(console: Console, request: Request, template: str, *, status: int = 200, csrf: str | None = None,
           **context: Any) -> HTMLResponse:
    """A page from its template (autoescaped: text from DICOM or a user is shown as text), with the
    form's CSRF token (``csrf``, or the one the request's cookies make) and the message a form left."""
    flash = unquote(request.cookies.get(FLASH_COOKIE, ""))
    html = _env.get_template(template).render(csrf=auth.csrf_token(console, request) if csrf is None else csrf,
                                               flash=flash, path=request.url.path, **{"user": None, **context})
    response = HTMLResponse(html, status_code=status)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the console's forms are nothing else)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def page(role: str, handler: Handler) -> Endpoint:
    """A page (GET) or a form (POST) for users of at least ``role``."""
    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        form = await read_form(request) if request.method == "POST" else {}
        return await run_in_threadpool(_page, console, request, form, role, handler)
    return endpoint


def _page(console: Console, request: Request, form: dict[str, str], role: str, handler: Handler) -> Response:
    user = auth.session_user(console, request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method == "GET" and request.query_params.get("fragment"):
            return Response("signed out", status_code=401)  # the live updates' poll: the page goes to sign-in
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    if request.method == "POST" and not auth.csrf_ok(console, request, form.get("csrf", "")):
        return render(console, request, "error.html", status=403, user=user,
                      message="This form has expired or did not come from this console; reload the page and try again.")
    if not users.may(user, role):
        return render(console, request, "error.html", status=403, user=user,
                      message=f"Your role ({user.role}) may not do this; it needs {role}.")
    try:
        return handler(Call(console, request, user, form))
    except NotFound as exc:
        return render(console, request, "error.html", status=404, user=user, message=str(exc))
    except NodeError as exc:
        if request.method == "POST":  # back to the page of the form (its path only: never another site)
            back = urlsplit(request.headers.get("referer", "")).path
            return Call(console, request, user, form).back(back if back.startswith("/") else "/", str(exc))
        return render(console, request, "error.html", status=400, user=user, message=str(exc))


ApiHandler = Callable[[Call], object]


def api(role: str, handler: ApiHandler) -> Endpoint:
    """A JSON endpoint for callers with a Bearer token of at least ``role`` (no cookie, so no CSRF)."""
    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        body = await request.body() if request.method == "POST" else b""
        return await run_in_threadpool(_api, console, request, body, role, handler)
    return endpoint


def _api(console: Console, request: Request, body: bytes, role: str, handler: ApiHandler) -> Response:
    user = auth.token_user(console, request)
    if user is None:
        return JSONResponse({"error": "a valid token is needed: Authorization: Bearer TOKEN (medianode users token NAME)"},
                            status_code=401, headers={"WWW-Authenticate": 'Bearer realm="medianode"'})
    if not users.may(user, role):
        return JSONResponse({"error": f"role {user.role} may not do this; it needs {role}"}, status_code=403)
    form: dict[str, str] = {}
    if body.strip():
        try:
            data = json.loads(body) if len(body) <= MAX_BODY else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        form = {k: str(v) for k, v in data.items()}
    try:
        return JSONResponse(handler(Call(console, request, user, form)))
    except NotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except NodeError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409 if exc.exit_code == 1 else 400)


class NotFound(NodeError):
    """What a request names does not exist (a job, a volume, an import): 404."""

    exit_code = 2
