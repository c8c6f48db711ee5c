"""One cycle of the bot — ingest everything new, then send everything due — the one place where the pure
decisions meet the adapters (mailbox, store, transport, clock)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

import jinja2

from mailbot.cases import closed, mail_date, record_outbound
from mailbot.config import Settings
from mailbot.decide.calendar import BusinessCalendar
from mailbot.decide.commands import find_commands, held_message, held_receipt, named_keys
from mailbot.decide.digest import digest_day, digests
from mailbot.decide.failures import after_permanent_failure
from mailbot.decide.inbound import (
    Decision,
    Facts,
    HeldMail,
    Opened,
    Threaded,
    Unmatched,
    decide_mail,
    returned_ids,
)
from mailbot.decide.messages import Message
from mailbot.decide.nudge import nudges_due, plan_nudge
from mailbot.decide.policy import (
    TO_CUSTOMERS,
    Policy,
    SendMail,
    calendar_for,
    plan_next,
    reason_not_to_answer,
)
from mailbot.decide.sweep import DueFacts, decide_due, over_cap, planned, release_time, silent_business_days
from mailbot.mailbox.base import FetchedMail, Mailbox
from mailbot.match import Index, find_tokens, match, strip_prefixes, title_of
from mailbot.models import Case, CaseMatch, CaseStatus, EntryKind, Flag, InboundMail, ParseFailure
from mailbot.parse.pool import InlineParser, Parser, parse_fetched
from mailbot.parse.redact import redact
from mailbot.render import compose
from mailbot.render.templates import NO_CASE, Identity, TemplateProblem, environment, outbound, outside_case
from mailbot.store import Store, StoreCorrupt
from mailbot.transport.base import PermanentFailure, Refused, TemporaryFailure, Transport

log = logging.getLogger("mailbot")

BATCH = 500  # mails per store commit: one write per touched file per batch
RETRY_MINUTES = (1, 5, 15, 60, 180, 360)
DIGEST_CHECKPOINT = "digest"  # {"day": the local day whose digests are recorded}
DIGEST_TITLE = {"en": "daily digest", "zh-CN": "每日摘要"}  # what a digest shows where a case's title would be
SEND_COMMIT_EVERY = 25  # sent mails marked per store commit (the accepted log covers the window)  # temporary SMTP failures: back off, never give up silently


class SentFolder(Protocol):
    """Where a copy of every sent mail goes (the IMAP Sent folder), and where a crash is resolved."""

    def append_sent(self, raw: bytes) -> None: ...

    def sent_contains(self, message_id: str) -> bool: ...


@dataclass
class CycleReport:
    ingested: int = 0
    opened: int = 0
    threaded: int = 0
    unmatched: int = 0
    quarantined: int = 0
    duplicates: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Processed:
    """The mail is recorded (on a case, as unmatched, or already known): the mailbox marks it done."""


@dataclass(frozen=True)
class Quarantined:
    """The mail cannot be read, or handling it failed: the mailbox sets it aside with this reason."""

    reason: str


MailOutcome = Processed | Quarantined  # what one fetched mail comes to (`Service.handle_parsed`)


def make_policy(settings: Settings, calendar: BusinessCalendar) -> Policy:
    return Policy(
        followup=settings.followup,
        calendar=calendar,
        bot_address=settings.bot.address,
        cc_engineers=settings.smtp.cc_engineers,
        trusted_authserv_ids=settings.security.trust_authentication_results,
        max_recipients=settings.smtp.max_recipients,
        engineers=settings.engineers,
        opened_by=settings.cases.opened_by,
        language=settings.bot.language,
        tracking_token=settings.cases.tracking_token,
        zone=settings.bot.zone,
        daily_cap=settings.smtp.max_per_recipient_per_day,
        nudge=settings.nudge,
        plan_nudge=plan_nudge,
        nudges_due=nudges_due,
        case_patterns=settings.cases.patterns,
        mailbox=settings.mailbox.name,
    )


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        mailbox: Mailbox,
        transport: Transport,
        calendar: BusinessCalendar,
        sent_folder: SentFolder | None = None,
        env: jinja2.Environment | None = None,
        parser: Parser | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.mailbox = mailbox
        self.transport = transport
        self.sent_folder = sent_folder
        self.parser = parser or InlineParser()
        self.policy = make_policy(settings, calendar)
        self.env = env or environment(settings.templates_dir)
        self.me = Identity(settings.bot.address, settings.bot.name, settings.bot.zone)
        # Several mailboxes: a case writes as the mailbox it belongs to (its address and templates), whichever
        # mailbox the mail that made it write arrived in. `wiring.make_services` fills in the others.
        self.identities: dict[str, tuple[Identity, jinja2.Environment]] = {settings.mailbox.name: (self.me, self.env)}
        # The first mailbox's service also sweeps cases of a mailbox no longer in the config (renamed, removed).
        self.adopts_orphans = True
        self.index = Index(store.case_for_message, store.case_for_token)
        # The IDLE loop and the scheduler's sweep share the store: one lock around every cycle.
        self.lock = threading.RLock()
        # Importing history: state changes apply (a past #close closes the case) but nothing is sent.
        self.quiet = False

    # --- the cycle ---------------------------------------------------------------------------------

    def run_once(self, now: datetime) -> CycleReport:
        """Ingest everything new, then send everything due at `now` (a reply that arrived while the bot
        was down cancels a reminder that fell due in the meantime)."""
        with self.lock:
            report = CycleReport()
            self.flush_outbox(now, report)
            self.ingest(now, report)
            self.send_due(now, report)
            return report

    def ingest(self, now: datetime, report: CycleReport | None = None) -> CycleReport:
        report = report or CycleReport()
        with self.lock:
            handled: set[str] = set()
            box = self.settings.mailbox  # issue 13: a batch holds about max_batch_bytes; bigger mail stays unread
            bounds = {"max_bytes": box.max_batch_bytes, "max_message_bytes": box.max_message_bytes}
            batch = self.mailbox.fetch_new(limit=BATCH, **bounds)
            parsed = parse_fetched(self.parser, batch, box.max_message_bytes, box.parse_timeout_seconds)
            while batch:
                done = self._apply_batch(batch, parsed, now, report)
                handled.update(m.ref for m in batch)
                # The next batch goes to the parse workers before this one is saved: they parse while the
                # store syncs to disk. It is only read here; nothing about it is recorded yet.
                try:
                    batch = self.mailbox.fetch_new(limit=BATCH, skip=handled, **bounds)
                    parsed = parse_fetched(self.parser, batch, box.max_message_bytes, box.parse_timeout_seconds)
                finally:  # a mailbox that fails now does not keep this batch from being saved
                    self._save_batch(*done)
            self.flush_outbox(now, report)
        return report

    def _apply_batch(self, batch: list[FetchedMail], parsed: Iterator[InboundMail | ParseFailure], now: datetime,
                     report: CycleReport) -> tuple[list[str], list[tuple[str, str]]]:
        processed: list[str] = []
        quarantined: list[tuple[str, str]] = []
        # Results come in mailbox order: a reply is applied after the mail it answers.
        for fetched, mail in zip(batch, parsed, strict=True):
            try:
                outcome = self.handle_parsed(fetched, mail, now, report)
            except StoreCorrupt:  # the store's fault, not the mail's: leave it in the mailbox
                raise
            except Exception as e:  # a bug must not stop the bot or lose the mail: quarantine it
                log.exception("unexpected error on %s", fetched.ref)
                outcome = Quarantined(f"internal error {type(e).__name__}: {e}")
                self._record_quarantine(fetched, outcome.reason, now)
                report.quarantined += 1
            if isinstance(outcome, Quarantined):
                quarantined.append((fetched.ref, outcome.reason))
            else:
                processed.append(fetched.ref)
        return processed, quarantined

    def _save_batch(self, processed: list[str], quarantined: list[tuple[str, str]]) -> None:
        # Case state first, mailbox second: a crash in between means the mail is fetched again and
        # recognised by its Message-ID — never lost, never recorded twice.
        self.store.commit()
        self.mailbox.mark_processed(processed)
        for ref, reason in quarantined:
            self.mailbox.quarantine(ref, redact(reason))  # the IMAP mailbox logs it

    def close(self) -> None:
        """Stop the parse workers, if any (the mailbox and transport belong to whoever made them)."""
        self.parser.close()

    def _record_quarantine(self, fetched: FetchedMail, reason: str, now: datetime) -> None:
        reason = redact(reason)  # an error message can quote the mail it choked on
        self.store.add_quarantined({"ref": fetched.ref, "reason": reason, "at": now.isoformat(),
                                    "size": fetched.length})  # an oversized mail is unread: raw is empty
        self._event(None, f"quarantined {fetched.ref}: {reason}")

    def handle_parsed(self, fetched: FetchedMail, mail: InboundMail | ParseFailure, now: datetime,
                      report: CycleReport) -> MailOutcome:
        """One parsed mail through match → apply → decide."""
        if isinstance(mail, ParseFailure):
            self._record_quarantine(fetched, mail.reason, now)
            report.quarantined += 1
            return Quarantined(mail.reason)
        report.ingested += 1
        if self.store.seen(mail.message_id) is not None:
            report.duplicates += 1
            self._event(None, f"duplicate {mail.message_id} (already recorded)", level=logging.DEBUG)
            return Processed()
        self.apply(mail, now, report)
        return Processed()

    def decide(self, mail: InboundMail, now: datetime) -> tuple[CaseMatch, Decision]:
        """Match `mail`, gather what the store knows about it, and `decide_mail` (the store is only read)."""
        cases = self.settings.cases
        found = match(mail, cases.patterns, cases.tracking_token, self.index)
        case = self.store.get_case(found.key) if found.key else None
        facts = Facts(outgoing=self._outgoing(mail), held=self._held(case, mail))
        if found.key is None and not mail.flags:  # command lines may name their cases (`#skip CAS-…`)
            named = {k: c for k in named_keys(mail.new_text, cases.patterns) if (c := self.store.get_case(k))}
            facts = replace(facts, named=named,
                            named_held={k: self._held(c, mail) for k, c in named.items()})
        decision = decide_mail(case, mail, found, facts, self.policy, now)
        known = frozenset(a for a in decision.asked if self.store.outbox_entry(a) is not None)
        if known:  # a notice the ledger already holds is not a new one: decide again, knowing it
            decision = decide_mail(case, mail, found, replace(facts, known_actions=known), self.policy, now)
        return found, decision

    def _outgoing(self, mail: InboundMail) -> tuple[tuple[str, str], ...]:
        """(Message-ID, case) of the bot's own outgoing mail among those a bounce returns."""
        seen = ((mid, self.store.seen(mid)) for mid in returned_ids(mail))
        return tuple((mid, s.get("case", "")) for mid, s in seen if s is not None and s.get("place") == "out")

    def _held(self, case: Case | None, mail: InboundMail) -> tuple[HeldMail, ...]:
        """The case's mail that waits in the outbox for a later opening. Only a person's mail can cancel it
        (`decide_mail` says whose), and importing history cancels nothing: the ledger is not read then."""
        if case is None or mail.flags or self.quiet:
            return ()
        return tuple(HeldMail(e["action_id"], e["message_id"], e["kind"]) for e in self.store.outbox_held(case.key))

    def apply(self, mail: InboundMail, now: datetime, report: CycleReport) -> None:
        """Decide what the mail does, then carry it out: cancel, record the mail and its sends, save."""
        _, decision = self.decide(mail, now)
        for event in decision.events:
            self._event(event.key, event.text, event.level)
        for cancel in decision.cancellations:
            self.store.outbox_finish(cancel.action_id, "cancelled", at=now.isoformat(), reason=cancel.reason)
        if isinstance(decision.lands, Unmatched) or decision.case is None:
            self._unmatched(mail, decision, now, report)
            return
        report.opened += isinstance(decision.lands, Opened)
        report.threaded += 1
        case = decision.case
        held: dict[str, Message] = {}  # action id → what the receipt says about a mail that waits
        for send in decision.sends:
            send = held_receipt(send, held, case.effective_language)
            wait, recorded = self._record_intent(case, case, send, now, report, hold_over_cap=True)
            if wait is not None:
                held[send.action_id] = held_message(send, *wait, calendar_for(case, self.policy).zone)
            case = recorded if recorded is not None else case  # the next mail (a receipt) sees the closure
        if decision.sends and case.status != CaseStatus.CLOSED:
            # A reminder sent now (`#remind now`) moves the next step: plan it from the case as it is.
            case = case.with_(next_action=plan_next(case, self.policy))
        # One write of the case for the mail, with what it sends on its timeline (the batch commits both).
        self.store.put_case(case)
        self.store.remember(mail.message_id, case.key)

    def _unmatched(self, mail: InboundMail, decision: Decision, now: datetime, report: CycleReport) -> None:
        reason = decision.lands.reason if isinstance(decision.lands, Unmatched) else ""
        self.store.add_unmatched({
            "message_id": mail.message_id, "subject": mail.subject, "from": mail.from_addr,
            "role": decision.role.value, "date": mail_date(mail, now).isoformat(), "reason": reason,
            "flags": sorted(f.value for f in mail.flags),
        })
        self.store.remember(mail.message_id, "", "unmatched")
        report.unmatched += 1
        # Cases its command lines named and changed (a digest reply): their mails (a closure) go on them.
        named = {c.key: c for c in decision.named}
        rest = []
        for send in decision.sends:
            case = named.get(send.case_key)
            if case is None:
                rest.append(send)
                continue
            _, recorded = self._record_intent(case, case, send, now, report, hold_over_cap=True)
            named[case.key] = recorded if recorded is not None else case
        for case in named.values():
            self.store.put_case(case)
        if rest:
            # No case to record on: the receipt shows the mail's own subject where a case's title would be.
            shown = outside_case(strip_prefixes(mail.subject), mail.subject, self.settings.bot.language, now)
            for send in rest:
                self._record_send(None, send, now, report, shown=shown)

    # --- sending -----------------------------------------------------------------------------------

    def send_due(self, now: datetime, report: CycleReport | None = None) -> CycleReport:
        report = report or CycleReport()
        with self.lock:
            # The digest first: it lists the mails that go out in the engineers' names today, these included.
            self.send_digests(now, report)
            for key in self.store.due_case_keys(now):
                case = self.store.get_case(key)
                if case is None or not self.sweeps(case):
                    continue  # another mailbox's case: its own service sweeps it
                decision = decide_due(case, DueFacts(), self.policy, now)
                if decision.due:  # ask the store about the mails due now, then decide knowing it
                    decision = decide_due(case, self._due_facts(decision.due, now), self.policy, now)
                for event in decision.events:
                    self._event(event.key, event.text, event.level)
                report.deferred += decision.deferred
                updated = case
                for send in decision.sends:
                    _, recorded = self._record_intent(case, updated, send, now, report)
                    updated = recorded if recorded is not None else updated
                # One write of the case for the sweep, with its sends on the timeline and its next step.
                self.store.put_case(decision.case if updated is case else planned(updated, self.policy))
            if self.settings.report.weekly_to:  # the leads' weekly report: recorded once a week, sent below
                from mailbot.report.weekly import send_weekly_report  # the figures: only when configured

                send_weekly_report(self, now)
            # No commit of its own: flush_outbox marks the new mails attempted and commits that together
            # with their records and the cases (one rewrite of the unsent shards instead of two).
            self.flush_outbox(now, report)
        return report

    def send_digests(self, now: datetime, report: CycleReport) -> None:
        """Each business day from `[digest] at`: one digest per engineer with open cases (decided in
        mailbot.decide.digest). A checkpoint says the day is done, so the open cases are read once a day,
        not on every sweep; it is set after the digests are committed to the outbox ledger, whose action ids
        (engineer and day) make a crash in between send nothing twice."""
        at = self.settings.digest.time
        if at is None or self.quiet:
            return
        cal = self.policy.calendar
        day = digest_day(now, cal, at)
        if day is None or (self.store.get_checkpoint(DIGEST_CHECKPOINT) or {}).get("day") == day.isoformat():
            return
        language = self.settings.bot.language
        for send in digests(self.store.active_cases(), day, now, cal, self.policy):
            shown = outside_case(DIGEST_TITLE.get(language, DIGEST_TITLE["en"]), "", language, now)
            self._record_send(None, send, now, report, shown=shown)
        self.store.commit()
        self.store.set_checkpoint(DIGEST_CHECKPOINT, {"day": day.isoformat(), "at": now.isoformat()})

    def _sent_on(self, address: str, day: date) -> int:
        """Mails recorded for `address` on one local day (a held mail counts on the day it goes out)."""
        zone = self.settings.bot.zone
        start = datetime.combine(day, time(0, 0), tzinfo=zone)
        end = datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=zone)
        return self.store.sends_since(address, start) - self.store.sends_since(address, end)

    def _due_facts(self, due: tuple[SendMail, ...], now: datetime) -> DueFacts:
        today = now.astimezone(self.settings.bot.zone).date()
        return DueFacts(sent_today={a: self._sent_on(a, today) for s in due for a in s.to},
                        known_actions=frozenset(s.action_id for s in due
                                                if self.store.outbox_entry(s.action_id) is not None))

    def _over_cap(self, send: SendMail, now: datetime) -> Message | None:
        today = now.astimezone(self.settings.bot.zone).date()
        return over_cap(send, {a: self._sent_on(a, today) for a in send.to}, self.policy.daily_cap)

    def _record_send(self, case: Case | None, send: SendMail, now: datetime, report: CycleReport,
                     shown: Case | None = None) -> tuple[datetime, Message | str] | None:
        """`_record_intent`, then the mail on its case as the store has it (saved with the next commit).
        `case` is None for a receipt to a command that found no case: rendered from `shown`
        (`render.outside_case`), recorded on no case."""
        view = case if case is not None else shown
        if view is None:
            raise ValueError("a mail outside any case needs what its templates show (`shown`)")
        onto = None if case is None else self.store.get_case(case.key) or case
        wait, recorded = self._record_intent(view, onto, send, now, report)
        if recorded is not None:
            self.store.put_case(recorded)
        return wait

    def _record_intent(self, view: Case, onto: Case | None, send: SendMail, now: datetime, report: CycleReport,
                       hold_over_cap: bool = False) -> tuple[tuple[datetime, Message | str] | None, Case | None]:
        """Render `send` from `view` and record the intent (outbox ledger); returns (wait, `onto` with the
        mail on its timeline — None when nothing is to be recorded on a case). The caller saves the case.

        Over the daily cap a scheduled mail is simply not recorded (the sweep decides it again later);
        one an engineer's command asked for (`hold_over_cap`) is recorded to go out at a later opening
        (the outbox sends it then) and wait = (when, why) is returned, so that the receipt can say so."""
        key = onto.key if onto is not None else NO_CASE
        if self.quiet:
            return None, closed(onto) if send.kind == EntryKind.CLOSURE and onto is not None else None
        existing = self.store.outbox_entry(send.action_id)
        when = now
        wait: tuple[datetime, Message | str] | None = None
        if existing is None:
            if not send.to:
                self._event(key, f"{send.kind.value} not sent: no recipient left")
                return None, None
            if why := self._over_cap(send, now):
                report.deferred += 1
                if not hold_over_cap:
                    self._event(key, f"{send.kind.value} deferred: {why}")
                    return None, None
                when = release_time(view, send, now, self.policy, self.settings.smtp.max_per_recipient_per_day,
                                    self.settings.bot.zone, self._sent_on)
                wait = (when, why)
                self._event(key, f"{send.kind.value} held until {when.isoformat()}: {why}")
            try:
                me, env = self.identity_of(view)
                out = outbound(env, view, send, me, when, self.settings.smtp.show_engineer_name,
                               self.silent_business_days(view, when))
            except TemplateProblem as e:
                report.failed += 1
                self._event(key, f"{send.kind.value} not sent: {e}", level=logging.ERROR)
                return None, None
            raw = compose.to_bytes(out, when)
            entry = {
                "action_id": send.action_id, "case": key, "kind": send.kind.value,
                "message_id": out.message_id, "recipients": compose.recipients(out),
                "sender": out.from_addr, "subject": out.subject, "text": out.text,
                "raw": raw.decode("ascii", "surrogateescape"), "recorded": now.isoformat(), "attempts": 0,
            }
            if wait is not None:  # flush_outbox leaves it alone until then
                entry.update(next_try=when.isoformat(), not_before=when.isoformat(), held_because=str(wait[1]))
            self.store.outbox_record(entry)
            if send.kind in TO_CUSTOMERS:  # the daily cap protects customers, not our own people
                for address in send.to:
                    self.store.note_send(address, when)
            self.store.remember(out.message_id, key if onto is not None else "", "out")
        else:
            entry = existing
            if entry.get("status") == "pending" and entry.get("not_before", "") > now.isoformat():
                wait = (datetime.fromisoformat(entry["not_before"]), entry.get("held_because", ""))
        recorded = None
        if onto is not None:
            # A held reminder counts from when it goes out: the next one is planned from there.
            recorded = record_outbound(onto, send.kind, entry["message_id"], entry["text"], entry["subject"],
                                       self.identity_of(onto)[0].address, datetime.fromisoformat(entry.get("not_before")
                                                                               or entry["recorded"]))
        if existing is None:
            self._event(key, f"{send.kind.value} recorded for {', '.join(send.to)} ({send.action_id})")
        return wait, recorded

    def sweeps(self, case: Case) -> bool:
        return case.mailbox == self.policy.mailbox or (self.adopts_orphans and case.mailbox not in self.identities)

    def identity_of(self, case: Case) -> tuple[Identity, jinja2.Environment]:
        """Who writes for `case`: its own mailbox's address and templates (this one's for a case of a mailbox
        that is no longer configured, and for mail outside any case)."""
        return self.identities.get(case.mailbox, (self.me, self.env))

    def silent_business_days(self, case: Case, now: datetime) -> int:
        return silent_business_days(case, self.policy, now)

    def flush_outbox(self, now: datetime, report: CycleReport | None = None) -> None:
        """Send what is recorded and not yet confirmed; after a crash, first ask whether it went out."""
        report = report or CycleReport()
        with self.lock:
            todo = []
            for entry in self.store.outbox_pending():
                if entry.get("next_try") and entry["next_try"] > now.isoformat():
                    continue
                if self._already_out(entry):
                    self.store.outbox_finish(entry["action_id"], "sent", sent=now.isoformat(),
                                             resolved="found after restart")
                    self._event(entry["case"], f"{entry['kind']} {entry['message_id']} was already sent")
                    continue
                # Marked as attempted before any is sent (one commit for the batch): after a crash, an
                # attempted entry is looked up (accepted log, outbox folder, Sent folder) before a retry.
                attempts = entry.get("attempts", 0) + 1
                self.store.outbox_update(entry["action_id"], attempts=attempts)
                todo.append({**entry, "attempts": attempts})
            self.store.commit()
            handed: list[tuple[dict[str, Any], bytes, Refused]] = []
            try:
                for n, entry in enumerate(todo, 1):
                    taken = self._transmit(entry, now, report)
                    if taken is not None:
                        handed.append(taken)
                    if n % SEND_COMMIT_EVERY == 0:
                        batch, handed = handed, []
                        self._mark_sent(batch, now, report)
            finally:  # an error mid-window must not forget what the transport already took
                self._mark_sent(handed, now, report)

    def _already_out(self, entry: dict[str, Any]) -> bool:
        mid = entry["message_id"]
        if self.transport.already_sent(mid):
            if self.sent_folder is not None and entry.get("attempts", 0) > 0:
                self._ensure_sent_copy(entry)  # the crash may have come before the Sent copy was made
            return True
        if self.sent_folder is not None and entry.get("attempts", 0) > 0:
            try:
                return self.sent_folder.sent_contains(mid)
            except Exception as e:  # cannot tell: retrying is the lesser evil than losing the mail
                log.warning("cannot search the Sent folder for %s: %s", mid, e)
        return False

    def _ensure_sent_copy(self, entry: dict[str, Any]) -> None:
        assert self.sent_folder is not None
        try:
            if not self.sent_folder.sent_contains(entry["message_id"]):
                self.sent_folder.append_sent(entry["raw"].encode("ascii", "surrogateescape"))
        except Exception as e:  # the mail went out; a missing copy is worth a warning, not a resend
            log.warning("could not copy %s to the Sent folder: %s", entry["message_id"], e)

    def _transmit(self, entry: dict[str, Any], now: datetime,
                  report: CycleReport) -> tuple[dict[str, Any], bytes, Refused] | None:
        """Send one recorded mail (already marked as attempted). A failure is recorded and committed here;
        a mail the transport took is returned, for `_mark_sent` (in batches)."""
        action_id = entry["action_id"]
        raw = entry["raw"].encode("ascii", "surrogateescape")
        try:
            refused = self.transport.send(raw, entry["sender"], entry["recipients"], entry["message_id"])
        except TemporaryFailure as e:
            attempts = entry["attempts"]
            wait = RETRY_MINUTES[min(attempts, len(RETRY_MINUTES)) - 1]
            self.store.outbox_update(action_id, attempts=attempts, last_error=str(e),
                                     next_try=(now + timedelta(minutes=wait)).isoformat())
            self.store.commit()
            report.deferred += 1
            self._event(entry["case"], f"{entry['kind']} not sent yet ({e}); retry in {wait} min", logging.WARNING)
            return None
        except PermanentFailure as e:
            self.store.outbox_finish(action_id, "failed", error=str(e), at=now.isoformat())
            self._permanent_failure(entry, tuple(e.recipients) or tuple(entry["recipients"]), str(e), now, report,
                                    about_message=e.about_message)
            self.store.commit()
            report.failed += 1
            return None
        return entry, raw, refused

    def _mark_sent(self, handed: list[tuple[dict[str, Any], bytes, Refused]], now: datetime,
                   report: CycleReport) -> None:
        """Mark the mails the transport took as sent, in one commit — once the transport has made them
        durable (`settle`: the outbox folder syncs and publishes its files here). If it cannot, they stay
        pending, attempted, and are looked for (then sent again) at the next try."""
        if handed:
            try:
                self.transport.settle()
            except TemporaryFailure as e:
                for entry, _, _ in handed:
                    self.store.outbox_update(entry["action_id"], last_error=str(e),
                                             next_try=(now + timedelta(minutes=RETRY_MINUTES[0])).isoformat())
                    report.deferred += 1
                    self._event(entry["case"], f"{entry['kind']} not sent yet ({e})", logging.WARNING)
                handed = []
        for entry, raw, refused in handed:
            # The Sent copy goes first: if we crash before marking the entry, the restart finds it there.
            if self.sent_folder is not None:
                try:
                    self.sent_folder.append_sent(raw)
                except Exception as e:  # the mail went out; a missing copy is worth a warning, not a resend
                    log.warning("could not copy %s to the Sent folder: %s", entry["message_id"], e)
            self.store.outbox_finish(entry["action_id"], "sent", sent=now.isoformat(), refused=sorted(refused or {}))
            report.sent += 1
            self._event(entry["case"], f"sent {entry['kind']} to {', '.join(entry['recipients'])}")
            if refused:
                self._permanent_failure(entry, tuple(refused), "refused by the server", now, report)
        self.store.commit()

    def _permanent_failure(self, entry: dict[str, Any], failed: tuple[str, ...], reason: str,
                           now: datetime, report: CycleReport, about_message: bool = False) -> None:
        self._event(entry["case"], f"{entry['kind']} to {', '.join(failed)} failed for good: {reason}", logging.ERROR)
        case = self.store.get_case(entry["case"])  # None for a receipt outside any case (render.NO_CASE)
        after = None if case is None else after_permanent_failure(
            case, entry["action_id"], entry["kind"], entry["subject"], failed, reason, now, self.policy, about_message)
        if after is None:
            return
        case, notice = after
        self.store.put_case(case)
        if notice is not None:
            self._record_send(case, notice, now, report)

    def _event(self, key: str | None, message: str, level: int = logging.INFO) -> None:
        # Subjects and reasons can carry what people paste: logs get the same masking as the store.
        log.log(level, "%s %s", key or "-", redact(message))


