"""The `mailbot` command: argument parsing and one-line errors with exit codes (adapters: mailbot.wiring).

Exit codes (INTERFACE.md): 0 success, 1 runtime failure with a one-line reason, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailbot import __version__
from mailbot.cli import views
from mailbot.cli.report import add_report_parser, report_command
from mailbot.cli.store import add_store_parser, store_command
from mailbot.config import ConfigError, Settings, load
from mailbot.mailbox.base import MailboxProblem
from mailbot.mailbox.maildir import MaildirMailbox
from mailbot.mailbox.memory import MemoryMailbox
from mailbot.models import EntryKind
from mailbot.storage import StoreCorrupt, StoreWriteError
from mailbot.store import Store
from mailbot.wiring import RuntimeProblem, make_calendar, make_service, make_services, open_store, writer_lock


class UsageError(Exception):
    """Bad arguments: exit 2."""


def _now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now {value!r}: expected ISO-8601 with offset, e.g. 2021-04-15T10:00:00+08:00") from None
    if d.tzinfo is None:
        raise UsageError(f"--now {value!r}: expected an offset, e.g. 2021-04-15T10:00:00+08:00")
    if not 1970 <= d.year <= 9000:  # the calendar counts years ahead: year 9999 has no next one
        raise UsageError(f"--now {value!r}: expected a year from 1970 to 9000")
    return d.astimezone(UTC)


def _settings(args: argparse.Namespace) -> Settings:
    return load(Path(args.config))


def setup_logging(settings: Settings | None, debug: bool) -> None:
    level = logging.DEBUG if debug else getattr(logging, settings.bot.log_level if settings else "INFO")
    handler = logging.StreamHandler(sys.stderr)
    if settings is not None and settings.bot.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("mailbot")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                           "message": record.getMessage()}, ensure_ascii=False)


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


# --- commands --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    setup_logging(settings, args.debug)
    names = [m.name for m in settings.all_mailboxes]
    # One writer per state folder for the files engine; PostgreSQL instances coordinate by leases instead.
    with writer_lock(settings) if settings.store.kind == "files" else contextlib.nullcontext():
        stores = None
        if settings.store.kind == "postgresql" and len(names) > 1:
            # Each mailbox its own connection: the lease's fence is checked per store, at each batch's commit.
            stores = {name: open_store(settings.for_mailbox(name), working=True) for name in names}
            store = stores[names[0]]
        else:
            store = open_store(settings, working=True)
        if len(names) > 1:
            services = make_services(settings, store, once=args.once, stores=stores)
        else:
            services = [make_service(settings, store, once=args.once)]
        service = services[0]
        try:
            warning = service.policy.calendar.coverage_warning(_now(args.now).astimezone(settings.bot.zone).date())
            if warning:
                logging.getLogger("mailbot").warning("- %s", warning)
            if args.once:
                from mailbot.outcomes import CycleReport

                reports = []
                for each in services:  # several mailboxes: each in turn, one after the other
                    if settings.store.kind == "postgresql":  # one cycle, only under the mailbox's lease
                        from mailbot.runner import run_once_leased

                        leased = run_once_leased(each, each.settings, _now(args.now))
                        if leased is None:
                            print(f"another instance holds the lease of mailbox {each.settings.mailbox.name}: "
                                  "nothing done there (see `mailbot status`)" if len(services) > 1 else
                                  "another instance holds the mailbox's lease: nothing done (see `mailbot status`)")
                            continue
                        reports.append(leased.as_dict())
                    else:
                        reports.append(each.run_once(_now(args.now)).as_dict())
                if not reports:
                    return 0
                report = CycleReport(**{k: sum(r[k] for r in reports) for k in reports[0]})
                if args.json and settings.store.kind == "postgresql":
                    print(json.dumps(report.as_dict()))  # one line, as it always was on this engine
                elif args.json:
                    _print_json(report.as_dict())
                else:
                    print(_summary_line(report.as_dict()))
                return 0
            # Slow (APScheduler): only the long-running service needs it
            from mailbot.runner import run_forever

            return run_forever(services if len(services) > 1 else service, settings,
                               fixed_now=_now(args.now) if args.now else None)
        finally:
            for each in services:
                each.close()


def cmd_store(args: argparse.Namespace) -> int:
    return store_command(args, _settings(args))


def cmd_status(args: argparse.Namespace) -> int:
    from mailbot.status import status_command  # psycopg only when the store is PostgreSQL

    return status_command(_settings(args), args.json, sys.stdout, _now(args.now) if args.now else None)


def cmd_report(args: argparse.Namespace) -> int:
    return report_command(args, _settings(args), _now(args.now))


def _summary_line(r: dict[str, int]) -> str:
    return (f"ingested {r['ingested']} (opened {r['opened']}, threaded {r['threaded']}, unmatched {r['unmatched']}, "
            f"quarantined {r['quarantined']}, duplicates {r['duplicates']}); sent {r['sent']}, failed {r['failed']}, "
            f"deferred {r['deferred']}")


def cmd_cases(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = open_store(settings)
    cases = list(store.all_cases())
    now = _now(args.now)
    cases = views.filter_cases(cases, status=args.status, engineer=args.engineer, overdue=args.overdue, now=now,
                               mailbox=args.mailbox)
    if args.json:
        # INTERFACE.md: each item is a case as `mailbot case KEY --json` prints it, timeline included.
        _print_json([views.case_json(c, settings.bot.zone) for c in cases])
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
    settings = _settings(args)
    store = open_store(settings)
    case = store.get_case(args.key.upper())
    if case is None:
        raise RuntimeProblem(f"no case {args.key} (see `mailbot cases`)")
    if args.json:
        _print_json(views.case_json(case, settings.bot.zone))
    else:
        views.print_case(case, settings.bot.zone)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    # Slow (the decision rules and the service pull in mail-parser and jinja2): only `plan` needs them here.
    from mailbot.decide.policy import plan_next
    from mailbot.service import make_policy

    settings = _settings(args)
    store = open_store(settings)
    policy = make_policy(settings, make_calendar(settings))
    now = _now(args.now)
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
        _print_json([{k: r[k] for k in ("case", "kind", "due")} for r in rows])
    else:
        views.print_plan(rows)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    # Slow (mail-parser, jinja2, the redaction patterns): only `explain` and `run` need the parser.
    from mailbot.explain import explain_mail
    from mailbot.parse import parse

    settings = _settings(args)
    path = Path(args.file)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RuntimeProblem(f"cannot read {path}: {e.strerror or e}") from None
    store_root = settings.bot.state_dir / "store"
    store = open_store(settings) if store_root.exists() or settings.store.kind != "files" else Store(None)
    service = make_service(settings, store, mailbox=MemoryMailbox())
    data = explain_mail(parse(raw), service)
    if args.json:
        _print_json(data)
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
    info = NudgeInfo(reply.date, policy.nudge.after_business_hours, (reply,), engineers)
    kind = EntryKind.NUDGE if template == "nudge" else EntryKind.ESCALATION
    to = engineers if template == "nudge" else (policy.nudge.leads or ("lead@example",))
    return SendMail("preview", case.key, kind, template, tuple(to), nudge=info)


def cmd_render(args: argparse.Namespace) -> int:
    # Slow (jinja2, mail-parser): only the commands that render or decide load them.
    from mailbot.decide.policy import Receipt, SendMail, closure, reminder
    from mailbot.render.templates import TEMPLATE_NAMES, TemplateProblem, outbound

    settings = _settings(args)
    if args.template not in TEMPLATE_NAMES:
        raise UsageError(f"unknown template {args.template!r}: expected one of {', '.join(TEMPLATE_NAMES)}")
    store = open_store(settings)
    case = store.get_case(args.key.upper())
    if case is None:
        raise RuntimeProblem(f"no case {args.key} (see `mailbot cases`)")
    service = make_service(settings, store, mailbox=MemoryMailbox())
    now = _now(args.now)
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
        _print_json({"subject": out.subject, "from": out.from_addr, "to": list(out.to), "cc": list(out.cc),
                     "in_reply_to": out.in_reply_to, "text": out.text, "html": out.html})
    else:
        print(f"From: {out.from_name} <{out.from_addr}>\nTo: {', '.join(out.to)}")
        if out.cc:
            print(f"Cc: {', '.join(out.cc)}")
        print(f"Subject: {out.subject}\nIn-Reply-To: {out.in_reply_to}\n\n{out.text}")
        if args.html:
            print("\n--- text/html ---\n" + (out.html or ""))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mailbot.cli.importer import import_path  # slow (the whole service): only `import` needs it

    settings = _settings(args)
    setup_logging(settings, args.debug)
    # The cases it opens belong to one mailbox (its address, language and templates): `--mailbox NAME`, or
    # the first one configured.
    name = args.mailbox or settings.all_mailboxes[0].name
    try:
        working = settings.for_mailbox(name)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    with writer_lock(settings):
        store = open_store(settings)
        return import_path(Path(args.path), working, store, _now(args.now), as_json=args.json)


def cmd_requeue(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.mailbox.kind != "maildir":
        raise RuntimeProblem("requeue works on the Maildir mailbox; with IMAP, move the mail back to the inbox folder")
    box = MaildirMailbox(settings.mailbox.path, settings.mailbox.quarantine_folder)
    with writer_lock(settings):
        store = open_store(settings)
        refs = args.refs or [q["ref"] for q in store.quarantined()]
        moved = [ref for ref in refs if box.requeue(ref)]
        for ref in moved:
            store.remove_quarantined(ref)
        store.commit()
    print(f"requeued {len(moved)} of {len(refs)} quarantined messages; `mailbot run --once` takes them again")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from mailbot.cli.doctor import (
        run_checks,  # slow (renders every template, forks parse workers): `doctor` only
    )

    try:
        settings = _settings(args)
    except ConfigError as e:
        if args.json:
            _print_json([{"check": "config", "ok": False, "detail": str(e)}])
        else:
            print(f"FAIL config: {e}")
        return 2
    return run_checks(settings, _now(args.now), as_json=args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from mailbot.cli.demo import run_demo  # slow (the whole service): `demo` only

    return run_demo(keep=args.keep)


# --- main ------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _add_common_options(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--config, --now, --json, --debug. They are taken before the command (`mailbot --config X cases`) and
    after it (`mailbot cases --config X`): the command's copy has no defaults of its own (SUPPRESS), so it
    does not overwrite a value given before the command."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--config", default=default("config.toml"), help="config file (default ./config.toml)")
    parser.add_argument("--now", default=default(None), help="act as if it were this moment (ISO-8601 with offset)")
    parser.add_argument("--json", action="store_true", default=default(False), help="machine-readable output on stdout")
    parser.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks and debug logs")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, suppress=True)

    p = _Parser(prog="mailbot", description="Keeps support cases moving by email.")
    p.add_argument("--version", action="version", version=f"mailbot {__version__}")
    _add_common_options(p)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="the service (or one cycle with --once)")
    run.add_argument("--once", action="store_true", help="ingest everything new, send everything due, exit")
    run.set_defaults(func=cmd_run)
    cases = sub.add_parser("cases", parents=[common], help="list cases")
    cases.add_argument("--status", choices=["open", "waiting_customer", "waiting_engineer", "waiting_vendor", "closed"])
    cases.add_argument("--engineer", help="only cases of this engineer (address)")
    cases.add_argument("--overdue", action="store_true", help="only cases whose next action is due")
    cases.add_argument("--mailbox", help="only the cases of this mailbox ([mailboxes.NAME]; `default` for [mailbox])")
    cases.set_defaults(func=cmd_cases)
    case = sub.add_parser("case", parents=[common], help="one case with its timeline")
    case.add_argument("key")
    case.set_defaults(func=cmd_case)
    plan = sub.add_parser("plan", parents=[common], help="what is scheduled, soonest first")
    plan.add_argument("--mailbox", help="only the cases of this mailbox")
    plan.set_defaults(func=cmd_plan)
    explain = sub.add_parser("explain", parents=[common], help="how the bot reads one message")
    explain.add_argument("file")
    explain.set_defaults(func=cmd_explain)
    render = sub.add_parser("render", parents=[common], help="preview a template for a case")
    render.add_argument("key")
    render.add_argument("template")
    render.add_argument("--html", action="store_true", help="also print the HTML part")
    render.set_defaults(func=cmd_render)
    imp = sub.add_parser("import", parents=[common], help="take history from an mbox, Maildir or .eml folder")
    imp.add_argument("path")
    imp.add_argument("--mailbox", help="the mailbox the imported cases belong to (default: the first one)")
    imp.set_defaults(func=cmd_import)
    requeue = sub.add_parser("requeue", parents=[common], help="put quarantined mail back for another try")
    requeue.add_argument("refs", nargs="*")
    requeue.set_defaults(func=cmd_requeue)
    doctor = sub.add_parser("doctor", parents=[common], help="check config, templates, store, IMAP and SMTP")
    doctor.set_defaults(func=cmd_doctor)
    demo = sub.add_parser("demo", parents=[common], help="watch a support case come alive, in a temp folder")
    demo.add_argument("--keep", action="store_true", help="keep the temp folder and print its path")
    demo.set_defaults(func=cmd_demo)
    add_store_parser(sub, common)
    sub.choices["store"].set_defaults(func=cmd_store)
    status = sub.add_parser("status", parents=[common], help="instances alive, who works which mailbox, backlog")
    status.set_defaults(func=cmd_status)
    add_report_parser(sub, parents=[common]).set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    # Everything mailbot writes holds customers' mail: files 0600 and folders 0700, whatever the login's umask
    # (the systemd unit sets UMask=0077 too). Restored on return, for callers that run main() in-process.
    previous = os.umask(0o077)
    try:
        return _main(argv)
    finally:
        os.umask(previous)


def _main(argv: list[str] | None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except UsageError as e:
        print(f"mailbot: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"mailbot: config: {e}", file=sys.stderr)
        return 2
    except RuntimeProblem as e:
        print(f"mailbot: {e}", file=sys.stderr)
        return 1
    except (StoreCorrupt, StoreWriteError, MailboxProblem) as e:  # a corrupt shard, a full disk, no mailbox
        print(f"mailbot: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # never a traceback for the user unless asked for
        if debug:
            raise
        print(f"mailbot: unexpected error: {type(e).__name__}: {e} (run again with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
