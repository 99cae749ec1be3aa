"""Users, roles, passwords, tokens, sessions, the sign-in lock-out and the first start's link, against a real
index; the ``medianode users`` commands; retry, cancel and re-burn as the CLI does them, audited."""

from __future__ import annotations

import getpass
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import users
from node.config import load_config, parse_config
from node.errors import UsageError
from node.index import Index
from node.jobs import Worker, schedule
from node.users import FREE_FAILURES, LINK_S, LOCK_AFTER, LOCK_S, SignInLocked, User
from tests.conftest import Result, cli, ct_series


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(tmp_path / "index.sqlite")
    yield idx
    idx.close()


def test_roles_are_ordered() -> None:
    viewer, clerk, admin = (User("u", r) for r in users.ROLES)
    assert [users.may(viewer, r) for r in users.ROLES] == [True, False, False]
    assert [users.may(clerk, r) for r in users.ROLES] == [True, True, False]
    assert [users.may(admin, r) for r in users.ROLES] == [True, True, True]
    with pytest.raises(UsageError, match="unknown role 'root': one of viewer, clerk, admin"):
        users.may(admin, "root")


def test_add_list_and_bad_input(index: Index) -> None:
    assert users.add(index, "ann", "clerk", "pw-ann") == User("ann", "clerk")
    users.add(index, "bob", "viewer", "pw-bob")
    assert users.list_users(index) == [User("ann", "clerk"), User("bob", "viewer")]
    with pytest.raises(UsageError, match="unknown role 'root': one of viewer, clerk, admin"):
        users.add(index, "carl", "root", "pw")
    with pytest.raises(UsageError, match="user 'ann' exists"):
        users.add(index, "ann", "admin", "pw")
    with pytest.raises(UsageError, match="the password is empty"):
        users.add(index, "carl", "admin", "")
    for bad in ("", "-x", "a b", "x" * 65, "é"):
        with pytest.raises(UsageError, match="bad user name"):
            users.add(index, bad, "admin", "pw")
    assert [u.name for u in users.list_users(index)] == ["ann", "bob"]


def test_passwords_are_argon2_hashes_and_never_stored_in_clear(index: Index) -> None:
    users.add(index, "ann", "admin", "correct horse")
    role, stored = index.user("ann")  # type: ignore[misc]
    assert role == "admin" and stored.startswith("$argon2id$") and "correct horse" not in stored
    raw = (index.path).read_bytes() + Path(f"{index.path}-wal").read_bytes()
    assert b"correct horse" not in raw


def test_authenticate_and_passwd(index: Index) -> None:
    users.add(index, "ann", "clerk", "old")
    assert users.authenticate(index, "ann", "old", now=1000.0) == User("ann", "clerk")
    assert users.authenticate(index, "ann", "wrong", now=1001.0) is None
    assert users.authenticate(index, "nobody", "old", now=1002.0) is None
    session = users.open_session(index, User("ann", "clerk"), now=1003.0)
    users.passwd(index, "ann", "new")
    assert users.authenticate(index, "ann", "old", now=1004.0) is None
    assert users.authenticate(index, "ann", "new", now=1005.0) == User("ann", "clerk")
    assert users.session_user(index, session, now=1006.0) is None  # a new password ends the sessions
    with pytest.raises(UsageError, match="the password is empty"):
        users.passwd(index, "ann", "")
    with pytest.raises(UsageError, match="no user 'nobody'"):
        users.passwd(index, "nobody", "pw")


