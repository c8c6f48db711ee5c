"""Builds the bot from Settings — store, calendar, mailbox, transport, service — in one place that the CLI,
doctor, import, demo, benches and tests all use (nothing here decides anything about a mail)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mailbot.config import ConfigError, Settings
from mailbot.mailbox.maildir import MaildirMailbox
from mailbot.store import Store, StoreCorrupt
from mailbot.store.port import StorePort
from mailbot.store.secret import ensure_message_id_secret

if TYPE_CHECKING:
    from mailbot.decide.calendar import BusinessCalendar
    from mailbot.mailbox.base import Mailbox
    from mailbot.parse.pool import Parser
    from mailbot.service import Service
    from mailbot.transport.base import Transport


class RuntimeProblem(Exception):
    """Something the user can fix that is not config: the CLI exits 1 with this one line."""


def private_state(state: Path) -> None:
    """Keep the state folder private: it holds customers' mail (store, outbox, quarantine records).

    New files are 0600 and folders 0700 by the umask `main` sets; a folder made by an older version (or by
    hand) with group or other bits is tightened once, with what is in it, and logged."""
    try:
        mode = state.stat().st_mode & 0o777
    except OSError:  # not there yet (a read-only command) or not ours to look at: nothing to tighten
        return
    if not mode & 0o077:
        return
    try:
        state.chmod(0o700)
    except OSError as e:
        logging.getLogger("mailbot").warning("- state folder %s is readable by others (mode %03o) and cannot be "
                                             "made private: %s", state, mode, e.strerror or e)
        return
    tightened = failed = 0
    for folder, dirs, files in os.walk(state):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if st.st_mode & 0o077 and not os.path.islink(path):
                    os.chmod(path, st.st_mode & 0o700)
                    tightened += 1
            except OSError:
                failed += 1
    logging.getLogger("mailbot").warning(
        "- state folder %s was readable by others (mode %03o): now 0700, %d entries in it made private%s",
        state, mode, tightened, f", {failed} could not be changed" if failed else "")


def open_store(settings: Settings, *, working: bool = False) -> StorePort:
    """The configured store engine. `working`: the store of `run` (and `store init`), which creates or
    upgrades the PostgreSQL schema and sweeps only its mailbox; the reading commands open it as it is, with
    every mailbox, from any machine that reaches the database."""
    if settings.store.kind == "postgresql":
        return _open_postgresql(settings, working)
    root = settings.bot.state_dir / "store"
    private_state(settings.bot.state_dir)
    try:
        store = Store(root)
        if working:  # the one writer (under the state folder's lock) makes the secret of its Message-IDs
            ensure_message_id_secret(store)
        return store
    except StoreCorrupt as e:
        raise RuntimeProblem(str(e)) from None
    except OSError as e:
        raise RuntimeProblem(f"cannot read the store at {root}: {e.strerror or e}") from None


def _open_postgresql(settings: Settings, working: bool) -> StorePort:
    dsn = os.environ.get(settings.store.dsn_env, "").strip()
    if not dsn:
        raise RuntimeProblem(f"[store] kind = \"postgresql\" needs the database URL in the environment variable "
                             f"{settings.store.dsn_env} ([store] dsn_env), which is not set")
    import psycopg  # slow (~100 ms) and only for this engine

    from mailbot.store.postgresql import PostgresStore

    try:
        if working:  # the mailbox whose cases it sweeps: `settings.for_mailbox(NAME)` names it
            return PostgresStore(dsn, mailbox=settings.mailbox.name, init=True)
        return PostgresStore(dsn, mailbox=None, init=False)
    except StoreCorrupt as e:
        raise RuntimeProblem(str(e)) from None
    except psycopg.Error as e:
        # The libpq message names host and port but never the password; keep it to its first line.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeProblem(f"cannot reach the PostgreSQL store ({settings.store.dsn_env}): {first}") from None


@contextmanager
def writer_lock(settings: Settings) -> Iterator[None]:
    """One writing process per state folder: a second `mailbot run` refuses to start."""
    from filelock import FileLock, Timeout  # slow (~80 ms): only the commands that write need it

    state = settings.bot.state_dir
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise RuntimeProblem(f"cannot create the state folder {state}: {e.strerror or e}") from None
    private_state(state)
    lock = FileLock(str(state / "mailbot.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeProblem(f"another mailbot is already running on {state} (lock {state / 'mailbot.lock'})") from None
    try:
        yield
    finally:
        lock.release()


def make_calendar(settings: Settings) -> BusinessCalendar:
    """Business days and hours of `[followup]`, with the `holiday_overrides` file's extra holidays and
    workdays when one is set (an unreadable or invalid file is a config error)."""
    # Slow (holidays, ~85 ms): `mailbot cases` needs no calendar.
    from mailbot.decide.calendar import BusinessCalendar, parse_overrides

    f = settings.followup
    overrides: tuple[frozenset, frozenset] = (frozenset(), frozenset())
    if f.holiday_overrides is not None:
        path = f.holiday_overrides
        try:
            overrides = parse_overrides(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"[followup] holiday_overrides: cannot read {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise ConfigError(f"[followup] holiday_overrides: {path}: {e}") from None
    return BusinessCalendar(
        zone=settings.bot.zone, opening=f.working_hours[0], closing=f.working_hours[1],
        region=f.holidays, extra_holidays=overrides[0], extra_workdays=overrides[1],
    )


def make_mailbox(settings: Settings, store: Store, once: bool = False) -> Mailbox:
    if settings.mailbox.kind == "maildir":
        return MaildirMailbox(settings.mailbox.path, settings.mailbox.quarantine_folder)
    # slow (imapclient, ~130 ms): only with an IMAP mailbox
    from mailbot.mailbox.imap.mailbox import ImapMailbox

    if once:  # one cycle, often from cron: a server that stays down is a prompt failure, not 5 minutes of retries
        return ImapMailbox(settings.mailbox, checkpoints=store,
                           reconnect_max_wait=float(min(300, 2 * settings.mailbox.timeout_seconds)))
    return ImapMailbox(settings.mailbox, checkpoints=store)


def make_transport(settings: Settings) -> Transport:
    # Slow (smtplib, ~65 ms): `mailbot cases` sends nothing.
    from mailbot.transport.outboxdir import OutboxDirTransport
    from mailbot.transport.smtp import SmtpTransport

    if settings.smtp.kind == "outbox":
        return OutboxDirTransport(settings.bot.state_dir / "outbox")
    transport = SmtpTransport(settings.smtp, _secret(settings.smtp.password_env),
                              accepted_log=settings.bot.state_dir / "smtp-accepted.log")
    dsn = os.environ.get(settings.store.dsn_env) if settings.store.kind == "postgresql" else None
    if dsn:  # several instances: the one that takes over must see what the old leader's server accepted
        from mailbot.store.postgresql.accepted import SharedAcceptedLog

        transport.accepted = SharedAcceptedLog(dsn)  # type: ignore[assignment]  # same add / `in`
    return transport


def _secret(env_name: str) -> str | None:
    return os.environ.get(env_name) or None


def make_services(settings: Settings, store: StorePort, once: bool = False,
                  transport: Transport | None = None, stores: Mapping[str, StorePort] | None = None) -> list[Service]:
    """One service per configured mailbox (`[mailboxes.NAME]`, or the one `[mailbox]`), sharing the store,
    the transport and one lock (the store is one writer's); each knows how the others write (their address
    and templates), so a case answers as its own mailbox whatever mailbox the mail came in by.

    `stores`: one store per mailbox name (PostgreSQL: each mailbox has its own connection and lease fence,
    and sends only its own cases' mail). Several mailboxes in one `run` get mailboxes that give up
    reconnecting promptly, as `--once` does: the runner retries each with its own backoff, and one server
    that stays down must not hold the lock the other mailboxes need."""
    from mailbot.parse.pool import make_parser

    transport = transport if transport is not None else make_transport(settings)
    parser = make_parser(settings.bot.parse_workers)  # one pool of parse workers for every mailbox
    several = len(settings.all_mailboxes) > 1
    services = []
    for i, m in enumerate(settings.all_mailboxes):
        own = settings.for_mailbox(m.name)
        own_store = stores[m.name] if stores is not None else store
        if stores is not None and settings.store.kind == "postgresql":
            from mailbot.store.postgresql import PostgresStore

            if isinstance(own_store, PostgresStore):  # its pending mail only; the first also sends caseless mail
                own_store.outbox_of, own_store.outbox_unowned = m.name, i == 0
                if i == 0:  # cases of a mailbox no longer configured: swept and sent for by the first one
                    own_store.configured = tuple(x.name for x in settings.all_mailboxes)
        services.append(make_service(own, own_store, make_mailbox(own, own_store, once or several), once=once,
                                     transport=transport, parser=parser))
    identities = {s.settings.mailbox.name: (s.me, s.env) for s in services}
    for i, service in enumerate(services):
        service.identities = identities
        service.lock = services[0].lock
        service.adopts_orphans = i == 0
    return services


def make_service(settings: Settings, store: Store, mailbox: Mailbox | None = None, once: bool = False,
                 transport: Transport | None = None, parser: Parser | None = None) -> Service:
    """The service as `mailbot run` has it. `mailbox`, `transport` and `parser` replace the configured ones
    (a memory twin in `explain` and the tests; the parse workers of `[bot] parse_workers` by default)."""
    # Slow (mail-parser, jinja2, the redaction patterns: ~0.6 s): the read-only commands need none of it.
    from mailbot.parse.pool import make_parser
    from mailbot.service import Service

    mailbox = mailbox if mailbox is not None else make_mailbox(settings, store, once)
    sent_folder = mailbox if settings.mailbox.kind == "imap" else None
    return Service(settings, store, mailbox, transport if transport is not None else make_transport(settings),
                   make_calendar(settings), sent_folder,
                   parser=parser if parser is not None else make_parser(settings.bot.parse_workers))
