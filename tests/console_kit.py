"""What the console's tests share: a node with its console, users made in its index, and an HTTP client
that keeps cookies and shows redirects as they are (no following)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from node import users
from node.index import Index
from tests.conftest import until
from tests.test_serve import Node


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str]

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]*)"', self.body)
        assert found, self.body[:2000]
        return found.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Client:
    """A browser-like HTTP client of one console: cookies kept, redirects answered, not followed."""

    def __init__(self, base: str, *, context: ssl.SSLContext | None = None) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect(),
                                                  urllib.request.HTTPSHandler(context=context))

    def request(self, method: str, path: str, *, form: dict[str, str] | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        data = urllib.parse.urlencode(form).encode() if form is not None else body
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if form is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(req, timeout=60) as r:
                status, head, text = r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            status, head, text = e.code, e.headers, e.read().decode()
        return Answer(status, {k.lower(): v for k, v in head.items()}, text, head.get_all("set-cookie") or [])

    def get(self, path: str, **kw: object) -> Answer:
        return self.request("GET", path, **kw)  # type: ignore[arg-type]

    def post(self, path: str, form: dict[str, str] | None = None, **kw: object) -> Answer:
        return self.request("POST", path, form=form if form is not None else {}, **kw)  # type: ignore[arg-type]

    def sign_in(self, name: str, password: str) -> Answer:
        token = self.get("/login").csrf
        answer = self.post("/login", {"username": name, "password": password, "csrf": token, "next": "/"})
        assert answer.status == 303, answer.body[:500]
        return answer

    def api(self, method: str, path: str, token: str, body: bytes | None = None) -> Answer:
        return self.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"})


class ConsoleNode(Node):
    """``medianode serve`` with its console on a free port of 127.0.0.1."""

    def __init__(self, tmp_path: Path, *, console: str = "", context: ssl.SSLContext | None = None,
                 **kw: object) -> None:
        """``context``: the console is served over TLS, and its certificate is trusted by ``context``."""
        super().__init__(tmp_path, console=console, **kw)  # type: ignore[arg-type]
        self.context = context

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.console_port}"

    def start(self) -> None:
        super().start()
        until(self.answers, "the console to answer")

    def answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.logs()
        try:
            return self.client().get("/login").status == 200
        except OSError:
            return False

    def add_user(self, name: str, role: str, password: str = "pass-word-1") -> str:
        with_index(self.data, lambda index: users.add(index, name, role, password))
        return password

    def token(self, name: str) -> str:
        return with_index(self.data, lambda index: users.new_token(index, name)[1])

    def client(self) -> Client:
        return Client(self.url, context=self.context)


def with_index(data: Path, work):  # type: ignore[no-untyped-def]
    index = Index(data / "index.sqlite")
    try:
        return work(index)
    finally:
        index.close()
