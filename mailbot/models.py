"""The frozen values that flow through mailbot: mail in, cases, actions, mail out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo


class Role(StrEnum):
    ENGINEER = "engineer"
    CUSTOMER = "customer"
    BOT = "bot"
    OTHER = "other"


class Flag(StrEnum):
    """What kind of sender produced a mail; RFC 3834 says never to answer the first three."""

    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    LIST = "list"


class CaseStatus(StrEnum):
    OPEN = "open"
    WAITING_CUSTOMER = "waiting_customer"
    WAITING_ENGINEER = "waiting_engineer"
    WAITING_VENDOR = "waiting_vendor"
    CLOSED = "closed"


class EntryKind(StrEnum):
    MAIL = "mail"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    COMMAND = "command"
    REMINDER = "reminder"
    CLOSURE = "closure"
    RECEIPT = "receipt"
    # Mail to our own people (issue 17): on the case's timeline (role bot, direction out) for a nudge and an
    # escalation; a digest is about many cases and is on none (only the outbox ledger names it).
    NUDGE = "nudge"
    ESCALATION = "escalation"
    DIGEST = "digest"


class MatchRule(StrEnum):
    SUBJECT = "subject"
    TRACKING_TOKEN = "tracking_token"
    IN_REPLY_TO = "in_reply_to"
    REFERENCES = "references"
    BOUNCED_HEADERS = "bounced_headers"


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass(frozen=True)
class InboundMail:
    """One received message, decoded once at the edge; nothing after parse touches raw bytes."""

    message_id: str
    subject: str
    from_addr: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: datetime | None  # aware, UTC; None when the Date header is missing or unreadable
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    new_text: str  # the mail's own words: quoted history removed, credentials masked
    attachments: tuple[Attachment, ...] = ()
    flags: frozenset[Flag] = frozenset()
    flag_reasons: tuple[str, ...] = ()
    return_path: str | None = None
    # For bounces: subject and ids of the returned original, so the bounce threads to its case.
    bounced_subject: str = ""
    bounced_message_ids: tuple[str, ...] = ()
    # Only from the message/delivery-status part of a real DSN (is_dsn), never from X-Failed-Recipients.
    bounced_recipients: tuple[str, ...] = ()
    # Raw values, unfolded, never RFC 2047-decoded (RFC 8601 has no encoded words); mailbot.decide.authres reads them.
    authentication_results: tuple[str, ...] = ()
    message_id_synthesized: bool = False
    # How many mailboxes the From header(s) name (RFC 5322 §3.6.2); only exactly one can be an engineer.
    # 0 when From is missing or names no valid address (from_addr may then come from Sender).
    from_count: int = 1
    # A real delivery report (RFC 3464: multipart/report; report-type=delivery-status), not any mail that
    # merely looks like a bounce: only such a report may mark a customer's address as failed.
    is_dsn: bool = False
    # What parse had to repair or found missing in the header block (no From, no Subject, a header line
    # without its leading blank), in words for `mailbot explain`: such a mail is never read silently.
    header_problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParseFailure:
    """A message the parser could not make sense of: it goes to quarantine with this reason."""

    reason: str


@dataclass(frozen=True)
class CaseMatch:
    key: str | None
    rule: MatchRule | None
    detail: str = ""  # the text that matched, for `explain`


@dataclass(frozen=True)
class TimelineEntry:
    message_id: str
    date: datetime  # aware, UTC
    from_addr: str
    role: Role
    kind: EntryKind
    direction: str  # "in" | "out"
    text: str
    subject: str = ""
    matched_by: str = ""  # the rule that threaded an incoming mail here (subject, in_reply_to, …)
    # An engineer's mail with no customer in To/Cc: a note among engineers that no customer received,
    # so nothing sent to a customer may quote or list it (cases.reaches_customer).
    internal: bool = False


@dataclass(frozen=True)
class NextAction:
    kind: str  # "reminder" | "closure"
    due: datetime  # aware, UTC


@dataclass(frozen=True)
class WaitingReply:
    """A customer's reply that no engineer has answered, as a nudge or an escalation quotes it."""

    sender: str
    date: str  # local time, `2021-04-22 10:10`
    text: str  # the reply's own new text, credentials masked (as on the timeline)


