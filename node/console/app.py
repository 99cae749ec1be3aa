"""The console's ASGI application: its routes, each with the least role that may use it, static files,
and the headers every answer carries (a Content-Security-Policy that allows no inline script, no
framing, no caching of pages)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.config import Config
from node.console import admin, api, pages, signin
from node.console.state import Console
from node.console.web import api as json_api
from node.console.web import page

STATIC = Path(__file__).parent / "static"
HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds :data:`HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)
        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(config: Config, *, serve: int | None = None) -> Starlette:
    """The console for the node ``config`` describes, run by the ``serve`` of process id ``serve``."""
    routes = [
        Route("/", page("viewer", pages.now)),
        Route("/volumes", page("viewer", pages.volumes)),
        Route("/volumes/{label}", page("viewer", pages.volume)),
        Route("/volumes/{label}/reburn", page("clerk", pages.reburn), methods=["POST"]),
        Route("/jobs/{job:int}/retry", page("clerk", pages.retry), methods=["POST"]),
        Route("/jobs/{job:int}/cancel", page("clerk", pages.cancel), methods=["POST"]),
        Route("/imports", page("viewer", pages.imports)),
        Route("/imports/{id:int}", page("viewer", pages.import_detail)),
        Route("/imports/{id:int}/resolve", page("clerk", pages.resolve_import), methods=["POST"]),
        Route("/routes", page("viewer", pages.routes)),
        Route("/audit", page("viewer", pages.audit_log)),
        Route("/users", page("admin", admin.user_list)),
        Route("/users", page("admin", admin.add_user), methods=["POST"]),
        Route("/users/{name}", page("admin", admin.user_page)),
        Route("/users/{name}/remove", page("admin", admin.remove_user), methods=["POST"]),
        Route("/users/{name}/password", page("admin", admin.set_password), methods=["POST"]),
        Route("/users/{name}/tokens", page("admin", admin.new_token), methods=["POST"]),
        Route("/users/{name}/tokens/{token}/revoke", page("admin", admin.revoke_token), methods=["POST"]),
        Route("/config", page("admin", admin.configuration)),
        Route("/config/check", page("admin", admin.check), methods=["POST"]),
        Route("/config/reload", page("admin", admin.reload), methods=["POST"]),
        Route("/login", signin.login, methods=["GET", "POST"]),
        Route("/logout", signin.logout, methods=["POST"]),
        Route("/first/{secret}", signin.first, methods=["GET", "POST"]),
        Route("/api/status", json_api("viewer", api.status)),
        Route("/api/jobs", json_api("viewer", api.jobs)),
        Route("/api/volumes", json_api("viewer", api.volumes)),
        Route("/api/imports", json_api("viewer", api.imports)),
        Route("/api/jobs/{job:int}/retry", json_api("clerk", api.retry), methods=["POST"]),
        Route("/api/jobs/{job:int}/cancel", json_api("clerk", api.cancel), methods=["POST"]),
        Route("/api/volumes/{label}/reburn", json_api("clerk", api.reburn), methods=["POST"]),
        Route("/api/imports/{id:int}/resolve", json_api("clerk", api.resolve), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.console = Console(config, serve=serve)
    return app
