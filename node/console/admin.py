"""The admin's pages: Users (add, remove, set a password, API tokens made and revoked) and Configuration
(check the file as it is on disk, ask ``serve`` to reload it and show how that went).

Every change is :mod:`node.actions`' (the CLI's ``users`` commands call the same), audited with the
signed-in admin's name; :mod:`node.console.app` lets only the admin role in.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from starlette.responses import Response

from node import actions, users
from node.console import views
from node.console.state import Console
from node.console.web import Call, NotFound
from node.errors import ConfigError, UsageError
from node.report import config_check
from node.words import counted

#: How long the Reload button waits for ``serve``'s answer (it looks again every :data:`LOOK_S`).
RELOAD_WAIT_S = 15.0
LOOK_S = 0.1


def user_list(call: Call) -> Response:
    return call.render("users.html", users=users.list_users(call.console.index()), roles=users.ROLES)


def user_page(call: Call, *, new_token: str = "") -> Response:
    """One user: its tokens, and the forms that change it; ``new_token`` is shown this once."""
    name = call.request.path_params["name"]
    found = call.console.index().user(name)
    if found is None:
        raise NotFound(f"no user {name!r}")
    tokens = [{"id": token_id, "created": views.when(created), "last_used": views.when(used) if used else "never"}
              for token_id, created, used in call.console.index().user_tokens(name)]
    return call.render("user.html", name=name, role=found[0], tokens=tokens, new_token=new_token,
                       me=name == call.user.name)


def add_user(call: Call) -> Response:
    name, role = call.form.get("username", "").strip(), call.form.get("role", "")
    actions.add_user(call.console.index(), call.console.config, name, role, call.form.get("password", ""),
                     by=call.user.name)
    return call.back("/users", f"User {name} added, role {role}.")


def remove_user(call: Call) -> Response:
    name = call.request.path_params["name"]
    if name == call.user.name:
        raise UsageError("you cannot remove yourself: another admin can, or medianode users remove")
    actions.remove_user(call.console.index(), call.console.config, name, by=call.user.name)
    return call.back("/users", f"User {name} removed: their sessions ended, their tokens stopped working.")


def set_password(call: Call) -> Response:
    name = call.request.path_params["name"]
    actions.set_password(call.console.index(), call.console.config, name, call.form.get("password", ""),
                         by=call.user.name)
    return call.back(_user_path(name), f"Password of {name} changed; their sessions ended.")


def new_token(call: Call) -> Response:
    """A new API token, shown on the page this once (never in a cookie, a redirect or the log)."""
    _, token = actions.new_token(call.console.index(), call.console.config, call.request.path_params["name"],
                                 by=call.user.name)
    return user_page(call, new_token=token)


def revoke_token(call: Call) -> Response:
    name, token_id = call.request.path_params["name"], call.request.path_params["token"]
    actions.revoke_token(call.console.index(), call.console.config, name, token_id, by=call.user.name)
    return call.back(_user_path(name), f"Token {token_id} of {name} revoked.")


def _user_path(name: str) -> str:
    return f"/users/{quote(name, safe='')}"


def configuration(call: Call, *, checked: dict[str, object] | None = None) -> Response:
    """The running configuration's file; with ``checked``, what :func:`check` found in it."""
    console = call.console
    config = console.config
    return call.render("config.html", source=str(config.source or ""), loaded=views.when(console.loaded),
                       routes=len(config.routes), node=config.node, reloadable=console.serve is not None,
                       checked=checked)


def check(call: Call) -> Response:
    """The file as it is on disk now, checked as ``medianode config check`` checks it."""
    source = call.console.config.source
    if source is None:
        raise UsageError("this console's configuration was not read from a file")
    try:
        config, warnings = config_check(source)
    except ConfigError as exc:
        return configuration(call, checked={"ok": False, "problems": exc.problems, "warnings": []})
    summary = f"{source}: ok, {counted(len(config.routes), 'route')}, data in {config.node.data_dir}"
    return configuration(call, checked={"ok": True, "summary": summary, "warnings": warnings})


def reload(call: Call) -> Response:
    """Ask ``serve`` to reload (:func:`node.actions.ask_reload`), and come back with its outcome as the
    audit log and this console's own reload say it."""
    console = call.console
    serve = console.serve
    if serve is None:
        raise UsageError("this console does not run under medianode serve: there is nothing to reload")
    offset, reloads = views.audit_end(console.data_dir), console.reloads
    actions.ask_reload(console.config, serve, by=call.user.name)
    return call.back("/config", _outcome(console, offset, reloads, serve))


def _outcome(console: Console, offset: int, reloads: int, serve: int) -> str:
    """``serve``'s ``config-reloaded`` after ``offset`` of the audit log; when it took the file, once this
    console has read it too (``serve`` tells it after it adopted it)."""
    deadline = time.monotonic() + RELOAD_WAIT_S
    while time.monotonic() < deadline:
        event = views.audit_event_after(console.data_dir, offset, "config-reloaded")
        if event is not None and not event.get("ok"):
            return f"Not reloaded; the running configuration is kept: {event.get('reason')}"
        if event is not None and console.reloads > reloads:
            return f"Reloaded from {event.get('source')}: {counted(len(console.config.routes), 'route')} in use."
        time.sleep(LOOK_S)
    return (f"medianode serve (process {serve}) was asked to reload and has not answered within "
            f"{RELOAD_WAIT_S:.0f} s; its answer will be in the audit log (config-reloaded).")
