"""What a person does to the node, shared by the command line and the console, each audited with the
name of who did it (``by``: a console user, or the operating-system user of a command).

The audit events carry ``user``: ``job-retried``, ``job-cancelled``, ``volume-reburned``,
``user-added``, ``user-removed``, ``user-password-changed``, ``token-created``, ``token-revoked``,
``config-reload-asked``.
"""

from __future__ import annotations

import logging
import os
import signal

from node import audit, jobs, users
from node.config import Config
from node.index import Index

logger = logging.getLogger(__name__)


def retry(index: Index, config: Config, job_id: int, *, by: str) -> tuple[str, str]:
    """Queue a failed or cancelled job again (a media request's job reopens its request); return its state
    before and after."""
    return _move(index, config, job_id, "retry", "job-retried", by=by)


def cancel(index: Index, config: Config, job_id: int, *, by: str) -> tuple[str, str]:
    """Cancel a pending or failed job; return its state before and after."""
    return _move(index, config, job_id, "cancel", "job-cancelled", by=by)


def _move(index: Index, config: Config, job_id: int, action: str, event: str, *, by: str) -> tuple[str, str]:
    old, new = jobs.move_job(index, job_id, action)
    audit.append(config, event, job=job_id, state=old, user=by)
    logger.info("job %d: %s by %s (%s -> %s)", job_id, action, by, old, new)
    return old, new


def reburn(index: Index, config: Config, label: str, *, copies: int | None = None, by: str) -> tuple[int, list[str]]:
    """Burn a volume again (:func:`node.jobs.reburn`), ``copies`` times or as its route says; return the new
    job's id and the SOP Instance UIDs it cannot hold."""
    job, cannot = jobs.reburn(index, label, config.node.data_dir, copies=copies)
    audit.append(config, "volume-reburned", label=label, job=job, copies=copies, missing=len(cannot),
                 user=by)
    logger.info("volume %s: re-burn queued as job %d by %s", label, job, by)
    return job, cannot


def add_user(index: Index, config: Config, name: str, role: str, password: str, *, by: str) -> users.User:
    user = users.add(index, name, role, password)
    audit.append(config, "user-added", name=name, role=role, user=by)
    return user


def remove_user(index: Index, config: Config, name: str, *, by: str) -> None:
    users.remove(index, name)
    audit.append(config, "user-removed", name=name, user=by)


def set_password(index: Index, config: Config, name: str, password: str, *, by: str) -> None:
    users.passwd(index, name, password)
    audit.append(config, "user-password-changed", name=name, user=by)


def new_token(index: Index, config: Config, name: str, *, by: str) -> tuple[str, str]:
    """A new API token of ``name``: (its id, the token); the audit log has the id only."""
    token_id, token = users.new_token(index, name)
    audit.append(config, "token-created", name=name, token_id=token_id, user=by)
    return token_id, token


def revoke_token(index: Index, config: Config, name: str, token_id: str, *, by: str) -> None:
    users.revoke(index, name, token_id)
    audit.append(config, "token-revoked", name=name, token_id=token_id, user=by)


def ask_reload(config: Config, serve: int, *, by: str) -> None:
    """Ask ``medianode serve`` (process ``serve``) to read its configuration file again, as SIGHUP does:
    it keeps the running configuration when the file is invalid, and audits ``config-reloaded`` either way."""
    audit.append(config, "config-reload-asked", source=str(config.source or ""), user=by)
    os.kill(serve, signal.SIGHUP)
    logger.info("configuration reload asked of process %d by %s", serve, by)
