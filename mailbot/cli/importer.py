"""`mailbot import PATH`: history from an mbox, a Maildir or a folder of .eml files → cases and timelines,
idempotent (Message-ID dedup), sending nothing for the past, then planning what is due from now on."""

from __future__ import annotations

import json
import mailbox
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mailbot.config import Settings
from mailbot.decide.policy import replan_from
from mailbot.mailbox.base import FetchedMail
from mailbot.mailbox.memory import MemoryMailbox
from mailbot.outcomes import CycleReport
from mailbot.parse.pool import parse_in_batches
from mailbot.store import Store
from mailbot.wiring import RuntimeProblem, make_service

COMMIT_EVERY = 500


class ImportProblem(Exception):
    pass


def _sources(path: Path) -> Iterator[FetchedMail]:
    if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
        for sub in ("cur", "new"):
            for f in sorted((path / sub).iterdir()):
                if f.is_file():
                    yield FetchedMail(f"{sub}/{f.name}", f.read_bytes())
    elif path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.suffix.lower() in (".eml", ".msg", ".txt", ".mail", ""):
                yield FetchedMail(str(f.relative_to(path)), f.read_bytes())
    elif path.is_file():
        head = path.read_bytes()[:5]
        if head != b"From ":
            yield FetchedMail(path.name, path.read_bytes())
            return
        box = mailbox.mbox(str(path), create=False)
        try:
            for i, key in enumerate(box.iterkeys()):
                yield FetchedMail(f"{path.name}#{i}", box.get_bytes(key))
        finally:
            box.close()
    else:
        raise ImportProblem(f"{path}: no such file or folder (expected an mbox, a Maildir or a folder of .eml)")


def _date_key(raw: bytes) -> datetime:
    # History must be applied in order: a reply before the mail it answers would leave the wrong status.
    head = raw[:8192].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        if line[:5].lower() == b"date:":
            try:
                d = parsedate_to_datetime(line[5:].decode("ascii", "replace").strip())
                return d if d.tzinfo else d.replace(tzinfo=UTC)
            except (TypeError, ValueError, IndexError):
                break
    return datetime.min.replace(tzinfo=UTC)


def import_path(path: Path, settings: Settings, store: Store, now: datetime, as_json: bool = False) -> int:
    try:
        mails = sorted(_sources(path), key=lambda m: _date_key(m.raw))
    except ImportProblem as e:
        raise RuntimeProblem(str(e)) from None
    except OSError as e:
        raise RuntimeProblem(f"cannot read {path}: {e.strerror or e}") from None
    service = make_service(settings, store, mailbox=MemoryMailbox())
    service.quiet = True
    report = CycleReport()
    started = time.monotonic()
    try:
        with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                      TimeElapsedColumn(), disable=as_json, transient=False) as progress:
            task = progress.add_task("import", total=len(mails), rate="")
            # Parsed on every core (mailbot.parse.pool) while this loop applies, oldest first.
            parsed = parse_in_batches(service.parser, [m.raw for m in mails], COMMIT_EVERY)
            for i, (fetched, mail) in enumerate(zip(mails, parsed, strict=True), 1):
                # The service records an unreadable mail in the quarantine once, under this ref: `import:`
                # says it came from the import's source (which keeps the file), not from the bot's Maildir,
                # so `requeue` never looks for it there.
                service.handle_safely(FetchedMail(f"import:{fetched.ref}", fetched.raw), mail, now, report)
                if i % COMMIT_EVERY == 0:
                    store.commit()
                elapsed = max(time.monotonic() - started, 1e-6)
                progress.update(task, advance=1, rate=f"{i / elapsed:.0f} msg/s")
    finally:  # the parse workers stop with the import, whatever happens
        service.close()
    replanned = _plan_from_now(service, store, now)
    store.commit()
    summary: dict[str, Any] = {
        "messages": len(mails), "cases_opened": report.opened, "threaded": report.threaded,
        "unmatched": report.unmatched, "quarantined": report.quarantined, "duplicates": report.duplicates,
        "replanned": replanned, "sent": 0,
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(f"imported {len(mails)} messages: {report.opened} cases opened, {report.threaded} threaded, "
              f"{report.unmatched} unmatched, {report.quarantined} quarantined, {report.duplicates} already known; "
              f"nothing sent; {replanned} overdue follow-ups re-planned from now")
    return 0


def _plan_from_now(service: Any, store: Store, now: datetime) -> int:
    n = 0
    for case in list(store.active_cases()):
        replanned = replan_from(case, now, service.policy)
        if replanned is not None:
            store.put_case(replanned)
            n += 1
    return n
