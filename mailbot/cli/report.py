"""`mailbot report [--since DATE] [--until DATE] [--mailbox NAME] [--json] [--html FILE]`: the figures of
mailbot.report.figures as a table, as INTERFACE.md's JSON, or as one self-contained HTML page."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from mailbot.config import Settings

DEFAULT_DAYS = 30  # without --since: the last 30 days up to --until (default: today)


class ReportUsage(Exception):
    """A bad option value: one line, exit 2."""


def add_report_parser(subparsers: Any,
                      parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """The `report` subcommand (the caller sets its `func`); `parents` carry --config, --now, --json."""
    p = subparsers.add_parser("report", parents=list(parents),
                              help="what chasing achieves: reminders answered, silent closes, reply times")
    p.add_argument("--since", help=f"first day, YYYY-MM-DD, in [bot] timezone (default: {DEFAULT_DAYS} days "
                                   "before --until)")
    p.add_argument("--until", help="last day, YYYY-MM-DD, included (default: today)")
    p.add_argument("--mailbox", help="only the cases of this mailbox")
    p.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page")
    return p


def _day(value: str, option: str) -> date:
    try:
        if len(value) != 10:  # fromisoformat also takes "20210401" and week dates: one spelling only
            raise ValueError
        day = date.fromisoformat(value)
    except ValueError:
        raise ReportUsage(f"{option} {value!r}: expected a date like 2021-04-01") from None
    if not 1970 <= day.year <= 9000:  # as --now: the period's bounds in UTC overflow at year 1 and 9999
        raise ReportUsage(f"{option} {value!r}: expected a year from 1970 to 9000")
    return day


def period_from(args: argparse.Namespace, settings: Settings, now: datetime) -> Any:
    from mailbot.report.periods import Period

    zone = settings.bot.zone
    until = _day(args.until, "--until") if args.until else now.astimezone(zone).date()
    since = _day(args.since, "--since") if args.since else until - timedelta(days=DEFAULT_DAYS - 1)
    if until < since:
        raise ReportUsage(f"--until {until} is before --since {since}")
    return Period(since, until, zone)


def report_command(args: argparse.Namespace, settings: Settings, now: datetime) -> int:
    """Print the report (or write --html FILE); 2 with one line on stderr for a bad option."""
    try:
        period = period_from(args, settings, now)
    except ReportUsage as e:
        print(f"mailbot: {e}", file=sys.stderr)
        return 2
    # Slow imports (the calendar's holiday data, jinja2) only once the options are known to be good.
    from mailbot.report.parts import close_store, gather_report
    from mailbot.wiring import make_calendar, open_store

    close_store(open_store(settings))  # a store that cannot be opened: one line here, before any process
    # Only the cases with activity in the period or later, read for the report alone (port.report_cases),
    # by a process per CPU.
    data = gather_report(lambda: open_store(settings), period, make_calendar(settings), mailbox=args.mailbox)
    if args.html:
        _write_html(Path(args.html), data, settings, now)
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=2))
    elif not args.html:
        print_report(data)
    else:
        print(f"wrote {args.html}")
    return 0


def _write_html(path: Path, data: dict[str, Any], settings: Settings, now: datetime) -> None:
    from mailbot.render.templates import TemplateProblem, environment
    from mailbot.report.html import render
    from mailbot.wiring import RuntimeProblem

    try:
        _, _, html = render(environment(settings.templates_dir), settings.bot.language, data, settings.bot.name,
                            now.astimezone(settings.bot.zone).strftime("%Y-%m-%d %H:%M"))
    except TemplateProblem as e:
        raise RuntimeProblem(str(e)) from None
    # The page holds engineers' addresses: written privately, and whole or not at all (temp file + rename).
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-", suffix=".html")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
        os.replace(tmp, path)
    except OSError as e:
        raise RuntimeProblem(f"cannot write {path}: {e.strerror or e}") from None


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100)}%"


def _h(value: float | None) -> str:
    return "-" if value is None else f"{value:g} h"


def print_report(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # As mailbot.cli.views prints (which nothing outside mailbot.cli may import): colour on a terminal,
    # plain text at a sensible width in a pipe.
    out = Console(highlight=False, soft_wrap=False, width=None if Console().is_terminal else 160)
    p, c, r = data["period"], data["cases"], data["reminders"]
    title = f"report {p['since']} … {p['until']} ({p['timezone']})" + (f", mailbox {data['mailbox']}"
                                                                       if data.get("mailbox") else "")
    out.print(title, markup=False)
    within = r["answered_within_business_days"]
    for label, value in (
        ("reminders", f"{r['sent']} sent, {r['answered']} answered ({_rate(r['answer_rate'])}); "
                      f"within 1 business day {within['1']}, within 3 {within['3']}"),
        ("cases", f"{c['opened']} opened, {c['closed']} closed, {c['closed_after_silence']} after silence "
                  f"({_rate(c['silent_close_rate'])}), {c['reopened']} reopened; silent closes reopened "
                  f"{c['reopened_after_silent_close']} ({_rate(c['silent_close_reopen_rate'])})"),
        ("customer reply", f"p50 {_h(data['customer_reply_business_hours']['p50'])}, "
                           f"p90 {_h(data['customer_reply_business_hours']['p90'])} (business hours)"),
        ("engineer reply", f"p50 {_h(data['engineer_reply_business_hours']['p50'])}, "
                           f"p90 {_h(data['engineer_reply_business_hours']['p90'])} (business hours)"),
        ("nudges", f"{data['nudges']}, escalations {data['escalations']}"),
    ):
        out.print(f"  {label:<16}{value}", markup=False)
    steps = Table(title="answer rate by reminder", title_justify="left")
    for col in ("step", "template", "sent", "answered", "rate", "≤1 day", "≤3 days"):
        steps.add_column(col, justify="left" if col in ("step", "template") else "right")
    for s in r["by_step"]:
        w = s["answered_within_business_days"]
        steps.add_row(str(s["step"]), s["template"], str(s["sent"]), str(s["answered"]),
                      _rate(s["answer_rate"]), str(w["1"]), str(w["3"]))
    out.print(steps)
    days = Table(title="answer rate by weekday and hour sent", title_justify="left")
    for col in ("sent", "reminders", "answered", "rate"):
        days.add_column(col, justify="left" if col == "sent" else "right")
    for d in r["by_weekday"]:
        if d["sent"]:
            days.add_row(d["name"], str(d["sent"]), str(d["answered"]), _rate(d["answer_rate"]))
    for h in r["by_hour"]:
        if h["sent"]:
            days.add_row(f"{h['hour']:02d}:00", str(h["sent"]), str(h["answered"]), _rate(h["answer_rate"]))
    out.print(days)
    people = Table(title="engineers", title_justify="left")
    for col in ("engineer", "cases", "replies", "reply p50", "reply p90", "closures"):
        people.add_column(col, justify="left" if col == "engineer" else "right", overflow="fold")
    for e in data["by_engineer"]:
        hours = e["reply_business_hours"]
        people.add_row(e["address"], str(e["cases"]), str(e["replies"]), _h(hours["p50"]), _h(hours["p90"]),
                       str(e["closures"]))
    out.print(people)
