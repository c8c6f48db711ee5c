"""The report as a page and a mail: the `report` templates (subject, text, HTML with inline SVG charts) — pure.

The charts are drawn by the template from numbers computed here (bar positions and heights), so nothing
reaches the HTML unescaped: no `Markup`, no `|safe` (templates/README.md). Outlook ignores SVG; the tables
beside each chart carry the same figures, with bars made of table cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2

from mailbot.models import EntryKind, OutboundMail
from mailbot.render.compose import make_message_id
from mailbot.render.templates import Identity, no_newlines, render_parts

TEMPLATE = "report"
# Chart geometry (px): wide enough for 7 weekdays or ~12 hours of labels, small enough for a phone.
CHART_WIDTH, CHART_HEIGHT, PLOT_TOP, PLOT_BOTTOM, PLOT_LEFT = 560, 200, 16, 150, 40


@dataclass(frozen=True)
class Bar:
    key: int  # the step, the weekday (0 = Monday) or the hour: the template names it in its language
    x: int
    y: int
    width: int
    height: int
    rate: str  # "42%", or "–" when nothing was sent
    sent: int
    answered: int
    percent: int  # 0–100, for the bars made of table cells


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int
    bottom: int
    left: int
    bars: tuple[Bar, ...]
    gridlines: tuple[tuple[int, str], ...]  # (y, "50%")


def percent(value: float | None) -> str:
    return "–" if value is None else f"{round(value * 100)}%"


def chart(rows: list[dict[str, Any]], key: str) -> Chart:
    """Bars of the answer rate (0–100 %) of each row, in order."""
    plot = PLOT_BOTTOM - PLOT_TOP
    slot = (CHART_WIDTH - PLOT_LEFT - 8) / max(1, len(rows))
    width = max(4, min(56, int(slot * 0.6)))  # two bars must not look like two walls
    bars = []
    for i, row in enumerate(rows):
        value = row["answer_rate"] or 0.0
        height = round(plot * value)
        bars.append(Bar(key=row[key], x=round(PLOT_LEFT + i * slot + (slot - width) / 2),
                        y=PLOT_BOTTOM - height, width=width, height=height, rate=percent(row["answer_rate"]), sent=row["sent"],
                        answered=row["answered"], percent=round(value * 100)))
    grid = tuple((PLOT_BOTTOM - round(plot * f), f"{round(f * 100)}%") for f in (0.0, 0.25, 0.5, 0.75, 1.0))
    return Chart(CHART_WIDTH, CHART_HEIGHT, PLOT_TOP, PLOT_BOTTOM, PLOT_LEFT, tuple(bars), grid)


def _hours_with_reminders(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hours from the first to the last in which a reminder went out (they go out in working hours)."""
    sent = [r["hour"] for r in rows if r["sent"]]
    return rows[min(sent): max(sent) + 1] if sent else []


def context(data: dict[str, Any], bot_name: str, generated: str) -> dict[str, Any]:
    """What the `report` templates get: the figures as `mailbot report --json` prints them (`r`), the
    charts, the rates as text, and who made it when."""
    reminders = data["reminders"]
    hours = _hours_with_reminders(reminders["by_hour"])
    return {
        "r": data,
        "charts": {
            "step": chart(reminders["by_step"], "step"),
            "weekday": chart(reminders["by_weekday"], "weekday"),
            "hour": chart(hours, "hour"),
        },
        "hours": hours,
        "rates": {
            "answer": percent(reminders["answer_rate"]),
            "silent_close": percent(data["cases"]["silent_close_rate"]),
            "silent_close_reopen": percent(data["cases"]["silent_close_reopen_rate"]),
        },
        "mailbox": data.get("mailbox", ""),
        "bot_name": bot_name,
        "generated": generated,
    }


def render(env: jinja2.Environment, language: str, data: dict[str, Any], bot_name: str,
           generated: str) -> tuple[str, str, str]:
    """(subject, text, html) of the report in `language` (a language without it falls back to en/)."""
    return render_parts(env, language, TEMPLATE, context(data, bot_name, generated))


def report_mail(env: jinja2.Environment, language: str, data: dict[str, Any], me: Identity, to: tuple[str, ...],
                action_id: str, now: datetime) -> OutboundMail:
    """The weekly report as one mail to the leads (text + HTML alternative), from the bot, in no case's
    thread. `action_id` names the week, so the outbox ledger sends it once."""
    generated = now.astimezone(me.zone).strftime("%Y-%m-%d %H:%M")
    subject, text, html = render(env, language, data, me.name, generated)
    return OutboundMail(
        action_id=action_id, case_key="-", kind=EntryKind.RECEIPT,
        message_id=make_message_id(action_id, me.domain, me.message_id_secret),
        subject=no_newlines(subject), from_addr=me.address, from_name=no_newlines(me.name), to=to, cc=(),
        in_reply_to=None, references=(), text=text, html=html,
    )
