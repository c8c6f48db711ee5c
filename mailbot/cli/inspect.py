"""The reading commands: `cases`, `case`, `plan`, `explain`, `render` (they change nothing)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from mailbot.cli import views
from mailbot.cli.common import UsageError, parse_now, print_json, settings_of
from mailbot.mailbox.memory import MemoryMailbox
from mailbot.models import EntryKind
from mailbot.store import Store
from mailbot.wiring import RuntimeProblem, make_calendar, make_service, open_store


def cmd_cases(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = open_store(settings)
    cases = list(store.all_cases())
    now = parse_now(args.now)
    cases = views.filter_cases(cases, status=args.status, engineer=args.engineer, overdue=args.overdue, now=now,
                               mailbox=args.mailbox)
    if args.json:
        # INTERFACE.md: each item is a case as `mailbot case KEY --json` prints it, timeline included.
        print_json([views.case_json(c, settings.bot.zone) for c in cases])
    else:
        views.print_cases(cases, settings.bot.zone, now)
        unmatched = store.unmatched()
        if unmatched and not args.status:
            views.print_unmatched(unmatched, settings.bot.zone)
        quarantined = store.quarantined()
        if quarantined and not args.status:
            views.print_quarantined(quarantined, settings.bot.zone)
    return 0


def cmd_case(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = open_store(settings)
    case = store.get_case(args.key.upper())
    if case is None:
        raise RuntimeProblem(f"no case {args.key} (see `mailbot cases`)")
    if args.json:
        print_json(views.case_json(case, settings.bot.zone))
    else:
        views.print_case(case, settings.bot.zone)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    # Slow (the decision rules and the service pull in mail-parser and jinja2): only `plan` needs them here.
    from mailbot.decide.policy import plan_next
    from mailbot.service import make_policy

    settings = settings_of(args)
    store = open_store(settings)
    policy = make_policy(settings, make_calendar(settings))
    now = parse_now(args.now)
    rows = []
    for case in store.active_cases():
        if args.mailbox is not None and case.mailbox != args.mailbox:
            continue
        action = plan_next(case, policy)
        if action is not None:
            rows.append({"case": case.key, "kind": action.kind, "due": action.due.astimezone(settings.bot.zone).isoformat(),
                         "title": case.title, "overdue": action.due <= now})
    rows.sort(key=lambda r: r["due"])
    if args.json:
        print_json([{k: r[k] for k in ("case", "kind", "due")} for r in rows])
    else:
        views.print_plan(rows)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    # Slow (mail-parser, jinja2, the redaction patterns): only `explain` and `run` need the parser.
    from mailbot.explain import explain_mail
    from mailbot.parse import parse

    settings = settings_of(args)
    path = Path(args.file)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RuntimeProblem(f"cannot read {path}: {e.strerror or e}") from None
    store_root = settings.bot.state_dir / "store"
    store = open_store(settings) if store_root.exists() or settings.store.kind != "files" else Store(None)
    service = make_service(settings, store, mailbox=MemoryMailbox())
    data = explain_mail(parse(raw), service, parse_now(args.now))
    if args.json:
        print_json(data)
    else:
        views.print_explain(data)
    return 0


def _preview_engineers_side(template: str, case: Any, policy: Any, now: datetime) -> Any:
    """A nudge, an escalation or a digest as the case would show in one (issue 17), for `mailbot render`."""
    from mailbot.decide.digest import digests
    from mailbot.decide.policy import SendMail
    from mailbot.models import DigestInfo, NudgeInfo, WaitingReply

    engineers = case.engineers or ("engineer@example",)
    if template == "digest":
        found = [d for d in digests([case], now.date(), now, policy.calendar, policy) if d.to[0] == engineers[0]]
        info = found[0].digest if found else DigestInfo(now.date().isoformat(), engineers[0], 0, ())
        return SendMail("preview", case.key, EntryKind.DIGEST, "digest", engineers[:1], digest=info)
    last = next((e for e in reversed(case.timeline) if e.role.value == "customer"), None)
    reply = WaitingReply(last.from_addr if last else "customer@example",
                         f"{(last.date if last else now).astimezone(policy.calendar.zone):%Y-%m-%d %H:%M}",
                         last.text if last else "(the reply)")
    hours = policy.nudge.after_business_hours if template == "nudge" else policy.nudge.escalate_after_business_hours
    info = NudgeInfo(reply.date, hours, (reply,), engineers)
    kind = EntryKind.NUDGE if template == "nudge" else EntryKind.ESCALATION
    to = engineers if template == "nudge" else (policy.nudge.leads or ("lead@example",))
    return SendMail("preview", case.key, kind, template, tuple(to), nudge=info)


def cmd_render(args: argparse.Namespace) -> int:
    # Slow (jinja2, mail-parser): only the commands that render or decide load them.
    from mailbot.decide.policy import Receipt, SendMail, closure, reminder
    from mailbot.render.templates import TEMPLATE_NAMES, TemplateProblem, outbound

    settings = settings_of(args)
    if args.template not in TEMPLATE_NAMES:
        raise UsageError(f"unknown template {args.template!r}: expected one of {', '.join(TEMPLATE_NAMES)}")
    store = open_store(settings)
    case = store.get_case(args.key.upper())
    if case is None:
        raise RuntimeProblem(f"no case {args.key} (see `mailbot cases`)")
    if any(m.name == case.mailbox for m in settings.all_mailboxes):
        # As the case's own mailbox sends it: its address, language and templates ([mailboxes.NAME]).
        settings = settings.for_mailbox(case.mailbox)
    service = make_service(settings, store, mailbox=MemoryMailbox())
    now = parse_now(args.now)
    if args.template in ("reminder", "reminder2"):
        number = 1 if args.template == "reminder" else 2
        send = replace(reminder(case, service.policy), template=args.template, reminder_number=number)
    elif args.template == "closure":
        send = closure(case, service.policy, case.closure, "preview")
    elif args.template in ("nudge", "escalation", "digest"):
        send = _preview_engineers_side(args.template, case, service.policy, now)
    elif args.template == "notice":
        send = SendMail("preview", case.key, EntryKind.RECEIPT, "notice", case.engineers or ("engineer@example",),
                        receipt=Receipt("", False, "mail to customer@example bounced; no more reminders go there",
                                        ("(the subject of the bounced mail)",), kind="bounce"))
    else:
        send = SendMail("preview", case.key, EntryKind.RECEIPT, "receipt", case.engineers or ("engineer@example",),
                        receipt=Receipt("#status", True, "preview", ("details appear here",)))
    if not send.to:
        send = SendMail(send.action_id, send.case_key, send.kind, send.template, ("customer@example",), send.cc,
                        send.reminder_number, send.closure, send.default_closure, send.receipt)
    try:
        out = outbound(service.env, case, send, service.me, now, settings.smtp.show_engineer_name,
                       service.silent_business_days(case, now))
    except TemplateProblem as e:
        raise RuntimeProblem(str(e)) from None
    if args.json:
        print_json({"subject": out.subject, "from": out.from_addr, "to": list(out.to), "cc": list(out.cc),
                     "in_reply_to": out.in_reply_to, "text": out.text, "html": out.html})
    else:
        print(f"From: {out.from_name} <{out.from_addr}>\nTo: {', '.join(out.to)}")
        if out.cc:
            print(f"Cc: {', '.join(out.cc)}")
        print(f"Subject: {out.subject}\nIn-Reply-To: {out.in_reply_to}\n\n{out.text}")
        if args.html:
            print("\n--- text/html ---\n" + (out.html or ""))
    return 0