def explain_mail(mail: InboundMail | ParseFailure, service_like: Service) -> dict[str, Any]:
    """How the bot reads one message, without changing anything (for `mailbot explain`): the same
    `decide_mail` that `apply` follows, on the store as it is now, worded."""
    if isinstance(mail, ParseFailure):
        return {"message_id": None, "subject": None, "from": None, "role": None, "flags": [],
                "case_key": None, "matched_by": None, "commands": [], "quarantine": mail.reason,
                "lands": f"quarantine: {mail.reason}"}
    s = service_like
    found, decision = s.decide(mail, datetime.now(UTC))
    role = decision.role
    commands = find_commands(mail.new_text)
    if s.store.seen(mail.message_id) is not None:
        lands = "duplicate: this Message-ID is already recorded, the mail changes nothing"
    elif isinstance(decision.lands, Threaded):
        lands = f"threaded into the existing case {decision.lands.key}"
    elif isinstance(decision.lands, Opened):
        lands = f"opens the new case {decision.lands.key}"
    elif found.key:
        lands = f"unmatched: {decision.lands.reason}"
    else:
        lands = "unmatched: no case key and no known thread (listed by `mailbot cases`)"
    return {
        "lands": lands,
        "message_id": mail.message_id,
        "message_id_synthesized": mail.message_id_synthesized,
        "subject": mail.subject,
        "from": mail.from_addr,
        "from_name": mail.from_name,
        "from_count": mail.from_count,
        "authentication": decision.authentication,  # None: not checked (not an engineer, or no trusted server set)
        "is_dsn": mail.is_dsn,
        "to": list(mail.to),
        "cc": list(mail.cc),
        "date": mail.date.isoformat() if mail.date else None,
        "role": role.value,
        "flags": sorted(f.value for f in mail.flags),
        "flag_reasons": list(mail.flag_reasons),
        "header_problems": list(mail.header_problems),  # repaired or missing headers (no From, no Subject)
        "case_key": found.key,
        "matched_by": found.rule.value if found.rule else None,
        "matched_text": found.detail,
        "title": title_of(mail.subject, found.key, s.settings.cases.tracking_token) if found.key else None,
        "tracking_tokens": list(find_tokens(mail.subject, s.settings.cases.tracking_token)),
        "in_reply_to": list(mail.in_reply_to),
        "references": list(mail.references),
        "commands": [{"command": c.name or None, "raw": c.raw, "error": c.error or None} for c in commands],
        "would_answer": reason_not_to_answer(mail, role) is None,
        "not_answered_because": reason_not_to_answer(mail, role),
        "attachments": [{"name": a.name, "type": a.content_type, "size": a.size} for a in mail.attachments],
        "text": mail.new_text,
        "bounced_recipients": list(mail.bounced_recipients),
        "is_bounce": Flag.BOUNCE in mail.flags,
        # What the case would plan next once this mail is in: a reminder, a closure, a nudge, an escalation.
        "next_action": None if decision.case is None or decision.case.next_action is None else {
            "kind": decision.case.next_action.kind, "due": decision.case.next_action.due.isoformat()},
    }

