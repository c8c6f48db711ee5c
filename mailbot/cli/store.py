"""`mailbot store init | dump [FILE] | load FILE`: the schema, and the engine-neutral backup (JSON lines)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from mailbot.config import Settings
from mailbot.store.dump import DumpError, dump_lines, load, parse_lines
from mailbot.wiring import RuntimeProblem, open_store, writer_lock


def add_store_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    store = sub.add_parser("store", parents=[common], help="the store: init (schema), dump and load (backup)")
    verbs = store.add_subparsers(dest="verb", required=True, parser_class=type(store))
    verbs.add_parser("init", parents=[common], help="create or upgrade the store's schema (idempotent)")
    dump = verbs.add_parser("dump", parents=[common], help="every record as JSON lines (stdout without FILE)")
    dump.add_argument("file", nargs="?")
    load_ = verbs.add_parser("load", parents=[common], help="load a dump (idempotent), files ⇄ postgresql")
    load_.add_argument("file")


def store_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.verb == "init":
        return _init(settings)
    if args.verb == "dump":
        return _dump(settings, args.file)
    return _load(settings, Path(args.file))


def _init(settings: Settings) -> int:
    if settings.store.kind == "files":
        with writer_lock(settings):  # the files engine makes its folder on first commit; nothing to migrate
            store = open_store(settings, working=True)
            store.commit()
        print(f"store: files engine at {settings.bot.state_dir / 'store'} ready", flush=True)
        return 0
    store = open_store(settings, working=True)  # creates or upgrades the schema
    from mailbot.store.postgresql import SCHEMA_VERSION

    print(f"store: postgresql schema at version {SCHEMA_VERSION}")
    _close(store)
    return 0


def _dump(settings: Settings, file: str | None) -> int:
    store = open_store(settings)
    try:
        if file is None:
            for line in dump_lines(store):
                sys.stdout.write(line)
            return 0
        path = Path(file)
        tmp = path.with_name(path.name + ".part")
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                for line in dump_lines(store):
                    out.write(line)
            tmp.replace(path)  # a dump that stopped half-way never looks like a whole one
        except OSError as e:
            raise RuntimeProblem(f"cannot write {path}: {e.strerror or e}") from None
        print(f"store: dumped to {path}", file=sys.stderr)
        return 0
    finally:
        _close(store)


def _load(settings: Settings, path: Path) -> int:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RuntimeProblem(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    # The files engine has one writer at a time (a running bot holds the lock); PostgreSQL takes many.
    with writer_lock(settings) if settings.store.kind == "files" else contextlib.nullcontext():
        store = open_store(settings, working=True)
        try:
            changed = load(store, parse_lines(lines))
        except DumpError as e:
            raise RuntimeProblem(f"{path}: {e}") from None
        finally:
            _close(store)
    print(f"store: loaded {path}: {changed} records changed" + (" (already loaded)" if changed == 0 else ""))
    return 0


def _close(store: Any) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()