def test_failed_sign_ins_slow_down_then_lock_the_name(index: Index) -> None:
    users.add(index, "ann", "clerk", "right")
    users.add(index, "bob", "clerk", "right")
    now = 1000.0
    for _ in range(FREE_FAILURES):
        assert users.authenticate(index, "ann", "wrong", now=now) is None
    assert users.authenticate(index, "ann", "right", now=now) == User("ann", "clerk")  # no wait yet; resets
    for _ in range(FREE_FAILURES + 1):
        assert users.authenticate(index, "ann", "wrong", now=now) is None
    with pytest.raises(SignInLocked, match="too many failed sign-ins as 'ann': try again in 2 s") as locked:
        users.authenticate(index, "ann", "right", now=now)  # even the right password waits
    assert locked.value.seconds == 2
    assert users.authenticate(index, "bob", "right", now=now + 1) == User("bob", "clerk")  # per name
    for n in range(FREE_FAILURES + 2, LOCK_AFTER + 1):
        now += 2 ** (n - FREE_FAILURES)  # wait out each slow-down, then fail again
        assert users.authenticate(index, "ann", "wrong", now=now) is None
    with pytest.raises(SignInLocked) as locked:
        users.authenticate(index, "ann", "right", now=now + 60)
    assert locked.value.seconds == LOCK_S - 60
    assert users.authenticate(index, "ann", "right", now=now + LOCK_S) == User("ann", "clerk")


def test_failures_are_forgotten_after_an_hour_and_unknown_names_lock_too(index: Index) -> None:
    users.add(index, "ann", "clerk", "right")
    for _ in range(FREE_FAILURES):
        users.authenticate(index, "ann", "wrong", now=1000.0)
    assert users.authenticate(index, "ann", "wrong", now=1000.0 + users.FORGET_S + 1) is None  # counts as the 1st
    assert users.authenticate(index, "ann", "right", now=1000.0 + users.FORGET_S + 1) == User("ann", "clerk")
    for _ in range(FREE_FAILURES + 1):
        assert users.authenticate(index, "mallory", "guess", now=2000.0) is None
    with pytest.raises(SignInLocked, match="as 'mallory': try again in 2 s"):
        users.authenticate(index, "mallory", "guess", now=2000.0)


def test_tokens_are_hashed_listed_revoked(index: Index) -> None:
    users.add(index, "ann", "clerk", "pw")
    token_id, token = users.new_token(index, "ann")
    assert token.startswith(f"{token_id}.") and len(token) > 40
    assert token.split(".", 1)[1] not in json.dumps(index.db.execute("SELECT * FROM user_tokens").fetchall())
    [listed] = users.tokens(index, "ann")
    assert (listed["id"], listed["last_used"]) == (token_id, None)
    assert users.user_for_token(index, token, now=5000.0) == User("ann", "clerk")
    assert users.tokens(index, "ann")[0]["last_used"] == 5000.0
    users.user_for_token(index, token, now=5010.0)  # within a minute: not written again
    assert users.tokens(index, "ann")[0]["last_used"] == 5000.0
    for bad in ("", token_id, f"{token_id}.", f"{token_id}.wrong", token[:-1], f"nope.{token.split('.', 1)[1]}"):
        assert users.user_for_token(index, bad) is None
    second_id, second = users.new_token(index, "ann")
    users.revoke(index, "ann", token_id)
    assert users.user_for_token(index, token) is None
    assert users.user_for_token(index, second) == User("ann", "clerk")
    assert [t["id"] for t in users.tokens(index, "ann")] == [second_id]
    with pytest.raises(UsageError, match=f"user 'ann' has no token '{token_id}'"):
        users.revoke(index, "ann", token_id)
    for call in (lambda: users.new_token(index, "nobody"), lambda: users.tokens(index, "nobody"),
                 lambda: users.revoke(index, "nobody", second_id)):
        with pytest.raises(UsageError, match="no user 'nobody'"):
            call()


def test_sessions_expire_when_idle_and_close(index: Index) -> None:
    ann = users.add(index, "ann", "viewer", "pw")
    session = users.open_session(index, ann, now=1000.0)
    assert session not in json.dumps(index.db.execute("SELECT * FROM user_sessions").fetchall())
    assert users.session_user(index, session, now=1000.0 + 1700) == ann
    assert users.session_user(index, session, now=1000.0 + 1700 + 1800) == ann  # each use starts the idle time again
    assert users.session_user(index, session, now=1000.0 + 1700 + 3601) is None
    assert users.session_user(index, session, now=1000.0) is None  # ended, not merely idle
    other = users.open_session(index, ann, now=1000.0)
    assert users.session_user(index, other, idle_s=10, now=1011.0) is None
    third = users.open_session(index, ann)
    users.close_session(index, third)
    assert users.session_user(index, third) is None
    assert users.session_user(index, "made-up") is None


