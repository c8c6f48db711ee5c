"""One cycle of the bot — ingest everything new, then send everything due — the one place where the pure
decisions meet the adapters (mailbox, store, transport, clock)."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

import jinja2

from mailbot.cases import mail_date
from mailbot.config import Settings
from mailbot.decide.calendar import BusinessCalendar
from mailbot.decide.commands import held_message, held_receipt, named_keys
from mailbot.decide.inbound import (
    Decision,
    Facts,
    HeldMail,
    Opened,
    Unmatched,
    decide_mail,
    returned_ids,
)
from mailbot.decide.messages import Message
from mailbot.decide.nudge import nudges_due, plan_nudge
from mailbot.decide.policy import (
    Policy,
    calendar_for,
    plan_next,
)
from mailbot.mailbox.base import FetchedMail, Mailbox
from mailbot.match import Index, find_key, match, strip_prefixes
from mailbot.models import Case, CaseMatch, CaseStatus, InboundMail, ParseFailure
from mailbot.outbox import OutboxSender
from mailbot.outcomes import CycleReport, MailOutcome, Processed, Quarantined, SentFolder
from mailbot.parse.mail import content_digest, synthetic_id
from mailbot.parse.pool import InlineParser, Parser, parse_fetched
from mailbot.parse.redact import redact
from mailbot.render.compose import is_own_message_id
from mailbot.render.templates import Identity, environment, outside_case
from mailbot.store import Store, StoreCorrupt
from mailbot.store.secret import message_id_secret
from mailbot.sweeping import Sweeping
from mailbot.transport.base import Transport

log = logging.getLogger("mailbot")

LOOKAHEAD = 64  # parsed mails applied per store lookup of their Message-IDs (store.prefetch)
BATCH = 500  # mails per store commit: one write per touched file per batch


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
        sibling_addresses=frozenset(m.address.lower() for m in settings.all_mailboxes if m.address),
    )


class Service(Sweeping, OutboxSender):
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
        self.me = Identity(settings.bot.address, settings.bot.name, settings.bot.zone, message_id_secret(store))
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
        # Results come in mailbox order: a reply is applied after the mail it answers. A few at a time, so that
        # the store can look their Message-IDs up in one go (PostgreSQL: one query, not one per mail) while
        # the parse workers go on with the next ones.
        pairs = zip(batch, parsed, strict=True)
        while chunk := list(itertools.islice(pairs, LOOKAHEAD)):
            mails = [m for _, m in chunk if isinstance(m, InboundMail)]
            self.store.prefetch([i for m in mails for i in (m.message_id, *m.in_reply_to, *m.references[-20:])],
                                [k for m in mails if (k := find_key(m.subject, self.settings.cases.patterns))])
            self._apply_chunk(chunk, now, report, processed, quarantined)
        return processed, quarantined

    def _apply_chunk(self, chunk: list[tuple[FetchedMail, InboundMail | ParseFailure]], now: datetime,
                     report: CycleReport, processed: list[str], quarantined: list[tuple[str, str]]) -> None:
        for fetched, mail in chunk:
            outcome = self.handle_safely(fetched, mail, now, report)
            if isinstance(outcome, Quarantined):
                quarantined.append((fetched.ref, outcome.reason))
            else:
                processed.append(fetched.ref)

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

    def handle_safely(self, fetched: FetchedMail, mail: InboundMail | ParseFailure, now: datetime,
                      report: CycleReport) -> MailOutcome:
        """`handle_parsed`, where a bug on one mail quarantines that mail and the others go on."""
        try:
            return self.handle_parsed(fetched, mail, now, report)
        except StoreCorrupt:  # the store's fault, not the mail's: leave it in the mailbox
            raise
        except Exception as e:  # a bug must not stop the bot or lose the mail: quarantine it
            log.exception("unexpected error on %s", fetched.ref)
            outcome = Quarantined(f"internal error {type(e).__name__}: {e}")
            self._record_quarantine(fetched, outcome.reason, now)
            report.quarantined += 1
            return outcome

    def handle_parsed(self, fetched: FetchedMail, mail: InboundMail | ParseFailure, now: datetime,
                      report: CycleReport) -> MailOutcome:
        """One parsed mail through match → apply → decide."""
        if isinstance(mail, ParseFailure):
            self._record_quarantine(fetched, mail.reason, now)
            report.quarantined += 1
            return Quarantined(mail.reason)
        report.ingested += 1
        seen = self.store.seen(mail.message_id)
        if seen is not None and seen.get("digest") and seen["digest"] != content_digest(mail):
            # Another mail under an id already recorded (a ticket tool that stamps one id on every mail): not a
            # copy, so recorded under an id of its own, deterministic so that its own copies are still one.
            own = synthetic_id(fetched.raw)
            self._event(None, f"{mail.message_id} is already recorded for another mail: this one recorded as "
                              f"{own}", logging.WARNING)
            mail = replace(mail, message_id=own, message_id_synthesized=True)
            seen = self.store.seen(own)
        if seen is not None:
            report.duplicates += 1
            self._event(None, f"duplicate {mail.message_id} (already recorded)", level=logging.DEBUG)
            return Processed()
        if is_own_message_id(mail.message_id, {me.domain.lower() for me, _ in self.identities.values()}):
            # The bot records its own id before it sends: an unseen mail under one took it first (the ids are
            # predictable) and would leave the bot's reminder or closure unrecorded, the case's follow-up frozen.
            # Deterministic, as parse's own synthetic ids: the same mail delivered twice is recorded once.
            own = synthetic_id(fetched.raw)
            self._event(None, f"{mail.message_id} has the form of the bot's own Message-IDs but the bot did not "
                              f"send it: recorded as {own}", logging.WARNING)
            mail = replace(mail, message_id=own, message_id_synthesized=True)
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
        self.store.remember(mail.message_id, case.key, digest=content_digest(mail))

    def _unmatched(self, mail: InboundMail, decision: Decision, now: datetime, report: CycleReport) -> None:
        reason = decision.lands.reason if isinstance(decision.lands, Unmatched) else ""
        self.store.add_unmatched({
            "message_id": mail.message_id, "subject": mail.subject, "from": mail.from_addr,
            "role": decision.role.value, "date": mail_date(mail, now).isoformat(), "reason": reason,
            "flags": sorted(f.value for f in mail.flags),
        })
        self.store.remember(mail.message_id, "", "unmatched", digest=content_digest(mail))
        report.unmatched += 1
        # Cases its command lines named and changed (a digest reply): their mails (a closure) go on them.
        named = {c.key: c for c in decision.named}
        rest = []
        held: dict[str, Message] = {}  # action id → what the receipt says about a mail the daily cap holds
        for send in decision.sends:
            case = named.get(send.case_key)
            if case is None:
                rest.append(send)
                continue
            wait, recorded = self._record_intent(case, case, send, now, report, hold_over_cap=True)
            if wait is not None:
                held[send.action_id] = held_message(send, *wait, calendar_for(case, self.policy).zone)
            named[case.key] = recorded if recorded is not None else case
        for case in named.values():
            self.store.put_case(case)
        if rest:
            # No case to record on: the receipt shows the mail's own subject where a case's title would be.
            shown = outside_case(strip_prefixes(mail.subject), mail.subject, self.settings.bot.language, now)
            for send in rest:  # the receipt: a closure the cap holds is "held until …", not "sent"
                self._record_send(None, held_receipt(send, held, self.settings.bot.language), now, report,
                                  shown=shown)

    def _event(self, key: str | None, message: str, level: int = logging.INFO) -> None:
        # Subjects and reasons can carry what people paste: logs get the same masking as the store.
        log.log(level, "%s %s", key or "-", redact(message))

