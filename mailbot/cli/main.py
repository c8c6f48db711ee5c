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
from pathlib import Path

from mailbot import __version__
from mailbot.cli.common import UsageError, parse_now, print_json, settings_of, setup_logging
from mailbot.cli.inspect import cmd_case, cmd_cases, cmd_explain, cmd_plan, cmd_render
from mailbot.cli.report import add_report_parser, report_command
from mailbot.cli.store import add_store_parser, store_command
from mailbot.config import ConfigError
from mailbot.mailbox.base import MailboxProblem
from mailbot.mailbox.maildir import MaildirMailbox
from mailbot.storage import StoreCorrupt, StoreWriteError
from mailbot.wiring import RuntimeProblem, make_service, make_services, open_store, writer_lock


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
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
            warning = service.policy.calendar.coverage_warning(parse_now(args.now).astimezone(settings.bot.zone).date())
            if warning:
                logging.getLogger("mailbot").warning("- %s", warning)
            if args.once:
                from mailbot.outcomes import CycleReport

                now = parse_now(args.now)
                if settings.store.kind == "postgresql":  # one cycle a mailbox, only under its lease
                    from mailbot.runner import run_once_leased_all

                    cycles = run_once_leased_all(services, now)
                else:
                    cycles = [each.run_once(now) for each in services]
                reports = []
                for each, cycle in zip(services, cycles, strict=True):
                    if cycle is None:
                        # With --json, stdout is the JSON alone: the note goes to stderr.
                        print(f"another instance holds the lease of mailbox {each.settings.mailbox.name}: "
                              "nothing done there (see `mailbot status`)" if len(services) > 1 else
                              "another instance holds the mailbox's lease: nothing done (see `mailbot status`)",
                              file=sys.stderr if args.json else sys.stdout)
                        continue
                    reports.append(cycle.as_dict())
                if not reports and not args.json:
                    return 0
                report = CycleReport(**{k: sum(r[k] for r in reports) for k in CycleReport().as_dict()})
                if args.json and settings.store.kind == "postgresql":
                    print(json.dumps(report.as_dict()))  # one line, as it always was on this engine
                elif args.json:
                    print_json(report.as_dict())
                else:
                    print(_summary_line(report.as_dict()))
                return 0
            # Slow (APScheduler): only the long-running service needs it
            from mailbot.runner import run_forever

            return run_forever(services if len(services) > 1 else service, settings,
                               fixed_now=parse_now(args.now) if args.now else None)
        finally:
            for each in services:
                each.close()


def cmd_store(args: argparse.Namespace) -> int:
    return store_command(args, settings_of(args))


def cmd_status(args: argparse.Namespace) -> int:
    from mailbot.status import status_command  # psycopg only when the store is PostgreSQL

    return status_command(settings_of(args), args.json, sys.stdout, parse_now(args.now) if args.now else None)


def cmd_report(args: argparse.Namespace) -> int:
    return report_command(args, settings_of(args), parse_now(args.now))


def _summary_line(r: dict[str, int]) -> str:
    return (f"ingested {r['ingested']} (opened {r['opened']}, threaded {r['threaded']}, unmatched {r['unmatched']}, "
            f"quarantined {r['quarantined']}, duplicates {r['duplicates']}); sent {r['sent']}, failed {r['failed']}, "
            f"deferred {r['deferred']}")


def cmd_import(args: argparse.Namespace) -> int:
    from mailbot.cli.importer import import_path  # slow (the whole service): only `import` needs it

    settings = settings_of(args)
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
        return import_path(Path(args.path), working, store, parse_now(args.now), as_json=args.json)


def cmd_requeue(args: argparse.Namespace) -> int:
    settings = settings_of(args)
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
        settings = settings_of(args)
    except ConfigError as e:
        if args.json:
            print_json([{"check": "config", "ok": False, "detail": str(e)}])
        else:
            print(f"FAIL config: {e}")
        return 2
    return run_checks(settings, parse_now(args.now), as_json=args.json)


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
        if args.now is not None:  # every command takes --now (INTERFACE.md): a bad one is exit 2, even where unused
            parse_now(args.now)
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
    except BrokenPipeError:  # `mailbot store dump | head`: the reader went away; nothing to say to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's own flush at exit fails no more
        return 1
    except Exception as e:  # never a traceback for the user unless asked for
        if debug:
            raise
        print(f"mailbot: unexpected error: {type(e).__name__}: {e} (run again with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
