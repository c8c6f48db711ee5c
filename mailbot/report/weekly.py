"""The weekly report by mail (`[report] weekly_to`): when it is due — pure — and putting it in the outbox
ledger once, for the sweep (`send_weekly_report`), which sends it with everything else."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from mailbot.decide.calendar import BusinessCalendar
from mailbot.models import EntryKind

log = logging.getLogger("mailbot")

CHECKPOINT = "report:weekly"  # {"sent": ISO-8601, "action_id": ...}: the last week whose report was recorded


def weekly_slot(now: datetime, calendar: BusinessCalendar) -> datetime:
    """When this week's report is due: the opening of the first business day of `now`'s week (Monday, or
    the first workday after a holiday), in UTC."""
    today = now.astimezone(calendar.zone).date()
    return calendar.first_opening(today - timedelta(days=today.weekday()))


def weekly_report_due(last_sent: datetime | None, now: datetime, calendar: BusinessCalendar) -> bool:
    """Whether the report goes out now: this week's slot has come, it was not sent since, and it is working
    time (a bot that was down on Monday sends it when it is back, inside working hours, once)."""
    slot = weekly_slot(now, calendar)
    return slot <= now and calendar.in_working_hours(now) and (last_sent is None or last_sent < slot)


def weekly_action_id(since: str) -> str:
    """One id per reported week: the outbox ledger sends each id once, whatever happens to the checkpoint."""
    return f"report/weekly/{since}"


def send_weekly_report(service: Any, now: datetime) -> bool:
    """Record the weekly report in the outbox ledger when it is due (the sweep's `flush_outbox` sends it);
    True when one was recorded. Nothing when `[report] weekly_to` is empty or while importing history.
    `service` is the mailbot.service.Service calling it (not imported here: the service imports this module)."""
    settings = service.settings
    to = settings.report.weekly_to
    if not to or service.quiet:
        return False
    calendar = service.policy.calendar
    mark = service.store.get_checkpoint(CHECKPOINT)
    last = datetime.fromisoformat(mark["sent"]) if mark and mark.get("sent") else None
    if not weekly_report_due(last, now, calendar):
        return False
    # Slow imports (figures over every case, jinja2) only once a week.
    from mailbot.render import compose
    from mailbot.render.templates import TemplateProblem
    from mailbot.report.figures import report
    from mailbot.report.html import report_mail
    from mailbot.report.periods import previous_week

    period = previous_week(now, settings.bot.zone)
    action_id = weekly_action_id(period.since.isoformat())
    if service.store.outbox_entry(action_id) is None:
        data = report(service.store.report_cases(period.start), period, calendar)  # in this process: no fork
        try:
            mail = report_mail(service.env, settings.bot.language, data, service.me, to, action_id, now)
        except TemplateProblem as e:
            log.error("- weekly report not sent: %s", e)
            return False
        raw = compose.to_bytes(mail, now)
        service.store.outbox_record({
            "action_id": action_id, "case": "-", "kind": EntryKind.RECEIPT.value,
            "message_id": mail.message_id,
            "recipients": compose.recipients(mail), "sender": mail.from_addr, "subject": mail.subject,
            "text": mail.text, "raw": raw.decode("ascii", "surrogateescape"), "recorded": now.isoformat(),
            "attempts": 0,
        })
        # The record is durable before the checkpoint says "sent" (a checkpoint is durable at once).
        service.store.commit()
        log.info("- weekly report %s … %s recorded for %s", period.since, period.until, ", ".join(to))
    service.store.set_checkpoint(CHECKPOINT, {"sent": now.isoformat(), "action_id": action_id})
    return True
