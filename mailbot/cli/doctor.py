"""`mailbot doctor`: config, templates, store, calendar, mailbox, parse workers and sending — one verdict line per check,
a clear reason on failure, exit 1 when anything fails."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mailbot.config import Settings
from mailbot.decide.policy import SendMail
from mailbot.mailbox.imap.mailbox import ImapMailbox
from mailbot.models import Case, CaseStatus, EntryKind, InboundMail
from mailbot.parse.pool import MIN_BATCH, PoolParser, cores, make_parser
from mailbot.render.templates import LANGUAGES, TEMPLATE_NAMES, Identity, environment, render_parts
from mailbot.render.templates import context as render_context
from mailbot.wiring import make_calendar, make_transport, open_store


def _templates(settings: Settings, now: datetime) -> str:
    env = environment(settings.templates_dir)
    me = Identity(settings.bot.address, settings.bot.name, settings.bot.zone)
    sample = Case(key="CAS-00000-DOCTOR", title="doctor", subject="[CAS-00000-DOCTOR] doctor",
                  status=CaseStatus.WAITING_CUSTOMER, language="en", opened=now, last_activity=now,
                  customers=("customer@example.org",), engineers=(settings.bot.address,))
    for language in LANGUAGES:
        for name in TEMPLATE_NAMES:
            send = SendMail("doctor", sample.key, EntryKind.REMINDER, name, sample.customers)
            render_parts(env, language, name, render_context(sample, send, me, now, 3))
    # `report` (INTERFACE.md's template names) is no case's mail: rendered with the figures of no cases.
    from mailbot.report.figures import report
    from mailbot.report.html import render as render_report
    from mailbot.report.periods import default_period

    figures = report([], default_period(now, settings.bot.zone), make_calendar(settings))
    for language in LANGUAGES:
        render_report(env, language, figures, settings.bot.name, f"{now:%Y-%m-%d %H:%M}")
    return f"{len(LANGUAGES) * (len(TEMPLATE_NAMES) + 1)} templates render ({settings.templates_dir})"


def _store(settings: Settings, now: datetime) -> str:
    counts = open_store(settings).counts()
    return (f"{settings.bot.state_dir / 'store'}: {counts['active']} open, {counts['closed']} closed, "
            f"{counts['unmatched']} unmatched, {counts['quarantined']} quarantined, {counts['pending']} unsent")


def _calendar(settings: Settings, now: datetime) -> str:
    cal = make_calendar(settings)
    warning = cal.coverage_warning(now.astimezone(settings.bot.zone).date())
    if warning:
        raise Warning(warning)
    return f"business days: {settings.followup.holidays}, {settings.bot.timezone}"


def _mailbox(settings: Settings, now: datetime) -> str:
    if settings.mailbox.kind == "maildir":
        path = settings.mailbox.path
        for sub in ("new", "cur", "tmp"):
            for part in (path, path / sub):
                if part.exists() and not part.is_dir():
                    raise RuntimeError(f"{part} is a file, not a folder: move it away (`mailbot run` cannot use it)")
        missing = [sub for sub in ("new", "cur", "tmp") if not (path / sub).is_dir()]
        if missing:
            # A state the bot fixes itself is not a failure, as long as it can: the nearest existing folder
            # must be writable for `mailbot run` to create the Maildir.
            existing = next(p for p in (path, *path.parents) if p.exists())
            if not os.access(existing, os.W_OK):
                raise RuntimeError(f"{path} does not exist and {existing} is not writable: create the Maildir")
            raise Warning(f"{path} is not a Maildir yet (no {'/, '.join(missing)}/): `mailbot run` creates it")
        if not os.access(path / "new", os.W_OK):
            raise RuntimeError(f"{path}/new is not writable")
        waiting = sum(1 for _ in (path / "new").iterdir())
        return f"Maildir {path}: {waiting} new"
    return ImapMailbox(settings.mailbox).check()


def _parsing(settings: Settings, now: datetime) -> str:
    """Fork the parse workers and have them parse a small batch, as a backlog would be."""
    parser = make_parser(settings.bot.parse_workers)
    if not isinstance(parser, PoolParser):
        return f"in the bot's own process (parse_workers = {settings.bot.parse_workers}, {cores()} core(s))"
    batch = [f"Message-ID: <doctor-{n}@mailbot.invalid>\r\nSubject: doctor\r\n\r\nhello\r\n".encode()
             for n in range(MIN_BATCH)]
    try:
        results = list(parser.parse_all(batch))
        worked = parser.running and all(isinstance(r, InboundMail) for r in results)
    finally:
        parser.close()
    if not worked:
        raise Warning("the parse workers could not start: a backlog is parsed in the bot's own process (slower)")
    return f"{parser.workers} parse workers on {cores()} cores: a test batch of {MIN_BATCH} parsed"


def _sending(settings: Settings, now: datetime) -> str:
    return make_transport(settings).check()


CHECKS: list[tuple[str, Callable[[Settings, datetime], str]]] = [
    ("templates", _templates), ("store", _store), ("calendar", _calendar), ("mailbox", _mailbox),
    ("parsing", _parsing), ("sending", _sending),
]


# Checked once per mailbox (`[mailboxes.NAME]`: each its own server, account and templates).
PER_MAILBOX = frozenset({"templates", "mailbox"})


def _one(name: str, check: Callable[[Settings, datetime], str], settings: Settings, now: datetime) -> dict[str, Any]:
    try:
        return {"check": name, "ok": True, "detail": check(settings, now)}
    except Warning as w:
        return {"check": name, "ok": True, "warning": True, "detail": str(w)}
    except Exception as e:  # each check reports its own reason; doctor never shows a traceback
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        return {"check": name, "ok": False, "detail": " ".join(str(reason).split())}


def run_checks(settings: Settings, now: datetime | None = None, as_json: bool = False) -> int:
    now = now or datetime.now(UTC)
    results: list[dict[str, Any]] = [{"check": "config", "ok": True,
                                      "detail": str(settings.source or "built-in defaults")}]
    names = [m.name for m in settings.all_mailboxes]
    for name, check in CHECKS:
        if name in PER_MAILBOX and len(names) > 1:
            # One line per mailbox, naming it: a refused login on one desk must not hide behind another's ok.
            for mailbox in names:
                results.append({**_one(name, check, settings.for_mailbox(mailbox), now), "mailbox": mailbox})
        else:
            results.append(_one(name, check, settings, now))
    if as_json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for r in results:
            verdict = "ok  " if r["ok"] and not r.get("warning") else ("WARN" if r["ok"] else "FAIL")
            where = f" ({r['mailbox']})" if "mailbox" in r else ""
            print(f"{verdict} {r['check']}{where}: {r['detail']}")
    return 0 if all(r["ok"] for r in results) else 1
