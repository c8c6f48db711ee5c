"""What people see: case tables, case cards, the plan and `explain`, with rich (wide CJK characters
aligned), and the JSON shapes of INTERFACE.md."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from mailbot.cases import reaches_customer
from mailbot.models import Case, CaseStatus
from mailbot.text import local_time

_URGENCY = {
    CaseStatus.WAITING_ENGINEER: 0, CaseStatus.OPEN: 1, CaseStatus.WAITING_CUSTOMER: 2,
    CaseStatus.WAITING_VENDOR: 3, CaseStatus.CLOSED: 4,
}


def console() -> Console:
    # A pipe gets plain text at a sensible width; a terminal gets colour.
    return Console(highlight=False, soft_wrap=False, width=None if Console().is_terminal else 160)


def _local(d: datetime | None, zone: ZoneInfo) -> str:
    return "-" if d is None else local_time(d, zone)


def case_json(case: Case, zone: ZoneInfo) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": case.key,
        "title": case.title,
        "status": case.status.value,
        "customers": list(case.customers),
        "engineers": list(case.engineers),
        "tracking_tokens": list(case.tracking_tokens),
        "language": case.effective_language,
        "reminders_sent": case.reminders_sent,
        "next_action": None if case.next_action is None else {
            "kind": case.next_action.kind, "due": case.next_action.due.astimezone(zone).isoformat()},
        "last_activity": case.last_activity.astimezone(zone).isoformat(),
        "failed_addresses": list(case.failed_addresses),
        "followup_enabled": case.followup_enabled,
        "mailbox": case.mailbox,
    }
    data["messages"] = [
        {"message_id": e.message_id, "date": e.date.astimezone(zone).isoformat(), "from": e.from_addr,
         "role": e.role.value, "kind": e.kind.value, "direction": e.direction, "text": e.text,
         "matched_by": e.matched_by or None,
         # An internal note (engineers only), and whether the customers received the entry at all.
         "internal": e.internal, "customer_visible": reaches_customer(e)}
        for e in case.timeline
    ]
    data["outsiders"] = list(case.outsiders)
    data["notes"] = list(case.notes)
    return data


def filter_cases(cases: list[Case], status: str | None, engineer: str | None, overdue: bool,
                 now: datetime, mailbox: str | None = None) -> list[Case]:
    out = [c for c in cases if (status is None or c.status.value == status)
           and (mailbox is None or c.mailbox == mailbox)
           and (engineer is None or engineer.lower() in c.engineers)
           and (not overdue or (c.next_action is not None and c.next_action.due <= now))]
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(out, key=lambda c: (_URGENCY[c.status], c.next_action.due if c.next_action else far,
                                      -c.last_activity.timestamp()))


def print_cases(cases: list[Case], zone: ZoneInfo, now: datetime) -> None:
    table = Table(title=f"{len(cases)} cases", title_justify="left")
    for col in ("key", "title", "status", "customer", "engineer", "last activity", "next action"):
        table.add_column(col, overflow="fold")
    for c in cases:
        nxt = "-" if c.next_action is None else f"{c.next_action.kind} {_local(c.next_action.due, zone)}"
        if c.next_action is not None and c.next_action.due <= now:
            nxt += " (due)"
        table.add_row(c.key, c.title, c.status.value, ", ".join(c.customers) or "-",
                      ", ".join(c.engineers) or "-", _local(c.last_activity, zone), nxt)
    console().print(table)


def print_unmatched(records: list[dict[str, Any]], zone: ZoneInfo) -> None:
    table = Table(title=f"{len(records)} unmatched messages (no case key, no known thread)", title_justify="left")
    for col in ("date", "from", "subject", "why"):
        table.add_column(col, overflow="fold")
    for r in sorted(records, key=lambda r: r.get("date", ""))[-50:]:
        table.add_row(_local(datetime.fromisoformat(r["date"]), zone), r.get("from") or "-",
                      r.get("subject") or "-", r.get("reason", ""))
    console().print(table)


def print_quarantined(records: list[dict[str, Any]], zone: ZoneInfo) -> None:
    table = Table(title=f"{len(records)} quarantined messages (`mailbot requeue` takes them again)",
                  title_justify="left")
    for col in ("when", "message", "why"):
        table.add_column(col, overflow="fold")
    for r in sorted(records, key=lambda r: r.get("at", ""))[-50:]:
        table.add_row(_local(datetime.fromisoformat(r["at"]), zone) if r.get("at") else "-", r["ref"], r["reason"])
    console().print(table)


def print_case(case: Case, zone: ZoneInfo) -> None:
    out = console()
    out.print(f"[bold]{case.key}[/bold]  {case.title}")
    nxt = "nothing scheduled" if case.next_action is None else \
        f"{case.next_action.kind} at {_local(case.next_action.due, zone)}"
    for label, value in (
        ("status", case.status.value), ("customers", ", ".join(case.customers) or "-"),
        ("engineers", ", ".join(case.engineers) or "-"), ("tokens", ", ".join(case.tracking_tokens) or "-"),
        ("language", case.effective_language), ("reminders sent", str(case.reminders_sent)), ("next", nxt),
    ):
        out.print(f"  {label:<15}{value}", markup=False)
    if case.failed_addresses:
        out.print(f"  {'failed':<15}{', '.join(case.failed_addresses)}", markup=False)
    if case.outsiders:
        out.print(f"  {'wrote in':<15}{', '.join(case.outsiders)} (not included: #add to include)", markup=False)
    table = Table(title="timeline", title_justify="left")
    for col in ("date", "who", "kind", "dir", "text"):
        table.add_column(col, overflow="fold")
    for e in case.timeline:
        text = " ".join(e.text.split())
        table.add_row(_local(e.date, zone), f"{e.from_addr} ({e.role.value})",
                      e.kind.value + (" (internal)" if e.internal else ""), e.direction,
                      text[:160] + ("…" if len(text) > 160 else ""))
    out.print(table)
    for note in case.notes:
        out.print(f"  note: {note}", markup=False)


def print_plan(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"{len(rows)} scheduled actions", title_justify="left")
    for col in ("due", "kind", "case", "title"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["due"][:16].replace("T", " ") + (" (due)" if r["overdue"] else ""), r["kind"], r["case"],
                      r["title"])
    console().print(table)


def print_explain(d: dict[str, Any]) -> None:
    out = console()
    if d.get("quarantine"):
        out.print(f"lands in     quarantine: {d['quarantine']}", markup=False)
        return
    lines = [
        ("message-id", d["message_id"] + (" (synthesized: the mail has none)" if d["message_id_synthesized"] else "")),
        ("subject", d["subject"]), ("from", f"{d['from_name']} <{d['from']}>".strip()),
        ("date", d["date"] or "(none)"), ("role", d["role"]),
        ("flags", ", ".join(d["flags"]) or "none"),
    ]
    for reason in d["flag_reasons"]:
        lines.append(("  because", reason))
    for problem in d.get("header_problems", []):  # a mail without From or Subject is never read silently
        lines.append(("headers", problem))
    if d["case_key"]:
        lines.append(("case", f"{d['case_key']} — matched by {d['matched_by']} ({d['matched_text']})"))
        lines.append(("title", d["title"] or "-"))
    else:
        lines.append(("case", "none: would be kept as unmatched"))
    lines.append(("tokens", ", ".join(d["tracking_tokens"]) or "-"))
    lines.append(("commands", "; ".join(c["raw"] + (f" → {c['error']}" if c["error"] else "") for c in d["commands"])
                  or "none"))
    lines.append(("answerable", "yes" if d["would_answer"] else f"no: {d['not_answered_because']}"))
    lines.append(("lands in", d["lands"]))
    if d.get("next_action"):
        lines.append(("then", f"{d['next_action']['kind']} at {d['next_action']['due']}"))
    for a in d["attachments"]:
        lines.append(("attachment", f"{a['name']} ({a['type']}, {a['size']} bytes)"))
    for label, value in lines:
        out.print(f"{label:<12} {value}", markup=False)
    out.print("new text:", markup=False)
    for line in (d["text"] or "(empty)").splitlines()[:40]:
        out.print(f"  | {line}", markup=False)
