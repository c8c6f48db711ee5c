"""The bot's Message-IDs cannot be guessed from the thread: each installation keys them with a secret its store
keeps. Before, the id of a reminder followed from its case key and the date of the engineer's mail, so anyone
on the thread could send a mail under it first (the reminder then went unrecorded) or forge a bounce of it."""

from __future__ import annotations

import email
import subprocess
import sys
from email.policy import default
from pathlib import Path

import pytest
from trustlife import BOT, CUSTOMER, ENGINEER, KEY, SUBJECT, mail

from mailbot.mailbox.maildir import deliver
from mailbot.render.compose import make_message_id
from mailbot.store import Store
from mailbot.store.secret import CHECKPOINT, message_id_secret
from tests.conftest import CONFIG

OPENED = "2021-04-13T10:00:00+08:00"
LATER = "2021-04-20T10:00:00+08:00"  # a week of silence: the first reminder is due


def installation(root: Path) -> Path:
    """A bot as `mailbot demo` sets one up: a Maildir in, the outbox folder out; Li Qi's first answer waiting."""
    root.mkdir()
    (root / "config.toml").write_text(CONFIG, encoding="utf-8")
    deliver(root / "maildir", mail(ENGINEER, CUSTOMER, "请上传日志。", OPENED, subject=SUBJECT, cc=BOT))
    return root


def mailbot(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mailbot.cli", *args, "--config", "config.toml"], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def reminder(root: Path) -> tuple[str, str]:
    """(action id, Message-ID) of the reminder the ledger holds, checked against the mail in the outbox folder."""
    entries = [e for e in Store(root / "state" / "store").outbox_entries() if e["kind"] == "reminder"]
    assert len(entries) == 1
    sent = [email.message_from_bytes(p.read_bytes(), policy=default) for p in (root / "state" / "outbox").glob("*.eml")]
    assert [m["Message-ID"] for m in sent if m["To"] == CUSTOMER] == [entries[0]["message_id"]]
    return entries[0]["action_id"], entries[0]["message_id"]


def test_a_reminder_id_is_keyed_by_the_installation_secret(tmp_path: Path) -> None:
    a, b = installation(tmp_path / "a"), installation(tmp_path / "b")
    for root in (a, b):
        mailbot(root, "run", "--once", "--now", OPENED)
        mailbot(root, "run", "--once", "--now", LATER)
    (action_a, id_a), (action_b, id_b) = reminder(a), reminder(b)
    assert action_a == action_b and action_a.startswith(f"{KEY}/reminder/1/")  # the same decision...
    assert id_a != id_b  # ...under ids that neither installation could have told the other
    guessable = make_message_id(action_a, "support.example")
    assert guessable not in (id_a, id_b)
    secret = message_id_secret(Store(a / "state" / "store"))
    assert len(secret) == 32 and id_a == make_message_id(action_a, "support.example", secret)


def test_the_secret_is_made_once_by_the_writer_and_kept(tmp_path: Path) -> None:
    root = installation(tmp_path / "bot")
    mailbot(root, "cases", "--json")  # a reading command writes nothing, the secret neither
    assert not (root / "state" / "store").exists() or message_id_secret(Store(root / "state" / "store")) == ""
    mailbot(root, "run", "--once", "--now", OPENED)
    first = message_id_secret(Store(root / "state" / "store"))
    mailbot(root, "run", "--once", "--now", LATER)
    assert first and message_id_secret(Store(root / "state" / "store")) == first
    dump = mailbot(root, "store", "dump")  # a backup carries it: a restored bot keeps its ids
    assert sum(CHECKPOINT in line and first in line for line in dump.splitlines()) == 1


@pytest.mark.postgresql
def test_every_instance_on_one_database_shares_the_secret_its_migration_made(pg_store_dsn: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    from mailbot.store.postgresql import PostgresStore

    PostgresStore(pg_store_dsn, init=True).close()
    with psycopg.connect(pg_store_dsn, autocommit=True) as conn:  # an older database: its schema at version 2
        conn.execute("DELETE FROM checkpoints WHERE key = %s", (CHECKPOINT,))
        conn.execute("DELETE FROM schema_version WHERE version >= 3")  # and what later migrations added
        conn.execute("ALTER TABLE message_ids DROP COLUMN digest")
    first, second = PostgresStore(pg_store_dsn, init=True), PostgresStore(pg_store_dsn, init=True)
    try:
        made = message_id_secret(first)
        assert len(made) == 64 and message_id_secret(second) == made  # the upgrade made one, and only one
    finally:
        first.close()
        second.close()
