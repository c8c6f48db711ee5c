"""One cycle of the bot — ingest everything new, then send everything due — the one place where the pure
decisions meet the adapters (mailbox, store, transport, clock)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol

import jinja2

from mailbot import compose
from mailbot.calendar import BusinessCalendar
from mailbot.cases import entry_kind, language_of, mail_date, open_case, record_inbound, record_outbound
from mailbot.commands import find_commands
from mailbot.config import Settings
from mailbot.decide import (
    Policy,
    Receipt,
    SendMail,
    apply_commands,
    calendar_for,
    due_now,
    localize,
    plan_next,
    reason_not_to_answer,
)
from mailbot.mailbox.base import FetchedMail, Mailbox
from mailbot.match import Index, find_tokens, match, strip_prefixes, title_of
from mailbot.models import Case, CaseStatus, EntryKind, Flag, InboundMail, ParseFailure, Role
from mailbot.ooo import return_date
from mailbot.parse import parse
from mailbot.parsers import InlineParser, Parser
from mailbot.redact import redact
from mailbot.render import Identity, TemplateProblem, environment, outbound
from mailbot.roles import role_of
from mailbot.store import Store, StoreCorrupt
from mailbot.transport import PermanentFailure, Refused, TemporaryFailure, Transport

log = logging.getLogger("mailbot")

BATCH = 500  # mails per store commit: one write per touched file per batch
RETRY_MINUTES = (1, 5, 15, 60, 180, 360)
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
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "events"}


def make_calendar(settings: Settings, overrides: tuple[frozenset, frozenset] = (frozenset(), frozenset())) -> BusinessCalendar:
    f = settings.followup
    return BusinessCalendar(
        zone=settings.bot.zone, opening=f.working_hours[0], closing=f.working_hours[1],
        region=f.holidays, extra_holidays=overrides[0], extra_workdays=overrides[1],
    )


def make_policy(settings: Settings, calendar: BusinessCalendar) -> Policy:
    return Policy(
        followup=settings.followup,
        calendar=calendar,
        bot_address=settings.bot.address,
        cc_engineers=settings.smtp.cc_engineers,
        trusted_authserv_ids=settings.security.trust_authentication_results,
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
            batch = self.mailbox.fetch_new(limit=BATCH)
            parsed = self.parser.parse_all([m.raw for m in batch])
            while batch:
                done = self._apply_batch(batch, parsed, now, report)
                handled.update(m.ref for m in batch)
                # The next batch goes to the parse workers before this one is saved: they parse while the
                # store syncs to disk. It is only read here; nothing about it is recorded yet.
                try:
                    batch = self.mailbox.fetch_new(limit=BATCH, skip=handled)
                    parsed = self.parser.parse_all([m.raw for m in batch])
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
                outcome = f"quarantine:internal error {type(e).__name__}: {e}"
                self._record_quarantine(fetched, outcome.split(":", 1)[1], now)
                report.quarantined += 1
            if outcome.startswith("quarantine:"):
                quarantined.append((fetched.ref, outcome.split(":", 1)[1]))
            else:
                processed.append(fetched.ref)
        return processed, quarantined

    def _save_batch(self, processed: list[str], quarantined: list[tuple[str, str]]) -> None:
        # Case state first, mailbox second: a crash in between means the mail is fetched again and
        # recognised by its Message-ID — never lost, never recorded twice.
        self.store.commit()
        self.mailbox.mark_processed(processed)
        for ref, reason in quarantined:
            self.mailbox.quarantine(ref, reason)

    def close(self) -> None:
        """Stop the parse workers, if any (the mailbox and transport belong to whoever made them)."""
        self.parser.close()

    def _record_quarantine(self, fetched: FetchedMail, reason: str, now: datetime) -> None:
        self.store.add_quarantined({"ref": fetched.ref, "reason": reason, "at": now.isoformat(),
                                    "size": len(fetched.raw)})
        self._event(None, f"quarantined {fetched.ref}: {reason}")

    def handle(self, fetched: FetchedMail, now: datetime, report: CycleReport) -> str:
        """One mail through parse → match → apply → decide; returns "processed" or "quarantine:<reason>"."""
        return self.handle_parsed(fetched, parse(fetched.raw), now, report)

    def handle_parsed(self, fetched: FetchedMail, mail: InboundMail | ParseFailure, now: datetime,
                      report: CycleReport) -> str:
        """One parsed mail through match → apply → decide."""
        if isinstance(mail, ParseFailure):
            self._record_quarantine(fetched, mail.reason, now)
            report.quarantined += 1
            return f"quarantine:{mail.reason}"
        report.ingested += 1
        if self.store.seen(mail.message_id) is not None:
            report.duplicates += 1
            self._event(None, f"duplicate {mail.message_id} (already recorded)", level=logging.DEBUG)
            return "processed"
        self.apply(mail, now, report)
        return "processed"

    def role(self, address: str) -> Role:
        return role_of(address, self.settings.engineers, self.settings.bot.address)

    def apply(self, mail: InboundMail, now: datetime, report: CycleReport) -> None:
        cases = self.settings.cases
        role = self.role(mail.from_addr)
        commands = find_commands(mail.new_text) if role != Role.BOT else []
        found = match(mail, cases.patterns, cases.tracking_token, self.index)
        kind = entry_kind(mail, bool(commands))
        case = self.store.get_case(found.key) if found.key else None
        automatic = bool(mail.flags)
        if found.key and case is None and not automatic:
            title = title_of(mail.subject, found.key, cases.tracking_token)
            case = open_case(found.key, title, strip_prefixes(mail.subject), mail_date(mail, now),
                             self.settings.bot.language)
            report.opened += 1
            self._event(found.key, f"opened case: {title}")
        if case is None:
            self._unmatched(mail, role, commands, now, report,
                            "automatic mail for an unknown case" if found.key else "no case key and no known thread")
            return
        customers = tuple(a for a in (*mail.to, *mail.cc) if self.role(a) == Role.CUSTOMER)
        tokens = find_tokens(mail.subject, cases.tracking_token)
        before = case.status
        case = record_inbound(case, mail, role, kind, customers, tokens, now,
                              found.rule.value if found.rule else "")
        # The thread's recent human mail decides; the whole history would be re-read on every mail.
        case = case.with_(language=language_of([e.subject + "\n" + e.text for e in case.timeline[-12:]
                                                if e.role in (Role.ENGINEER, Role.CUSTOMER)]))
        sends: list[SendMail] = []
        if commands:
            updated, sends = apply_commands(case, mail, role, commands, now, self.policy, case.effective_language)
            case = updated or case
        if kind == EntryKind.AUTO_REPLY and role == Role.CUSTOMER and case.status == CaseStatus.WAITING_CUSTOMER:
            case = self._hold_for_out_of_office(case, mail, now)
        if kind == EntryKind.BOUNCE:
            sends.extend(self._bounce_notices(case, mail))
        if case.status != CaseStatus.CLOSED:
            case = case.with_(next_action=plan_next(case, self.policy))
        self.store.put_case(case)
        self.store.remember(mail.message_id, case.key)
        report.threaded += 1
        how = found.rule.value if found.rule else "new"
        self._event(case.key, f"{kind.value} from {mail.from_addr or '?'} ({role.value}) by {how}; "
                              f"status {before.value} → {case.status.value}")
        for send in sends:
            self._record_send(case, send, now, report)
            case = self.store.get_case(case.key) or case  # the next mail (a receipt) sees the closure
        if sends and case.status != CaseStatus.CLOSED:
            # A reminder sent now (`#remind now`) moves the next step: plan it from the case as it is.
            self.store.put_case(case.with_(next_action=plan_next(case, self.policy)))

    def _unmatched(self, mail: InboundMail, role: Role, commands: list, now: datetime, report: CycleReport,
                   reason: str) -> None:
        self.store.add_unmatched({
            "message_id": mail.message_id, "subject": mail.subject, "from": mail.from_addr,
            "role": role.value, "date": mail_date(mail, now).isoformat(), "reason": reason,
            "flags": sorted(f.value for f in mail.flags),
        })
        self.store.remember(mail.message_id, "", "unmatched")
        report.unmatched += 1
        self._event(None, f"unmatched {mail.message_id} from {mail.from_addr or '?'}: {reason}")
        if commands and role == Role.ENGINEER:
            _, sends = apply_commands(None, mail, role, commands, now, self.policy, self.settings.bot.language)
            placeholder = open_case("-", strip_prefixes(mail.subject), mail.subject, now, self.settings.bot.language)
            for send in sends:
                self._record_send(placeholder, send, now, report, record_on_case=False)

    def _hold_for_out_of_office(self, case: Case, mail: InboundMail, now: datetime) -> Case:
        back = return_date(mail.new_text, mail_date(mail, now).astimezone(self.settings.bot.zone).date())
        if back is None:
            return case
        cal = calendar_for(case, self.policy)
        opening = datetime.combine(cal.next_workday(back), time(0, 0), tzinfo=cal.zone)
        until = cal.into_working_hours(opening)
        self._event(case.key, f"out-of-office until {back}: reminders held until {until.astimezone(cal.zone):%Y-%m-%d %H:%M}")
        return case.with_(snoozed_until=until)

    def _bounce_notices(self, case: Case, mail: InboundMail) -> list[SendMail]:
        failed = mail.bounced_recipients or ()
        if not case.engineers or not failed:
            return []
        why = f"mail to {', '.join(failed)} bounced; no more reminders go there"
        return [SendMail(
            action_id=f"{case.key}/bounce/{','.join(sorted(failed))}", case_key=case.key,
            kind=EntryKind.RECEIPT, template="notice", to=case.engineers,
            receipt=Receipt("", False, localize(why, False, case.effective_language), (mail.subject,), kind="bounce"),
        )]

    # --- sending -----------------------------------------------------------------------------------

    def send_due(self, now: datetime, report: CycleReport | None = None) -> CycleReport:
        report = report or CycleReport()
        with self.lock:
            for key in self.store.due_case_keys(now):
                case = self.store.get_case(key)
                if case is None:
                    continue
                for send in due_now(case, now, self.policy):
                    self._record_send(case, send, now, report)
                updated = self.store.get_case(key)
                if updated is not None and updated.status != CaseStatus.CLOSED:
                    self.store.put_case(updated.with_(next_action=plan_next(updated, self.policy)))
            # No commit of its own: flush_outbox marks the new mails attempted and commits that together
            # with their records and the cases (one rewrite of the unsent shards instead of two).
            self.flush_outbox(now, report)
        return report

    def _over_cap(self, send: SendMail, now: datetime) -> str | None:
        if send.kind == EntryKind.RECEIPT:
            return None
        zone = self.settings.bot.zone
        day_start = datetime.combine(now.astimezone(zone).date(), time(0, 0), tzinfo=zone)
        cap = self.settings.smtp.max_per_recipient_per_day
        for address in send.to:
            if self.store.sends_since(address, day_start) >= cap:
                return f"{address} already got {cap} mails today"
        return None

    def _record_send(self, case: Case, send: SendMail, now: datetime, report: CycleReport,
                     record_on_case: bool = True) -> None:
        """Render and record the intent (outbox ledger) with the case update, in one commit."""
        if self.quiet:
            if send.kind == EntryKind.CLOSURE and record_on_case:
                current = self.store.get_case(case.key) or case
                self.store.put_case(current.with_(status=CaseStatus.CLOSED, next_action=None))
            return
        existing = self.store.outbox_entry(send.action_id)
        if existing is None:
            if not send.to:
                self._event(case.key, f"{send.kind.value} not sent: no recipient left")
                return
            if why := self._over_cap(send, now):
                report.deferred += 1
                self._event(case.key, f"{send.kind.value} deferred: {why}")
                return
            try:
                out = outbound(self.env, case, send, self.me, now, self.settings.smtp.show_engineer_name,
                               self.silent_business_days(case, now))
            except TemplateProblem as e:
                report.failed += 1
                self._event(case.key, f"{send.kind.value} not sent: {e}", level=logging.ERROR)
                return
            raw = compose.to_bytes(out, now)
            entry = {
                "action_id": send.action_id, "case": case.key, "kind": send.kind.value,
                "message_id": out.message_id, "recipients": compose.recipients(out),
                "sender": out.from_addr, "subject": out.subject, "text": out.text,
                "raw": raw.decode("ascii", "surrogateescape"), "recorded": now.isoformat(), "attempts": 0,
            }
            self.store.outbox_record(entry)
            if send.kind != EntryKind.RECEIPT:
                for address in send.to:
                    self.store.note_send(address, now)
            self.store.remember(out.message_id, case.key if record_on_case else "", "out")
        else:
            entry = existing
        if record_on_case and case.key != "-":
            current = self.store.get_case(case.key) or case
            updated = record_outbound(current, send.kind, entry["message_id"], entry["text"], entry["subject"],
                                      self.me.address, datetime.fromisoformat(entry["recorded"]))
            self.store.put_case(updated)
        if existing is None:
            self._event(case.key, f"{send.kind.value} recorded for {', '.join(send.to)} ({send.action_id})")

    def silent_business_days(self, case: Case, now: datetime) -> int:
        if case.last_engineer_mail is None:
            return 0
        cal = calendar_for(case, self.policy)
        day = case.last_engineer_mail.astimezone(cal.zone).date()
        end = now.astimezone(cal.zone).date()
        n = 0
        while day < end and n < 365:
            day = cal.next_workday(day)
            n += day <= end
        return n

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
            self._permanent_failure(entry, tuple(e.recipients) or tuple(entry["recipients"]), str(e), now, report)
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
                           now: datetime, report: CycleReport) -> None:
        self._event(entry["case"], f"{entry['kind']} to {', '.join(failed)} failed for good: {reason}", logging.ERROR)
        case = self.store.get_case(entry["case"]) if entry["case"] != "-" else None
        if case is None or entry["kind"] == EntryKind.RECEIPT.value:
            return  # never notify about a failed notice: that is how mail loops start
        customers_failed = tuple(a for a in failed if a in case.customers)
        case = case.with_(failed_addresses=tuple(dict.fromkeys((*case.failed_addresses, *customers_failed))),
                          notes=(*case.notes, f"{now.isoformat()} {entry['kind']} failed: {reason}"))
        if case.status != CaseStatus.CLOSED:
            case = case.with_(next_action=plan_next(case, self.policy))
        self.store.put_case(case)
        if case.engineers:
            why = f"could not deliver to {', '.join(failed)}: {reason}"
            notice = SendMail(
                action_id=f"{entry['action_id']}/failed", case_key=case.key, kind=EntryKind.RECEIPT,
                template="notice", to=case.engineers,
                receipt=Receipt("", False, localize(why, False, case.effective_language), (entry["subject"],),
                                kind="undeliverable"),
            )
            self._record_send(case, notice, now, report)

    def _event(self, key: str | None, message: str, level: int = logging.INFO) -> None:
        # Subjects and reasons can carry what people paste: logs get the same masking as the store.
        log.log(level, "%s %s", key or "-", redact(message))


def explain_mail(mail: InboundMail | ParseFailure, service_like: Service) -> dict[str, Any]:
    """How the bot reads one message, without changing anything (for `mailbot explain`)."""
    if isinstance(mail, ParseFailure):
        return {"message_id": None, "subject": None, "from": None, "role": None, "flags": [],
                "case_key": None, "matched_by": None, "commands": [], "quarantine": mail.reason,
                "lands": f"quarantine: {mail.reason}"}
    s = service_like
    role = s.role(mail.from_addr)
    found = match(mail, s.settings.cases.patterns, s.settings.cases.tracking_token, s.index)
    commands = find_commands(mail.new_text)
    # The same decisions `apply` takes, in words (with the store as it is now).
    if s.store.seen(mail.message_id) is not None:
        lands = "duplicate: this Message-ID is already recorded, the mail changes nothing"
    elif found.key and s.store.get_case(found.key) is not None:
        lands = f"threaded into the existing case {found.key}"
    elif found.key and not mail.flags:
        lands = f"opens the new case {found.key}"
    elif found.key:
        lands = "unmatched: automatic mail for an unknown case"
    else:
        lands = "unmatched: no case key and no known thread (listed by `mailbot cases`)"
    return {
        "lands": lands,
        "message_id": mail.message_id,
        "message_id_synthesized": mail.message_id_synthesized,
        "subject": mail.subject,
        "from": mail.from_addr,
        "from_name": mail.from_name,
        "to": list(mail.to),
        "cc": list(mail.cc),
        "date": mail.date.isoformat() if mail.date else None,
        "role": role.value,
        "flags": sorted(f.value for f in mail.flags),
        "flag_reasons": list(mail.flag_reasons),
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
    }