def test_a_removed_users_sessions_and_tokens_stop_working(index: Index) -> None:
    ann = users.add(index, "ann", "admin", "pw")
    session = users.open_session(index, ann)
    _, token = users.new_token(index, "ann")
    users.remove(index, "ann")
    assert users.session_user(index, session) is None and users.user_for_token(index, token) is None
    assert users.authenticate(index, "ann", "pw") is None
    with pytest.raises(UsageError, match="no user 'ann'"):
        users.remove(index, "ann")
    users.add(index, "ann", "viewer", "pw2")  # the name again: nothing of the old user comes back
    assert users.session_user(index, session) is None and users.user_for_token(index, token) is None


def test_first_start_link_is_single_use_and_lasts_15_minutes(index: Index, tmp_path: Path) -> None:
    config = parse_config(f"node: {{data_dir: {tmp_path}}}", source=str(tmp_path / "medianode.yaml"))
    secret = users.first_start_link(index, config, now=1000.0)
    assert secret and len(secret) >= 40
    assert secret not in (tmp_path / "audit.jsonl").read_text()
    assert json.loads((tmp_path / "audit.jsonl").read_text())["event"] == "sign-in-link-created"
    assert users.redeem_link(index, "wrong", now=1001.0) is False
    assert users.redeem_link(index, secret, now=1001.0) is True
    assert users.redeem_link(index, secret, now=1002.0) is False  # used twice

    late = users.first_start_link(index, config, now=2000.0)
    assert late and users.redeem_link(index, late, now=2000.0 + LINK_S + 1) is False  # after 15 minutes
    first, second = users.first_start_link(index, config, now=3000.0), users.first_start_link(index, config,
                                                                                                now=3000.0)
    assert first and second and first != second
    assert users.redeem_link(index, first, now=3001.0) is False  # a newer link replaces it
    assert users.redeem_link(index, second, now=3000.0 + LINK_S) is True  # the last second still counts

    users.add(index, "ann", "admin", "pw")
    assert users.first_start_link(index, config) is None



# -- the command line ------------------------------------------------------------------------------------------------

@pytest.fixture
def node_yaml(tmp_path: Path) -> Path:
    """A node that has never run: ``users`` makes its data_dir and index."""
    path = tmp_path / "node.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nburn: {{output: {tmp_path / 'out'}}}\n"
                    "routes:\n  - {match: {called_aet: BURN}, action: burn}\n")
    return path


def users_cli(monkeypatch: pytest.MonkeyPatch, *args: object, stdin: str = "") -> Result:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli("users", *args)


def audit_events(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "var" / "audit.jsonl").read_text().splitlines()]


