"""`mailbot status`: the instances alive, which one holds each mailbox, its last ingest, backlog and unsent
mail — from the PostgreSQL database (any machine that reaches it) or, for the files store, this host."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from mailbot.config import Settings

DEFAULT_MAILBOX = "default"
RUN_CHECKPOINT = "run:instance"  # files store: who `mailbot run` is (written once at its start)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- PostgreSQL: everything from the database, judged by its clock ---------------------------------------


def _pg_status(conn: Any, now: datetime, lease_seconds: float, configured: list[str] | None) -> dict[str, Any]:
    # Alive = seen within two leases (the lease thread beats every third of one), by the database's clock.
    alive = conn.execute(
        """SELECT name, host, pid, started, last_seen FROM instances
            WHERE last_seen >= now() - make_interval(secs => %s) ORDER BY name""",
        (2 * lease_seconds,),
    ).fetchall()
    leases = conn.execute(
        "SELECT mailbox, holder, expires, last_ingest, expires > now() FROM leases ORDER BY mailbox").fetchall()
    names = {row[0] for row in leases}
    names.update(r[0] for r in conn.execute("SELECT DISTINCT mailbox FROM cases").fetchall())
    names.update(configured or [DEFAULT_MAILBOX])
    first = configured[0] if configured else DEFAULT_MAILBOX
    # Backlog: open cases due by `now` (what the sweep has to do); unsent: the ledger's pending mail. Mail
    # outside any case (a receipt to an unknown sender) counts on the first mailbox (the one that sends it).
    backlog = dict(conn.execute(
        "SELECT mailbox, count(*) FROM cases WHERE next_due IS NOT NULL AND next_due <= %s GROUP BY mailbox",
        (now,)).fetchall())
    unsent = dict(conn.execute(
        """SELECT coalesce(c.mailbox, %s), count(*) FROM outbox o LEFT JOIN cases c ON c.key = o."case"
            WHERE o.status = 'pending' GROUP BY 1""", (first,)).fetchall())
    by_name = {row[0]: row for row in leases}
    held: dict[str, list[str]] = {}
    mailboxes = []
    for name in sorted(names):
        lease = by_name.get(name)
        leader = lease[1] if lease is not None and lease[4] else None
        if leader is not None:
            held.setdefault(leader, []).append(name)
        mailboxes.append({
            "name": name, "leader": leader, "lease_until": _iso(lease[2]) if leader else None,
            "last_ingest": _iso(lease[3]) if lease is not None else None,
            "backlog": int(backlog.get(name, 0)), "unsent": int(unsent.get(name, 0)),
        })
    instances = [{"name": n, "host": h, "pid": p, "started": _iso(s), "last_seen": _iso(seen),
                  "mailboxes": held.get(n, [])} for n, h, p, s, seen in alive]
    return {"instances": instances, "mailboxes": mailboxes}


# --- files: one instance on this host; a run is alive when its recorded process is ------------------------


def note_run(store: Any, name: str, mailboxes: list[str] | None = None) -> None:
    """Files store: record who runs, and which mailboxes (one checkpoint write at `mailbot run`'s start), for
    `mailbot status`."""
    store.set_checkpoint(RUN_CHECKPOINT, {"name": name, "host": socket.gethostname(), "pid": os.getpid(),
                                          "started": datetime.now().astimezone().isoformat(),
                                          "mailboxes": list(mailboxes or [DEFAULT_MAILBOX])})


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _files_status(store: Any, now: datetime, configured: list[str] | None) -> dict[str, Any]:
    run = store.get_checkpoint(RUN_CHECKPOINT) or {}
    host = socket.gethostname()
    alive = run.get("host") == host and _process_alive(run.get("pid"))
    name = str(run.get("name") or host)
    names = list(configured or [DEFAULT_MAILBOX])
    running = [str(m) for m in run.get("mailboxes") or [DEFAULT_MAILBOX]] if alive else []
    instance = {"name": name, "host": host, "pid": run.get("pid") if alive else None,
                "started": run.get("started") if alive else None,
                "last_seen": now.isoformat() if alive else None, "mailboxes": running}
    if len(names) == 1:  # one mailbox: no need to read each case for its mailbox
        backlog = {names[0]: len(store.due_case_keys(now))}
        unsent = {names[0]: int(store.counts().get("pending", 0))}
    else:
        backlog, unsent = {}, {}
        owner: dict[str, str] = {}
        for key in store.due_case_keys(now):
            case = store.get_case(key)
            if case is not None:
                owner[key] = case.mailbox
                backlog[case.mailbox] = backlog.get(case.mailbox, 0) + 1
        for entry in store.outbox_pending():  # mail outside any case counts on the first mailbox (it sends it)
            key = entry.get("case") or ""
            if key not in owner:
                case = store.get_case(key) if key else None
                owner[key] = case.mailbox if case is not None else names[0]
            unsent[owner[key]] = unsent.get(owner[key], 0) + 1
    mailboxes = [{"name": m, "leader": name if m in running else None, "lease_until": None, "last_ingest": None,
                  "backlog": int(backlog.get(m, 0)), "unsent": int(unsent.get(m, 0))} for m in names]
    return {"instances": [instance], "mailboxes": mailboxes}


def status(store_or_conn: Any, now: datetime, lease_seconds: float = 15.0,
           mailboxes: list[str] | None = None) -> dict[str, Any]:
    """INTERFACE.md's `status --json` shape, from a psycopg connection (PostgreSQL) or a files store;
    `mailboxes`: the configured names (default: the one `[mailbox]`, "default")."""
    if hasattr(store_or_conn, "execute"):
        return _pg_status(store_or_conn, now, lease_seconds, mailboxes)
    return _files_status(store_or_conn, now, mailboxes)


def render(report: dict[str, Any]) -> str:
    lines = ["instances:"]
    for i in report["instances"]:
        holds = ", ".join(i["mailboxes"]) or "nothing"
        seen = i["last_seen"] or "not running"
        lines.append(f"  {i['name']}  host {i['host']}, pid {i['pid'] or '-'}, started {i['started'] or '-'}, "
                     f"last seen {seen}; holds {holds}")
    if not report["instances"]:
        lines.append("  none alive")
    lines.append("mailboxes:")
    for m in report["mailboxes"]:
        leader = f"led by {m['leader']}" + (f" until {m['lease_until']}" if m["lease_until"] else "") \
            if m["leader"] else "no leader"
        lines.append(f"  {m['name']}  {leader}; last ingest {m['last_ingest'] or '-'}; "
                     f"backlog {m['backlog']}, unsent {m['unsent']}")
    return "\n".join(lines)


def status_command(settings: Settings, as_json: bool, out: TextIO, now: datetime | None = None) -> int:
    """`mailbot status [--json]`; problems reaching the store are RuntimeProblem (one line, exit 1)."""
    from mailbot.wiring import RuntimeProblem, open_store

    now = now or datetime.now().astimezone()
    names = [m.name for m in settings.all_mailboxes]
    if settings.store.kind == "postgresql":
        dsn = os.environ.get(settings.store.dsn_env)
        if not dsn:
            raise RuntimeProblem(f"[store] dsn_env: the environment variable {settings.store.dsn_env} is not set")
        import psycopg

        try:
            with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
                report = status(conn, now, settings.store.lease_seconds, names)
        except psycopg.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RuntimeProblem(f"cannot read the status from the database: {first}") from None
    else:
        report = status(open_store(settings), now, mailboxes=names)
    if as_json:
        out.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(render(report) + "\n")
    return 0
