"""The sweep's half of the service: what is due (and the daily digests) decided by the pure rules, each
mail recorded as an intent in the outbox ledger before anything is sent. Mixed into `Service`."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

import jinja2

from mailbot.cases import closed, record_outbound
from mailbot.decide.digest import digest_day, digests
from mailbot.decide.messages import Message
from mailbot.decide.policy import (
    TO_CUSTOMERS,
    SendMail,
)
from mailbot.decide.sweep import DueFacts, decide_due, over_cap, planned, release_time, silent_business_days
from mailbot.models import Case, EntryKind
from mailbot.outcomes import CycleReport
from mailbot.render import compose
from mailbot.render.templates import NO_CASE, Identity, TemplateProblem, outbound, outside_case

log = logging.getLogger("mailbot")

DIGEST_CHECKPOINT = "digest"  # {"day": the local day whose digests are recorded}
DIGEST_TITLE = {"en": "daily digest", "zh-CN": "每日摘要"}  # what a digest shows where a case's title would be


class Sweeping:
    """Deciding and recording outgoing mail (needs store, policy, settings, env, me, identities, quiet)."""

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