def test_users_commands(tmp_path: Path, node_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ("--config", node_yaml)
    added = users_cli(monkeypatch, "add", "ann", "--role", "clerk", "--password-stdin", *c, stdin="s3cret\n")
    assert (added.code, added.out, added.err) == (0, "user ann added, role clerk\n", "")
    users_cli(monkeypatch, "add", "bob", "--role", "admin", "--password-stdin", *c, stdin="pw")
    assert users_cli(monkeypatch, "list", *c).out == "ann  clerk\nbob  admin\n"
    assert json.loads(users_cli(monkeypatch, "list", "--json", *c).out) == [{"name": "ann", "role": "clerk"},
                                                                          {"name": "bob", "role": "admin"}]
    index = Index(tmp_path / "var" / "index.sqlite")
    try:
        assert users.authenticate(index, "ann", "s3cret") == User("ann", "clerk")  # one line end taken off
        changed = users_cli(monkeypatch, "passwd", "ann", "--password-stdin", *c, stdin="n3w\r\n")
        assert (changed.code, changed.out) == (0, "user ann: password changed, sessions ended\n")
        assert users.authenticate(index, "ann", "n3w") == User("ann", "clerk")

        made = users_cli(monkeypatch, "token", "ann", *c)
        assert made.code == 0 and made.out.count("\n") == 1
        token = made.out.strip()
        assert users.user_for_token(index, token, now=5000.0) == User("ann", "clerk")
        token_id = token.split(".")[0]
        listed = users_cli(monkeypatch, "tokens", "ann", *c).out
        assert listed.startswith(f"{token_id}  made ") and "last used" in listed
        [row] = json.loads(users_cli(monkeypatch, "tokens", "ann", "--json", *c).out)
        assert (row["id"], row["last_used"]) == (token_id, 5000.0)
        revoked = users_cli(monkeypatch, "revoke", "ann", token_id, *c)
        assert (revoked.code, revoked.out) == (0, f"user ann: token {token_id} revoked\n")
        assert users.user_for_token(index, token) is None and users_cli(monkeypatch, "tokens", "ann", *c).out == ""

        _, kept = users.new_token(index, "ann")
        session = users.open_session(index, User("ann", "clerk"))
        removed = users_cli(monkeypatch, "remove", "ann", *c)
        assert (removed.code, removed.out) == (0, "user ann removed, sessions ended, tokens revoked\n")
        assert users.user_for_token(index, kept) is None and users.session_user(index, session) is None
    finally:
        index.close()
    assert users_cli(monkeypatch, "list", *c).out == "bob  admin\n"
    me = getpass.getuser()
    assert [(e["event"], e.get("name"), e["user"]) for e in audit_events(tmp_path)] == [
        ("user-added", "ann", me), ("user-added", "bob", me), ("user-password-changed", "ann", me),
        ("token-created", "ann", me), ("token-revoked", "ann", me), ("user-removed", "ann", me)]
    assert "s3cret" not in (tmp_path / "var" / "audit.jsonl").read_text() and token not in (
        tmp_path / "var" / "audit.jsonl").read_text()


@pytest.mark.parametrize(("args", "stdin", "err"), [
    (("add", "carl", "--role", "root", "--password-stdin"), "pw", "argument --role: invalid choice: 'root'"),
    (("add", "carl", "--role", "clerk"), "pw", "the following arguments are required: --password-stdin"),
    (("add", "carl", "--role", "clerk", "--password", "pw"), "pw", "required: --password-stdin"),  # never on argv
    (("add", "carl", "--role", "clerk", "--password-stdin"), "\n", "medianode users: the password is empty\n"),
    (("add", "bob", "--role", "clerk", "--password-stdin"), "pw", "medianode users: user 'bob' exists\n"),
    (("add", "a b", "--role", "clerk", "--password-stdin"), "pw", "medianode users: bad user name 'a b'"),
    (("passwd", "carl", "--password-stdin"), "pw", "medianode users: no user 'carl'\n"),
    (("passwd", "bob", "--password-stdin"), "", "medianode users: the password is empty\n"),
    (("remove", "carl"), "", "medianode users: no user 'carl'\n"),
    (("token", "carl"), "", "medianode users: no user 'carl'\n"),
    (("tokens", "carl"), "", "medianode users: no user 'carl'\n"),
    (("revoke", "bob", "0123"), "", "medianode users: user 'bob' has no token '0123'\n"),
    (("revoke", "carl", "0123"), "", "medianode users: no user 'carl'\n"),
])
def test_users_commands_refuse_bad_input(node_yaml: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
                                         stdin: str, err: str) -> None:
    users_cli(monkeypatch, "add", "bob", "--role", "admin", "--password-stdin", "--config", node_yaml, stdin="pw")
    refused = users_cli(monkeypatch, *args, "--config", node_yaml, stdin=stdin)
    assert refused.code == 2 and err in refused.err and refused.out == "", refused
    assert users_cli(monkeypatch, "list", "--config", node_yaml).out == "bob  admin\n"


def test_users_add_as_a_process_reads_the_password_from_a_pipe(tmp_path: Path, node_yaml: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "node", "users", "add", "ann", "--role", "viewer", "--password-stdin",
                        "--config", str(node_yaml)], input="pipe pw\n", capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (0, "user ann added, role viewer\n", "")
    t = subprocess.run([sys.executable, "-m", "node", "users", "token", "ann", "--config", str(node_yaml)],
                       capture_output=True, text=True, timeout=60)
    index = Index(tmp_path / "var" / "index.sqlite")
    try:
        assert users.authenticate(index, "ann", "pipe pw") == User("ann", "viewer")
        assert users.user_for_token(index, t.stdout.removesuffix("\n")) == User("ann", "viewer")
    finally:
        index.close()


def test_retry_cancel_and_reburn_with_copies_from_the_command_line_are_audited(
        tmp_path: Path, node_yaml: Path) -> None:
    from tests.test_jobs import open_index, receive, settings

    config = load_config(node_yaml)
    index = open_index(tmp_path)
    try:
        lost = ct_series(tmp_path / "spool-lost", 1)
        receive(index, lost, route=settings(config.routes[0]), at=1000.0)
        receive(index, ct_series(tmp_path / "spool", 2), route=settings(config.routes[0]), at=1000.0)
        assert len(schedule(index, config, now=1031.0)) == 2
        lost[0].unlink()  # one of the jobs cannot be built
        Worker(index, lambda: config).run_pending()
        [failing], [job] = ([j.id for j in index.jobs(states=(s,))] for s in ("failed", "done"))

        c = ("--config", node_yaml)
        retried = cli("jobs", "retry", failing, *c)
        assert (retried.code, retried.out) == (0, f"job {failing}: failed -> pending\n")
        cancelled = cli("jobs", "cancel", failing, *c)
        assert (cancelled.code, cancelled.out) == (0, f"job {failing}: pending -> cancelled\n")
        refused = cli("jobs", "cancel", failing, *c)
        assert (refused.code, refused.err) == (
            1, f"medianode jobs: job {failing} is cancelled; cancel needs one of pending, failed\n")
        assert cli("jobs", "retry", "999", *c).err == "medianode jobs: no job 999\n"

        [volume] = index.volumes()
        assert volume.copies == 1
        queued = cli("volumes", "reburn", volume.label, "--copies", "3", *c)
        assert (queued.code, queued.err) == (0, "")
        reburn = max(failing, job) + 1
        assert queued.out == f"volume {volume.label}: re-burn queued as job {reburn}, 3 copies\n"
        Worker(index, lambda: config).run_pending()
        old, new = index.volumes()
        assert (new.copies, len(new.paths), old.superseded_by) == (3, 3, new.label)
        assert all(Path(p).is_file() for p in new.paths)
        for bad, err in (("0", "copies must be 1 to 99, not 0"), ("100", "copies must be 1 to 99, not 100"),
                         ("x", "argument --copies: invalid int value: 'x'")):
            wrong = cli("volumes", "reburn", new.label, "--copies", bad, *c)
            assert wrong.code == 2 and err in wrong.err
        assert cli("volumes", "--copies", "2", *c).err == "medianode volumes: --copies is for volumes reburn\n"
        unknown = cli("volumes", "reburn", "NOPE", "--copies", "2", *c)
        assert unknown.err == "medianode volumes: no archive volume 'NOPE'\n"
        assert len(index.volumes()) == 2 and len(index.jobs()) == 3  # nothing queued by a refused re-burn
    finally:
        index.close()
    me = getpass.getuser()
    done = [(e["event"], e.get("job"), e.get("copies"), e["user"]) for e in audit_events(tmp_path) if "user" in e]
    assert done == [("job-retried", failing, None, me), ("job-cancelled", failing, None, me),
                    ("volume-reburned", reburn, 3, me)]
