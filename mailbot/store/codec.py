"""Cases as JSON documents and back: the one place that turns store documents into models (every engine uses it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

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
        "mailbox": case.mailbox,
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


# Enum members by value: a dict lookup instead of an Enum call (about a microsecond each, twice per timeline
# entry, a hundred thousand cases in a report). An unknown value raises KeyError, which every engine reports
# as a corrupt document, as it does ValueError.
_ROLES: dict[str, Role] = {r.value: r for r in Role}
_KINDS: dict[str, EntryKind] = {k.value: k for k in EntryKind}
_STATUSES: dict[str, CaseStatus] = {s.value: s for s in CaseStatus}


def _entry(e: dict[str, Any]) -> TimelineEntry:
    get = e.get
    return TimelineEntry(e["message_id"], datetime.fromisoformat(e["date"]), e["from"], _ROLES[e["role"]],
                         _KINDS[e["kind"]], e["direction"], e["text"], get("subject", ""), get("matched_by", ""),
                         bool(get("internal", False)))


def case_from_doc(doc: dict[str, Any]) -> Case:
    get = doc.get
    action = get("next_action")
    closure = get("closure")
    return Case(
        key=doc["key"],
        title=doc["title"],
        subject=doc["subject"],
        status=_STATUSES[doc["status"]],
        language=doc["language"],
        language_override=get("language_override"),
        opened=datetime.fromisoformat(doc["opened"]),
        last_activity=datetime.fromisoformat(doc["last_activity"]),
        tracking_tokens=tuple(get("tracking_tokens", ())),
        customers=tuple(get("customers", ())),
        engineers=tuple(get("engineers", ())),
        contact_names=tuple(sorted(get("contact_names", {}).items())),
        reminders_sent=get("reminders_sent", 0),
        next_action=None if not action else NextAction(action["kind"], datetime.fromisoformat(action["due"])),
        last_engineer_mail=_dt(get("last_engineer_mail")),
        followup_enabled=get("followup_enabled", True),
        snoozed_until=_dt(get("snoozed_until")),
        phone_call_logged=get("phone_call_logged", False),
        timezone=get("timezone"),
        failed_addresses=tuple(get("failed_addresses", ())),
        closure=None if closure is None else ClosureFields(**closure),
        notes=tuple(get("notes", ())),
        # Older documents have neither: their customers stay parties, their entries stay as shown before.
        outsiders=tuple(get("outsiders", ())),
        mailbox=get("mailbox", "default"),  # written before several mailboxes: the one mailbox there was
        timeline=tuple(map(_entry, get("timeline", ()))),
    )


# --- what the report reads of a case, straight from JSON -------------------------------------------------
# The report (mailbot.report.figures) reads a few fields of every case of a period: over 100,000 cases,
# turning each whole document into a Case (and first each JSON text into Python strings, most of them the
# texts of mail the report never looks at) is most of its time. These types decode only those fields from
# the document's bytes, with the names Case and TimelineEntry give them; the rest of the document is skipped
# unread. An entry's text stays undecoded JSON until it is asked for (the report reads commands' texts only).


class EntryFacts(msgspec.Struct, frozen=True, gc=False):
    """A timeline entry as the report reads it: TimelineEntry's fields of those names."""

    date: datetime
    from_addr: str = msgspec.field(name="from")
    role: Role
    kind: EntryKind
    direction: str
    json_text: msgspec.Raw = msgspec.field(name="text")
    internal: bool = False

    @property
    def text(self) -> str:
        return msgspec.json.decode(self.json_text)  # type: ignore[no-any-return]


class CaseFacts(msgspec.Struct, frozen=True, gc=False):
    """A case as the report reads it: Case's fields of those names (and the mailbox, when a document has one)."""

    key: str
    opened: datetime
    last_activity: datetime
    engineers: tuple[str, ...] = ()
    timezone: str | None = None
    timeline: tuple[EntryFacts, ...] = ()
    mailbox: str = "default"


class _Doc(CaseFacts, frozen=True, gc=False, kw_only=True):
    """A files-engine document: the facts and the document's key."""

    stored_key: str = msgspec.field(name="_k")


# A TinyDB file of the files engine: {"_default": {"1": {document}, ...}}.
_SHARD = msgspec.json.Decoder(dict[str, dict[str, _Doc]])


def facts_of_shard(raw: bytes) -> Iterator[CaseFacts] | None:
    """The case facts of one files-engine shard file, or None when its bytes are not exactly what
    `case_to_doc` and the files engine write, or hold what msgspec refuses and the json module reads (a
    lone surrogate escape, from undecodable mail bytes): then the caller reads the file the ordinary way,
    which decodes what it can and reports the rest as corrupt. This path never judges a file."""
    try:
        tables = _SHARD.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    docs: dict[str, _Doc] = {}
    for d in tables.get("_default", {}).values():
        docs[d.stored_key] = d  # as the engine reads a shard: by key, the last document of a key wins
    return iter(docs.values())


_CASE = msgspec.json.Decoder(CaseFacts)


def facts_of_json(text: str | bytes) -> CaseFacts | None:
    """The case facts of one document's JSON text; None when it is not what `case_to_doc` writes (the caller
    then reads it through `case_from_doc`, which reports what is wrong with it)."""
    try:
        return _CASE.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
