"""What a mail that failed for good does to its case, pure: a note, the customers that cannot be reached,
the plan made again, and one notice to the engineers."""

from __future__ import annotations

from datetime import datetime

from mailbot.decide.messages import localized, message
from mailbot.decide.policy import TO_CUSTOMERS, Policy, Receipt, SendMail, plan_next
from mailbot.models import Case, CaseStatus, EntryKind


def after_permanent_failure(case: Case, action_id: str, kind: str, subject: str, failed: tuple[str, ...],
                            reason: str, now: datetime, policy: Policy,
                            about_message: bool = False) -> tuple[Case, SendMail | None] | None:
    """The case after mail `action_id` (of `kind`) failed for good for `failed`, and the notice to send to
    its engineers; None when nothing changes (only mail to customers counts: never a notice about a failed
    notice or nudge — that is how mail loops start)."""
    if kind not in TO_CUSTOMERS:  # EntryKind is a str enum: its values compare equal to their strings
        return None
    # A refusal of the message itself (5xx to MAIL FROM or the data: size, syntax, content) says nothing
    # about the addresses: the engineers hear of it, but no customer is marked as failing.
    customers_failed = () if about_message else tuple(a for a in failed if a in case.customers)
    case = case.with_(failed_addresses=tuple(dict.fromkeys((*case.failed_addresses, *customers_failed))),
                      notes=(*case.notes, f"{now.isoformat()} {kind} failed: {reason}"))
    if case.status != CaseStatus.CLOSED:
        case = case.with_(next_action=plan_next(case, policy))
    if not case.engineers:
        return case, None
    why = message("undeliverable", addresses=", ".join(failed), reason=reason)
    notice = SendMail(
        action_id=f"{action_id}/failed", case_key=case.key, kind=EntryKind.RECEIPT, template="notice",
        to=case.engineers,
        receipt=Receipt("", False, localized(why, False, case.effective_language), (subject,), kind="undeliverable"),
    )
    return case, notice
