"""Shared pieces of the benchmarks: settings, a Service wired like `mailbot run --once` with a Maildir and an
outbox folder, timing of mail-parser alone, peak RSS, and result printing."""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mailparser

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from generate import Mail, generate, last_date, write_maildir  # noqa: E402

from mailbot.config import Settings, from_dict  # noqa: E402
from mailbot.mailbox.maildir import MaildirMailbox  # noqa: E402
from mailbot.models import Case, CaseStatus, ClosureFields, EntryKind, NextAction, Role, TimelineEntry  # noqa: E402
from mailbot.service import CycleReport, Service  # noqa: E402
from mailbot.store.files import LAYOUT_VERSION, Store  # noqa: E402
from mailbot.wiring import make_service  # noqa: E402

logging.getLogger("mailbot").setLevel(logging.WARNING)
logging.getLogger("mailparser").setLevel(logging.CRITICAL)

__all__ = ["Mail", "generate", "last_date", "write_maildir", "settings_for", "service_for", "time_mailparser",
           "timed_ingest", "peak_rss_mb", "workers_peak_rss_mb", "vm_hwm_mb", "emit", "copy_maildir", "link_tree", "history_case", "fill_store",
           "tree_size"]


def settings_for(workdir: Path, parse_workers: int = 0) -> Settings:
    return from_dict({
        "bot": {"address": "casebot@support.example", "name": "casebot", "state_dir": "state",
                "parse_workers": parse_workers},
        "engineers": {"domains": ["support.example"]},
        "mailbox": {"kind": "maildir", "path": "maildir"},
    }, workdir)


def service_for(settings: Settings, store: Store, maildir: Path | None = None) -> Service:
    """Wired as `mailbot run --once` wires it (mailbot.wiring), parse workers included; `maildir` replaces
    the configured one."""
    return make_service(settings, store, mailbox=MaildirMailbox(maildir or settings.mailbox.path))


def time_mailparser(raws: Iterable[bytes]) -> float:
    """Seconds mail-parser alone takes to parse these messages (the floor the ingest is held to)."""
    items = list(raws)
    start = time.perf_counter()
    for raw in items:
        mailparser.parse_from_bytes(raw)
    return time.perf_counter() - start


def copy_maildir(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def cached_store_is_current(root: Path) -> bool:
    """A store kept by --cache is reused only when it has this mailbot's layout (an older one would be
    migrated during the measurement)."""
    try:
        layout = json.loads((root / "layout.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(d.get("version") == LAYOUT_VERSION for d in layout.get("_default", {}).values())


def link_tree(src: Path, dst: Path) -> None:
    """A copy made of hard links: instant, and safe because neither the store nor the Maildir ever changes a
    file in place (they write a temp file and rename it, which only replaces the copy's directory entry)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link)


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


_ZH = ["请收集日志并上传。", "已经按照建议修改配置，目前运行正常。", "补丁已安装，重启后问题消失。",
       "第三方厂商确认是驱动兼容性问题。", "感谢支持，本问题可以关闭。", "我们会继续观察一周。"]
_EN = ["Please collect the logs and upload them.", "We changed the setting as suggested; all good so far.",
       "The hotfix is installed and the problem is gone after a reboot.", "Thanks, you may close the case."]


def history_case(i: int, rng: random.Random, *, status: CaseStatus = CaseStatus.CLOSED, opened: datetime,
                 entries: int = 5, next_due: datetime | None = None) -> tuple[Case, list[str]]:
    """A plausible case from the past (Chinese or English, `entries` timeline entries of a few hundred
    characters) and its Message-IDs. Keys `CAS-NNNNN-ZNNNNN` never collide with generated mail."""
    key = f"CAS-{i % 100000:05d}-Z{i % 100000:05d}" if i < 100000 else f"CAS-{i % 100000:05d}-Y{i // 100000:05d}"
    zh = rng.random() < 0.75
    customer = f"user{rng.randint(100, 999)}@customer{rng.randint(1, 300)}.example"
    engineer = f"eng{rng.randint(1, 40)}@support.example"
    mids = [f"<{rng.getrandbits(96):024x}@{'support.example' if k % 2 == 0 else 'customer.example'}>"
            for k in range(entries)]
    when = opened
    timeline = []
    for k, mid in enumerate(mids):
        who, role = (engineer, Role.ENGINEER) if k % 2 == 0 else (customer, Role.CUSTOMER)
        text = "\n".join(rng.choice(_ZH if zh else _EN) for _ in range(rng.randint(4, 12)))
        timeline.append(TimelineEntry(mid, when, who, role, EntryKind.MAIL, "in", text,
                                      f"RE: [案例号: {key} ] % 历史案例 {i} % 初次响应 CMIT:{i:07d}"))
        when += timedelta(hours=rng.uniform(2, 60))
    closed = status == CaseStatus.CLOSED
    case = Case(
        key=key, title=f"历史案例 {i}" if zh else f"Past case {i}", subject=f"[案例号: {key} ] % 历史案例 {i} %",
        status=status, language="zh-CN" if zh else "en", opened=opened, last_activity=when,
        tracking_tokens=(f"CMIT:{i:07d}",), customers=(customer,), engineers=(engineer,),
        contact_names=tuple(sorted(((customer, "客户"), (engineer, "工程师")))), timeline=tuple(timeline),
        last_engineer_mail=timeline[-1].date if len(timeline) % 2 else timeline[-2].date,
        next_action=None if closed or next_due is None else NextAction("reminder", next_due),
        closure=ClosureFields("问题描述", "问题分析", "问题总结") if closed else None,
    )
    return case, mids


def fill_store(store: Store, cases: Iterable[tuple[Case, list[str]]], chunk_shards: int = 512) -> int:
    """Put cases (and their Message-IDs) through the Store API, committing one group of case shards at a
    time, so that each shard file is written once. Returns the number of cases."""
    groups: dict[int, list[tuple[Case, list[str]]]] = {}
    for case, mids in cases:
        groups.setdefault(store.locality(case) // chunk_shards, []).append((case, mids))
    n = 0
    for _, members in sorted(groups.items()):
        for case, mids in members:
            store.put_case(case)
            for mid in mids:
                store.remember(mid, case.key)
            n += 1
        store.commit()
    return n


def timed_ingest(workdir: Path, now: datetime, store_root: Path | None = None,
                 parse_workers: int = 0) -> tuple[float, CycleReport, Store]:
    """One `run --once` over workdir/maildir into the store (workdir/state/store unless given), timed from
    opening the store to the end of the cycle, the parse workers' start and shutdown included."""
    settings = settings_for(workdir, parse_workers)
    start = time.perf_counter()
    store = Store(store_root or settings.bot.state_dir / "store")
    service = service_for(settings, store)
    try:
        report = service.run_once(now)
    finally:
        service.close()
    return time.perf_counter() - start, report, store


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB: resource.getrusage's ru_maxrss (Linux reports KiB). Note that Linux
    carries ru_maxrss over fork+exec, so spawn measured subprocesses from a small parent."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def workers_peak_rss_mb() -> float:
    """The largest peak RSS among this process's ended children (the parse workers, once the service closed
    them). A forked worker's RSS counts the pages it shares with the bot, so bot + workers overstates."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    """The kernel's per-process high-water mark (VmHWM), which starts afresh at exec; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def emit(title: str, rows: list[tuple[str, Any]], as_json: bool, data: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        return
    print(title)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
