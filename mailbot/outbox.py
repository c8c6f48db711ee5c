"""The outbox half of the service: recorded mail to the transport exactly once — the accepted log and the Sent
folder consulted after a crash, retries with back-off, a permanent failure recorded once. Mixed into `Service`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from mailbot.decide.failures import after_permanent_failure
from mailbot.models import EntryKind
from mailbot.outcomes import CycleReport
from mailbot.transport.base import PermanentFailure, Refused, TemporaryFailure

log = logging.getLogger("mailbot")

RETRY_MINUTES = (1, 5, 15, 60, 180, 360)  # temporary SMTP failures: back off, never give up silently
SEND_COMMIT_EVERY = 25  # sent mails marked per store commit (the accepted log covers the window)
HELD_KINDS = (EntryKind.REMINDER.value, EntryKind.CLOSURE.value)  # what an answer read meanwhile cancels


class OutboxSender:
    """Sending what the ledger holds (needs store, transport, sent_folder, settings, policy)."""

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
            retry = (now + timedelta(minutes=wait)).isoformat()
            # A reminder or closure waiting for its retry waits like one the daily cap holds (`not_before`):
            # a customer's reply (or an engineer's #skip) read meanwhile cancels it, instead of the retry
            # reminding a customer who has just answered.
            held = {"not_before": retry, "held_because": str(e)} if entry["kind"] in HELD_KINDS else {}
            self.store.outbox_update(action_id, attempts=attempts, last_error=str(e), next_try=retry, **held)
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
