"""Cases as JSON documents and back: the one place that turns store documents into models (every engine uses it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mailbot.models import Case, CaseStatus, ClosureFields, EntryKind, NextAction, Role, TimelineEntry


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document without the files engine's key field."""
    return {k: v for k, v in doc.items() if k != "_k"}


def utc(d: datetime) -> str:
    """A fixed-width UTC timestamp: these strings compare like the instants they name."""
    return d.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _iso(d: datetime | None) -> str | None:
    return None if d is None else d.isoformat()


def case_to_doc(case: Case) -> dict[str, Any]:
    return {
        "key": case.key,
        "title": case.title,
        "subject": case.subject,
        "status": case.status.value,
        "language": case.language,
        "language_override": case.language_override,
        "opened": _iso(case.opened),
        "last_activity": _iso(case.last_activity),
        "tracking_tokens": list(case.tracking_tokens),
        "customers": list(case.customers),
        "engineers": list(case.engineers),
        "contact_names": dict(case.contact_names),
        "reminders_sent": case.reminders_sent,
        "next_action": None
        if case.next_action is None
        else {"kind": case.next_action.kind, "due": _iso(case.next_action.due)},
        "last_engineer_mail": _iso(case.last_engineer_mail),
        "followup_enabled": case.followup_enabled,
        "snoozed_until": _iso(case.snoozed_until),
        "phone_call_logged": case.phone_call_logged,
        "timezone": case.timezone,
        "failed_addresses": list(case.failed_addresses),
        "closure": None if case.closure is None else vars(case.closure).copy(),
        "notes": list(case.notes),
        "outsiders": list(case.outsiders),
        "timeline": [
            {
                "message_id": e.message_id,
                "date": _iso(e.date),
                "from": e.from_addr,
                "role": e.role.value,
                "kind": e.kind.value,
                "direction": e.direction,
                "text": e.text,
                "subject": e.subject,
                "matched_by": e.matched_by,
                "internal": e.internal,
            }
            for e in case.timeline
        ],
    }


def case_from_doc(doc: dict[str, Any]) -> Case:
    action = doc.get("next_action")
    closure = doc.get("closure")
    return Case(
        key=doc["key"],
        title=doc["title"],
        subject=doc["subject"],
        status=CaseStatus(doc["status"]),
        language=doc["language"],
        language_override=doc.get("language_override"),
        opened=datetime.fromisoformat(doc["opened"]),
        last_activity=datetime.fromisoformat(doc["last_activity"]),
        tracking_tokens=tuple(doc.get("tracking_tokens", ())),
        customers=tuple(doc.get("customers", ())),
        engineers=tuple(doc.get("engineers", ())),
        contact_names=tuple(sorted(doc.get("contact_names", {}).items())),
        reminders_sent=doc.get("reminders_sent", 0),
        next_action=None if not action else NextAction(action["kind"], datetime.fromisoformat(action["due"])),
        last_engineer_mail=_dt(doc.get("last_engineer_mail")),
        followup_enabled=doc.get("followup_enabled", True),
        snoozed_until=_dt(doc.get("snoozed_until")),
        phone_call_logged=doc.get("phone_call_logged", False),
        timezone=doc.get("timezone"),
        failed_addresses=tuple(doc.get("failed_addresses", ())),
        closure=None if closure is None else ClosureFields(**closure),
        notes=tuple(doc.get("notes", ())),
        # Older documents have neither: their customers stay parties, their entries stay as shown before.
        outsiders=tuple(doc.get("outsiders", ())),
        timeline=tuple(
            TimelineEntry(
                message_id=e["message_id"],
                date=datetime.fromisoformat(e["date"]),
                from_addr=e["from"],
                role=Role(e["role"]),
                kind=EntryKind(e["kind"]),
                direction=e["direction"],
                text=e["text"],
                subject=e.get("subject", ""),
                matched_by=e.get("matched_by", ""),
                internal=bool(e.get("internal", False)),
            )
            for e in doc.get("timeline", ())
        ),
    )