@dataclass(frozen=True)
class NudgeInfo:
    """What a nudge (to the case's engineers) or an escalation (to the leads) says."""

    since: str  # local time of the oldest reply waiting
    business_hours: int  # how long that reply has waited, in business hours
    replies: tuple[WaitingReply, ...]
    engineers: tuple[str, ...]


@dataclass(frozen=True)
class DigestRow:
    """One line of a digest; the templates word it (both languages), so it holds values, not sentences."""

    key: str
    title: str
    what: str  # "waiting" (on the engineer), "today" (the bot sends), "closing" (closes soon), "held"
    when: str = ""  # local time: since when it waits (waiting), when the mail goes out (today: HH:MM), closes
    hours: int = 0  # waiting: business hours so far
    mail: str = ""  # today: "reminder" | "closure"
    number: int = 0  # today: which reminder
    to: str = ""  # today: the customers it goes to
    bounced: str = ""  # held: the addresses that bounced
    vendor: bool = False  # held: waiting on a vendor
    followup_off: bool = False  # held: `#followup off`
    held_until: str = ""  # held: `#snooze` or an out-of-office, until this local time


@dataclass(frozen=True)
class DigestInfo:
    """One engineer's daily digest: rows per section, oldest or soonest first."""

    day: str  # the local day, `2021-04-16`
    engineer: str
    open_cases: int
    rows: tuple[DigestRow, ...]


@dataclass(frozen=True)
class ClosureFields:
    problem: str = ""
    analysis: str = ""
    summary: str = ""


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    subject: str  # the case's subject without reply prefixes, used for outgoing mail
    status: CaseStatus
    language: str
    opened: datetime
    last_activity: datetime
    tracking_tokens: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()
    engineers: tuple[str, ...] = ()
    contact_names: tuple[tuple[str, str], ...] = ()  # (address, display name) as seen in From headers
    timeline: tuple[TimelineEntry, ...] = ()
    reminders_sent: int = 0
    next_action: NextAction | None = None
    last_engineer_mail: datetime | None = None
    language_override: str | None = None
    followup_enabled: bool = True
    snoozed_until: datetime | None = None
    phone_call_logged: bool = False
    timezone: str | None = None  # the customer's IANA zone when not the bot's (`#timezone`)
    failed_addresses: tuple[str, ...] = ()
    closure: ClosureFields | None = None
    notes: tuple[str, ...] = ()
    # Non-engineers who wrote into the case without being included by an engineer (To/Cc, `#add`): their
    # mail is on the timeline, they receive nothing, the engineers were told once about each.
    outsiders: tuple[str, ...] = ()
    # The support mailbox that opened the case (`[mailboxes.NAME]`; "default" for the one-mailbox form): its
    # address, templates and language are the case's, and only its instance sweeps the case.
    mailbox: str = "default"

    def with_(self, **changes: object) -> Case:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def effective_language(self) -> str:
        return self.language_override or self.language

    def zone(self, default: ZoneInfo) -> ZoneInfo:
        """Where the case's dates and business hours are read: its customer's zone (`#timezone`), or
        `default` (the bot's)."""
        return ZoneInfo(self.timezone) if self.timezone else default

    def name_of(self, address: str) -> str:
        return dict(self.contact_names).get(address, "")

    def has_message(self, message_id: str) -> bool:
        return any(e.message_id == message_id for e in self.timeline)


@dataclass(frozen=True)
class OutboundMail:
    """A rendered mail, ready to record in the outbox ledger and send."""

    action_id: str  # deterministic: the same decision always yields the same id (exactly-once)
    case_key: str
    kind: EntryKind
    message_id: str
    subject: str
    from_addr: str
    from_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: str | None
    auto_submitted: str = "auto-generated"
