"""`mailbot report`: what chasing achieves, read from the lives of cases — reminders answered within business
days (weekends, the Qingming holiday, a reply at 17:59), silent closes and reopenings, reply times, per
engineer, the JSON of INTERFACE.md, the page and the weekly mail."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from trustlife import at

from mailbot.cli.report import add_report_parser, report_command
from mailbot.config import from_dict
from mailbot.decide.calendar import BusinessCalendar
from mailbot.models import Case, CaseStatus, EntryKind, Role, TimelineEntry
from mailbot.render.templates import environment
from mailbot.report.figures import report
from mailbot.report.html import render
from mailbot.report.parts import gather_report
from mailbot.report.periods import BusinessClock, Period, percentile
from mailbot.report.weekly import weekly_report_due, weekly_slot

SHANGHAI = ZoneInfo("Asia/Shanghai")
CALENDAR = BusinessCalendar(SHANGHAI, time(9, 0), time(18, 0))
ENGINEER, OTHER_ENGINEER = "liqi@support.example", "wang@support.example"
CUSTOMER = "yang@customer.example"
BOT = "casebot@support.example"
MARCH_AND_APRIL = Period(date(2026, 3, 1), date(2026, 4, 30), SHANGHAI)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


class Life:
    """One case's timeline, written the way it happens (times in Shanghai)."""

    def __init__(self, key: str = "CAS-04027-B7D2Z5", opened: str = "2026-03-02T09:30:00+08:00") -> None:
        self.key, self.opened, self.entries = key, at(opened), []  # type: ignore[var-annotated]

    def _add(self, when: str, who: str, role: Role, kind: EntryKind, text: str = "", internal: bool = False) -> Life:
        self.entries.append(TimelineEntry(f"<{len(self.entries)}.{self.key}@x.example>", at(when), who, role, kind,
                                          "out" if role == Role.BOT else "in", text, internal=internal))
        return self

    def customer(self, when: str, kind: EntryKind = EntryKind.MAIL) -> Life:
        return self._add(when, CUSTOMER, Role.CUSTOMER, kind, "any news?")

    def engineer(self, when: str, who: str = ENGINEER, internal: bool = False) -> Life:
        return self._add(when, who, Role.ENGINEER, EntryKind.MAIL, "please send the logs", internal)

    def command(self, when: str, text: str, who: str = ENGINEER) -> Life:
        return self._add(when, who, Role.ENGINEER, EntryKind.COMMAND, text)

    def reminder(self, when: str) -> Life:
        return self._add(when, BOT, Role.BOT, EntryKind.REMINDER, "any update?")

    def closure(self, when: str) -> Life:
        return self._add(when, BOT, Role.BOT, EntryKind.CLOSURE, "closing")

    def bot(self, when: str, kind: str) -> Life:
        return self._add(when, BOT, Role.BOT, kind)  # type: ignore[arg-type]

    def case(self, mailbox: str | None = None) -> Case:
        last = max((e.date for e in self.entries), default=self.opened)
        case = Case(key=self.key, title="蓝屏", subject=f"[案例号: {self.key} ]", status=CaseStatus.CLOSED,
                    language="zh-CN", opened=self.opened, last_activity=last, customers=(CUSTOMER,),
                    engineers=(ENGINEER,), timeline=tuple(self.entries))
        if mailbox is not None and "mailbox" in Case.__dataclass_fields__:
            case = case.with_(mailbox=mailbox)
        elif mailbox is not None:
            object.__setattr__(case, "mailbox", mailbox)  # until issue 16 gives Case its mailbox
        return case


def figures(*cases: Case, period: Period = MARCH_AND_APRIL, mailbox: str | None = None) -> dict:
    return report(list(cases), period, CALENDAR, mailbox=mailbox)


# --- reminders answered within business days -----------------------------------------------------


def test_a_reminder_answered_the_next_business_day_counts_within_1():
    life = (Life().customer("2026-03-02T09:30:00+08:00").engineer("2026-03-02T10:00:00+08:00")
            .reminder("2026-03-05T10:00:00+08:00")  # Thursday
            .customer("2026-03-06T09:45:00+08:00"))  # Friday morning: 8h45 of business time later
    r = figures(life.case())["reminders"]
    assert (r["sent"], r["answered"], r["answer_rate"]) == (1, 1, 1.0)
    assert r["answered_within_business_days"] == {"1": 1, "3": 1}


def test_a_reminder_answered_after_the_qingming_holiday_weekend_counts_within_1_business_day():
    # 2026-04-03 is a Friday; Saturday 4th to Monday 6th are the Qingming holiday. Tuesday 09:30 is
    # 8 + 0.5 business hours after Friday 10:00: inside one business day (9 h).
    on_time = (Life("CAS-00001-AAAAAA").engineer("2026-03-30T10:00:00+08:00").reminder("2026-04-03T10:00:00+08:00")
               .customer("2026-04-07T09:30:00+08:00"))
    # The same reminder answered at 10:30 on Tuesday: 9.5 business hours, more than one business day.
    later = (Life("CAS-00002-BBBBBB").engineer("2026-03-30T10:00:00+08:00").reminder("2026-04-03T10:00:00+08:00")
             .customer("2026-04-07T10:30:00+08:00"))
    assert figures(on_time.case())["reminders"]["answered_within_business_days"] == {"1": 1, "3": 1}
    assert figures(later.case())["reminders"]["answered_within_business_days"] == {"1": 0, "3": 1}
    # Counting calendar days instead would put both four days out.


def test_a_reply_at_17_59_the_next_day_is_one_business_day_to_the_minute():
    def answered(sent: str, reply: str) -> dict:
        life = Life().engineer("2026-03-02T10:00:00+08:00").reminder(sent).customer(reply)
        return figures(life.case())["reminders"]["answered_within_business_days"]

    assert answered("2026-03-09T17:59:00+08:00", "2026-03-10T17:59:00+08:00") == {"1": 1, "3": 1}
    assert answered("2026-03-09T17:59:00+08:00", "2026-03-11T09:01:00+08:00") == {"1": 0, "3": 1}
    # Sent after hours (the bot was down): the business day starts at the next opening.
    assert answered("2026-03-09T20:00:00+08:00", "2026-03-10T17:59:00+08:00") == {"1": 1, "3": 1}


def test_auto_replies_and_bounces_are_not_answers_and_each_step_counts_apart():
    life = (Life().engineer("2026-03-02T10:00:00+08:00")
            .reminder("2026-03-05T10:00:00+08:00")
            .customer("2026-03-05T10:01:00+08:00", EntryKind.AUTO_REPLY)
            .customer("2026-03-05T10:02:00+08:00", EntryKind.BOUNCE)
            .reminder("2026-03-10T10:00:00+08:00")  # the 2nd, firmer one
            .customer("2026-03-12T11:00:00+08:00"))  # answers the 2nd, not the 1st
    r = figures(life.case())["reminders"]
    assert (r["sent"], r["answered"]) == (2, 1)
    steps = {s["step"]: (s["template"], s["sent"], s["answered"]) for s in r["by_step"]}
    assert steps == {1: ("reminder", 1, 0), 2: ("reminder2", 1, 1)}
    assert {t["template"]: t["answered"] for t in r["by_template"]} == {"reminder": 0, "reminder2": 1}
    thursday = r["by_weekday"][3]
    assert (thursday["name"], thursday["sent"], thursday["answered"]) == ("Thu", 1, 0)
    assert r["by_weekday"][1]["answered"] == 1  # Tuesday's reminder
    assert r["by_hour"][10]["sent"] == 2


def test_a_reply_after_the_engineer_wrote_again_answers_the_engineer_not_the_reminder():
    life = (Life().engineer("2026-03-02T10:00:00+08:00").reminder("2026-03-05T10:00:00+08:00")
            .engineer("2026-03-05T15:00:00+08:00")  # a new request: a new cycle, steps count from 1 again
            .customer("2026-03-06T10:00:00+08:00")
            .reminder("2026-03-11T10:00:00+08:00"))
    r = figures(life.case())["reminders"]
    assert (r["sent"], r["answered"]) == (2, 0)
    assert [(s["step"], s["sent"]) for s in r["by_step"]] == [(1, 2)]


# --- closures, silence and reopening -----------------------------------------------------------------


def test_a_case_closed_after_silence_and_reopened_by_the_customer():
    silent = (Life("CAS-00003-CCCCCC").engineer("2026-03-02T10:00:00+08:00")
              .reminder("2026-03-05T10:00:00+08:00").reminder("2026-03-10T10:00:00+08:00")
              .closure("2026-03-12T10:00:00+08:00")
              .customer("2026-03-25T09:00:00+08:00"))  # two weeks later: "it happened again"
    asked = (Life("CAS-00004-DDDDDD").engineer("2026-03-02T10:00:00+08:00").customer("2026-03-03T10:00:00+08:00")
             .command("2026-03-04T10:00:00+08:00", "#close\n问题总结: 已解决").closure("2026-03-04T10:00:05+08:00"))
    told = (Life("CAS-00005-EEEEEE").engineer("2026-03-02T10:00:00+08:00")
            .command("2026-03-03T10:00:00+08:00", "#snooze 2d")  # a command, but not the one that closed
            .reminder("2026-03-09T10:00:00+08:00").closure("2026-03-12T10:00:00+08:00"))
    c = figures(silent.case(), asked.case(), told.case())["cases"]
    assert (c["closed"], c["closed_after_silence"], c["reopened"]) == (3, 2, 1)
    assert (c["reopened_after_silent_close"], c["silent_close_rate"], c["silent_close_reopen_rate"]) == (1, 0.667, 0.5)


def test_a_closure_asked_by_close_counts_for_the_engineer_who_asked():
    life = (Life().engineer("2026-03-02T10:00:00+08:00").customer("2026-03-03T10:00:00+08:00")
            .command("2026-03-04T10:00:00+08:00", "＃ＣＬＯＳＥ", who=OTHER_ENGINEER)
            .closure("2026-03-04T10:00:05+08:00"))
    people = {e["address"]: e for e in figures(life.case())["by_engineer"]}
    assert people[OTHER_ENGINEER]["closures"] == 1 and people[ENGINEER]["closures"] == 0


# --- reply times in business hours ---------------------------------------------------------------


def test_reply_times_p50_and_p90_in_business_hours_on_known_values():
    # Ten cases: the engineer writes on Monday at 09:00; the customer answers 1, 2, …, 10 business hours
    # later (18:00 is the 9th hour, the 10th is Tuesday 10:00); the engineer answers 2 business hours after
    # that, across the night when the reply came late.
    times = [("09T10", "09T12"), ("09T11", "09T13"), ("09T12", "09T14"), ("09T13", "09T15"), ("09T14", "09T16"),
             ("09T15", "09T17"), ("09T16", "09T18"), ("09T17", "10T10"), ("09T18", "10T11"), ("10T10", "10T12")]
    cases = [Life(f"CAS-{n:05d}-ZZZZZZ").engineer("2026-03-09T09:00:00+08:00")
             .customer(f"2026-03-{reply}:00:00+08:00").engineer(f"2026-03-{answer}:00:00+08:00").case()
             for n, (reply, answer) in enumerate(times)]
    data = figures(*cases)
    assert data["customer_reply_business_hours"] == {"p50": 5.0, "p90": 9.0, "count": 10}
    assert data["engineer_reply_business_hours"] == {"p50": 2.0, "p90": 2.0, "count": 10}
    me = next(e for e in data["by_engineer"] if e["address"] == ENGINEER)
    assert (me["cases"], me["replies"], me["reply_business_hours"]["p50"]) == (10, 20, 2.0)


def test_percentile_is_the_nearest_rank():
    assert [percentile([float(v) for v in range(1, 11)], p) for p in (50, 90, 100)] == [5.0, 9.0, 10.0]
    assert percentile([7.5], 90) == 7.5 and percentile([], 50) is None


def test_business_clock_skips_nights_weekends_and_holidays_and_works_backwards_in_time():
    clock = BusinessClock(CALENDAR)
    assert clock.hours_between(at("2026-04-03T17:00:00+08:00"), at("2026-04-07T10:00:00+08:00")) == 2.0
    assert clock.hours_between(at("2026-04-10T17:00:00+08:00"), at("2026-04-11T12:00:00+08:00")) == 1.0
    # An older case read after a newer one: the running totals grow backwards and stay consistent.
    assert clock.hours_between(at("2021-04-30T17:00:00+08:00"), at("2021-05-06T10:00:00+08:00")) == 2.0
    assert clock.hours_between(at("2026-04-03T17:00:00+08:00"), at("2026-04-07T10:00:00+08:00")) == 2.0


def test_a_case_in_another_timezone_is_measured_on_its_customers_working_day():
    berlin = Life().engineer("2026-03-02T10:00:00+01:00").reminder("2026-03-06T17:00:00+01:00") \
        .customer("2026-03-09T09:30:00+01:00").case().with_(timezone="Europe/Berlin")
    r = figures(berlin)["reminders"]
    # Friday 17:00 → Monday 09:30 in Berlin is 1.5 business hours; Shanghai's day would make it 0.
    assert r["answered_within_business_days"] == {"1": 1, "3": 1}
    assert r["by_hour"][17]["sent"] == 1 and r["by_weekday"][4]["sent"] == 1


# --- the period, the mailbox, nudges ------------------------------------------------------------


def test_each_event_counts_in_the_period_of_its_own_date():
    life = (Life(opened="2026-02-20T10:00:00+08:00").engineer("2026-02-20T11:00:00+08:00")
            .reminder("2026-02-26T10:00:00+08:00")  # before the period: not counted
            .reminder("2026-04-30T10:00:00+08:00")  # the last day of the period
            .customer("2026-05-06T10:00:00+08:00"))  # answered after the period, past the May 1–5 holiday
    data = figures(life.case())
    assert data["cases"]["opened"] == 0
    assert (data["reminders"]["sent"], data["reminders"]["answered"]) == (1, 1)
    # Six calendar days, one business day: Thursday 10:00 → (holiday) → Wednesday 10:00 is 8 + 1 hours.
    assert data["reminders"]["answered_within_business_days"] == {"1": 1, "3": 1}
    assert data["customer_reply_business_hours"]["count"] == 0  # the reply came after the period


def test_mailbox_filter_keeps_the_cases_of_one_mailbox():
    first = Life("CAS-00006-FFFFFF").engineer("2026-03-02T10:00:00+08:00").case()
    second = Life("CAS-00007-GGGGGG").engineer("2026-03-02T10:00:00+08:00").case(mailbox="vip")
    assert figures(first, second)["cases"]["opened"] == 2
    assert figures(first, second, mailbox="default")["cases"]["opened"] == 1
    vip = figures(first, second, mailbox="vip")
    assert (vip["cases"]["opened"], vip["mailbox"]) == (1, "vip")


def test_nudges_and_escalations_are_counted_from_the_timeline():
    life = (Life().engineer("2026-03-02T10:00:00+08:00").customer("2026-03-03T10:00:00+08:00")
            .bot("2026-03-03T14:00:00+08:00", "nudge").bot("2026-03-04T10:00:00+08:00", "escalation"))
    data = figures(life.case())
    assert (data["nudges"], data["escalations"]) == (1, 1)
    assert figures(Life().engineer("2026-03-02T10:00:00+08:00").case())["nudges"] == 0


def test_json_shape_has_the_interface_names():
    data = figures(Life().engineer("2026-03-02T10:00:00+08:00").reminder("2026-03-05T10:00:00+08:00").case())
    assert {"period", "cases", "reminders", "customer_reply_business_hours", "engineer_reply_business_hours",
            "nudges", "by_engineer"} <= set(data)
    assert set(data["period"]) >= {"since", "until"}
    assert set(data["cases"]) >= {"opened", "closed", "closed_after_silence", "reopened"}
    assert set(data["reminders"]) >= {"sent", "answered", "answer_rate", "answered_within_business_days"}
    assert set(data["reminders"]["answered_within_business_days"]) == {"1", "3"}
    assert set(data["customer_reply_business_hours"]) >= {"p50", "p90"}
    assert all("address" in e for e in data["by_engineer"]) and data["by_engineer"]
    assert json.loads(json.dumps(data)) == data  # plain JSON: no dates or sets left in it


# --- what the store reads for the report ------------------------------------------------------------


def varied_lives() -> list[Case]:
    """Cases of every shape the figures read, for comparing the store's report read with whole cases."""
    chased = (Life("CAS-05001-AAAAAA").customer("2026-03-02T09:30:00+08:00").engineer("2026-03-02T10:00:00+08:00")
              .reminder("2026-03-05T10:00:00+08:00").customer("2026-03-06T09:45:00+08:00")
              .engineer("2026-03-06T11:00:00+08:00").reminder("2026-03-11T10:00:00+08:00")
              .reminder("2026-03-16T10:00:00+08:00").closure("2026-03-18T10:00:00+08:00")
              .customer("2026-03-25T08:00:00+08:00"))  # reopened after a silent closure
    asked = (Life("CAS-05002-BBBBBB").customer("2026-03-03T09:00:00+08:00")
             .engineer("2026-03-03T17:59:00+08:00", OTHER_ENGINEER).reminder("2026-03-06T10:00:00+08:00")
             .command("2026-03-09T10:00:00+08:00", '#close\n问题总结："已解决" \\ done\t✓', OTHER_ENGINEER)
             .closure("2026-03-09T10:05:00+08:00"))
    noted = (Life("CAS-05003-CCCCCC").customer("2026-04-02T08:00:00+08:00")
             .engineer("2026-04-02T09:00:00+08:00", internal=True).engineer("2026-04-03T16:00:00+08:00")
             .reminder("2026-04-07T10:00:00+08:00").customer("2026-04-07T10:01:00+08:00", EntryKind.AUTO_REPLY)
             .customer("2026-04-08T10:00:00+08:00", EntryKind.BOUNCE).customer("2026-04-09T18:30:00+08:00"))
    berlin = noted.case().with_(key="CAS-05004-DDDDDD", timezone="Europe/Berlin")
    nudged = (Life("CAS-05005-EEEEEE").engineer("2026-03-02T10:00:00+08:00").customer("2026-03-03T10:00:00+08:00")
              .bot("2026-03-03T14:00:00+08:00", EntryKind.NUDGE).bot("2026-03-04T10:00:00+08:00", EntryKind.ESCALATION))
    # Done with before the period: nothing of it counts, and the store may leave it out.
    old = (Life("CAS-05006-FFFFFF", opened="2026-01-05T09:00:00+08:00").customer("2026-01-05T09:00:00+08:00")
           .engineer("2026-01-05T10:00:00+08:00").reminder("2026-01-08T10:00:00+08:00")
           .closure("2026-01-12T10:00:00+08:00"))
    # Still open, its reminder appended after a customer's mail dated before it (the timeline is not sorted).
    out_of_order = (Life("CAS-05007-GGGGGG").engineer("2026-04-01T10:00:00+08:00")
                    .customer("2026-04-06T09:00:00+08:00").reminder("2026-04-04T10:00:00+08:00")).case()
    out_of_order = out_of_order.with_(status=CaseStatus.WAITING_ENGINEER)
    # Undecodable mail bytes in a text (kept as a lone surrogate): JSON that msgspec refuses.
    mangled = Life("CAS-05008-HHHHHH").customer("2026-03-10T09:00:00+08:00").case()
    mangled = mangled.with_(timeline=(replace(mangled.timeline[0], text="bad \udcff byte"),))
    return [chased.case(), asked.case(), noted.case(), berlin, nudged.case(), old.case(), out_of_order, mangled]


def _report_engine(name: str, request: pytest.FixtureRequest, tmp_path: Path):
    from mailbot.store import Store
    from mailbot.store.memory import MemoryStore

    if name == "files":
        return Store(tmp_path / "store")
    if name == "memory":
        return MemoryStore()
    from mailbot.store.postgresql import PostgresStore

    store = PostgresStore(request.getfixturevalue("pg_store_dsn"))
    request.addfinalizer(store.close)
    return store


def _opener(name: str, store, request: pytest.FixtureRequest, tmp_path: Path):
    """How a process of the report opens the store: its own connection or files, the memory store's copy."""
    from mailbot.store import Store

    if name == "files":
        return lambda: Store(tmp_path / "store")
    if name == "memory":
        return lambda: store  # each forked process reads its copy
    from mailbot.store.postgresql import PostgresStore

    dsn = request.getfixturevalue("pg_store_dsn")
    return lambda: PostgresStore(dsn, mailbox=None, init=False)


@pytest.mark.parametrize("engine", ["files", "memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def test_the_stores_report_read_gives_the_same_figures_as_whole_cases(engine, request, tmp_path):
    store = _report_engine(engine, request, tmp_path)
    lives = varied_lives()
    for case in lives[:-1]:
        store.put_case(case)
    store.commit()
    if engine == "files":  # a second look, as `mailbot report` has: from the shard files, not the cache
        store = _report_engine(engine, request, tmp_path)
    store.put_case(lives[-1])  # not committed yet: this store's reads see it all the same
    for period in (MARCH_AND_APRIL, Period(date(2026, 1, 1), date(2026, 4, 30), SHANGHAI),
                   Period(date(2026, 4, 1), date(2026, 4, 30), SHANGHAI)):
        expected = json.dumps(report(lives, period, CALENDAR), sort_keys=True)
        read = list(store.report_cases(period.start))
        assert {c.key for c in read} == {c.key for c in lives if c.last_activity >= period.start}
        assert json.dumps(report(read, period, CALENDAR), sort_keys=True) == expected
        assert json.dumps(report(store.all_cases(), period, CALENDAR), sort_keys=True) == expected
    assert "CAS-05006-FFFFFF" not in {c.key for c in store.report_cases(MARCH_AND_APRIL.start)}
    # Read in parts by several processes, each with its own store (as `mailbot report` reads it).
    store.commit()
    for parts in (2, 3):
        for period in (MARCH_AND_APRIL, Period(date(2026, 4, 1), date(2026, 4, 30), SHANGHAI)):
            keys = [{c.key for c in store.report_cases(period.start, part, parts)} for part in range(parts)]
            assert sum(map(len, keys)) == len(set().union(*keys))  # disjoint
            assert set().union(*keys) == {c.key for c in lives if c.last_activity >= period.start}
            expected = json.dumps(report(lives, period, CALENDAR), sort_keys=True)
            data = gather_report(_opener(engine, store, request, tmp_path), period, CALENDAR, parts=parts)
            assert json.dumps(data, sort_keys=True) == expected


def test_the_files_store_reads_shard_files_for_the_report_without_making_cases(tmp_path):
    from mailbot.store import Store
    from mailbot.store.codec import CaseFacts

    root = tmp_path / "store"
    store = Store(root)
    for case in varied_lives():
        store.put_case(case)
    store.commit()
    read = {c.key: c for c in Store(root).report_cases(MARCH_AND_APRIL.start)}
    whole = {c.key: c for c in Store(root).all_cases()}
    assert isinstance(read["CAS-05002-BBBBBB"], CaseFacts)
    # The texts are decoded when asked for, escapes and all; the fields have the models' values.
    command = next(e for e in read["CAS-05002-BBBBBB"].timeline if e.kind == EntryKind.COMMAND)
    assert command.text == '#close\n问题总结："已解决" \\ done\t✓'
    for key, facts in read.items():
        case = whole[key]
        assert (facts.key, facts.opened, facts.last_activity, facts.timezone, tuple(facts.engineers)) == (
            case.key, case.opened, case.last_activity, case.timezone, case.engineers)
        assert [(e.date, e.role, e.kind, e.direction, e.internal, e.from_addr, e.text) for e in facts.timeline] == [
            (e.date, e.role, e.kind, e.direction, e.internal, e.from_addr, e.text) for e in case.timeline]
    assert isinstance(read["CAS-05008-HHHHHH"], Case)  # a shard msgspec refuses is read the ordinary way


def test_a_case_the_store_did_not_write_stops_the_report_as_it_stops_every_read(tmp_path):
    from mailbot.storage import StoreCorrupt
    from mailbot.store import Store

    root = tmp_path / "store"
    store = Store(root)
    for case in varied_lives():
        store.put_case(case)
    store.commit()
    # In a shard with an odd number: the second of two processes of the report reads it.
    shard = next(p for p in sorted((root / "closed").glob("*.json")) if int(p.stem) % 2 and b'"customer"' in p.read_bytes())
    shard.write_bytes(shard.read_bytes().replace(b'"role":"customer"', b'"role":"wizard"'))
    with pytest.raises(StoreCorrupt, match="wizard"):
        list(Store(root).report_cases(MARCH_AND_APRIL.start))
    with pytest.raises(StoreCorrupt, match="wizard"):  # found by the other process, raised in this one
        gather_report(lambda: Store(root), MARCH_AND_APRIL, CALENDAR, parts=2)
    assert shard.exists() and list(root.glob("closed/*.corrupt-*"))  # kept as found, a copy beside it


# --- the command ------------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path):
    from mailbot.store import Store

    s = from_dict({"bot": {"address": BOT, "state_dir": "state", "language": "en"},
                   "engineers": {"domains": ["support.example"]}}, tmp_path)
    store = Store(s.bot.state_dir / "store")
    life = (Life().customer("2026-03-02T09:30:00+08:00").engineer("2026-03-02T10:00:00+08:00")
            .reminder("2026-03-05T10:00:00+08:00").customer("2026-03-06T09:45:00+08:00")
            .engineer("2026-03-06T11:00:00+08:00").reminder("2026-03-11T10:00:00+08:00")
            .reminder("2026-03-16T10:00:00+08:00").closure("2026-03-18T10:00:00+08:00"))
    store.put_case(life.case())
    store.commit()
    return s


def parser() -> argparse.ArgumentParser:
    """As cli/main.py wires it: --json among the common options, given before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    top = argparse.ArgumentParser()
    top.add_argument("--json", action="store_true", default=False)
    add_report_parser(top.add_subparsers(), [common])
    return top


def run(settings, *argv: str) -> int:
    return report_command(parser().parse_args(["report", *argv]), settings, at("2026-03-31T12:00:00+08:00"))


def test_report_command_prints_the_interface_json_over_the_store(settings, capsys):
    assert run(settings, "--since", "2026-03-01", "--until", "2026-03-31", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["period"]["since"] == "2026-03-01" and data["period"]["until"] == "2026-03-31"
    assert (data["reminders"]["sent"], data["reminders"]["answered"]) == (3, 1)
    assert (data["cases"]["closed"], data["cases"]["closed_after_silence"]) == (1, 1)


def test_report_command_prints_a_table(settings, capsys):
    assert run(settings) == 0
    out = capsys.readouterr().out
    assert "3 sent, 1 answered (33%)" in out and "liqi@support.example" in out


@pytest.mark.parametrize("argv", [["--since", "2026-13-01"], ["--until", "yesterday"], ["--since", "20260301"],
                                  ["--since", "2026-03-10", "--until", "2026-03-01"]])
def test_a_bad_date_is_one_line_and_exit_2(settings, capsys, argv):
    assert run(settings, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mailbot: ")


def test_report_command_writes_the_html_page(settings, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert run(settings, "--since", "2026-03-01", "--html", str(page)) == 0
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and "Does chasing work?" in html and "<script" not in html
    # Self-contained: nothing is fetched (no src=, no stylesheet link, no http(s) URL but the SVG namespace).
    assert not re.search(r"\b(?:src|href)\s*=", html)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}


# --- the page, in both languages ---------------------------------------------------------------------


def sample() -> dict:
    lives = [
        Life("CAS-00010-AAAAAA").engineer("2026-03-02T10:00:00+08:00").reminder("2026-03-05T10:00:00+08:00")
        .customer("2026-03-06T09:45:00+08:00").engineer("2026-03-06T14:00:00+08:00", OTHER_ENGINEER),
        Life("CAS-00011-BBBBBB").engineer("2026-03-02T10:00:00+08:00").reminder("2026-03-05T15:00:00+08:00")
        .reminder("2026-03-10T11:00:00+08:00").closure("2026-03-12T10:00:00+08:00"),
        Life("CAS-00012-CCCCCC").engineer("2026-03-03T10:00:00+08:00").reminder("2026-03-06T16:00:00+08:00")
        .customer("2026-03-10T16:00:00+08:00").engineer("2026-03-11T10:00:00+08:00"),
    ]
    return figures(*(life.case() for life in lives), period=Period(date(2026, 3, 1), date(2026, 3, 31), SHANGHAI))


@pytest.mark.parametrize("language, words", [("en", "Does chasing work?"), ("zh-CN", "催促有用吗")])
def test_the_page_reads_in_both_languages_and_escapes_what_people_wrote(language, words):
    data = sample()
    data["by_engineer"][0]["address"] = "<script>alert(1)</script>@support.example"
    subject, text, html = render(environment(TEMPLATES), language, data, "casebot", "2026-04-01 09:00")
    assert words in html and "<script>" not in html and "&lt;script&gt;" in html
    assert "\n" not in subject and "2026-03-01" in subject
    assert "33%" in text or "50%" in text  # the same figures in the text part


def test_an_empty_period_renders_without_charts_of_nothing():
    empty = figures(period=Period(date(2026, 3, 1), date(2026, 3, 7), SHANGHAI))
    for language in ("en", "zh-CN"):
        _, text, html = render(environment(TEMPLATES), language, empty, "casebot", "2026-03-08 09:00")
        assert "–" in html and ("No reminder" in text or "没有发送提醒" in text)


# --- the weekly mail ----------------------------------------------------------------------------------


def test_the_weekly_report_is_due_on_the_first_business_day_of_the_week_once():
    monday_open = at("2026-03-09T09:00:00+08:00")
    assert weekly_slot(at("2026-03-12T15:00:00+08:00"), CALENDAR) == monday_open
    assert not weekly_report_due(None, at("2026-03-09T08:59:00+08:00"), CALENDAR)
    assert weekly_report_due(None, monday_open, CALENDAR)
    assert not weekly_report_due(monday_open, at("2026-03-09T10:00:00+08:00"), CALENDAR)  # sent already
    # Down on Monday: it goes out on Tuesday morning, in working hours; not on Saturday.
    assert weekly_report_due(at("2026-03-02T09:00:00+08:00"), at("2026-03-10T09:10:00+08:00"), CALENDAR)
    assert not weekly_report_due(at("2026-03-02T09:00:00+08:00"), at("2026-03-14T10:00:00+08:00"), CALENDAR)


def test_after_the_qingming_monday_the_weekly_report_waits_for_tuesday():
    # Monday 2026-04-06 is a holiday: the week's first business day is Tuesday the 7th.
    assert weekly_slot(at("2026-04-06T10:00:00+08:00"), CALENDAR) == at("2026-04-07T09:00:00+08:00")
    assert not weekly_report_due(at("2026-03-30T09:00:00+08:00"), at("2026-04-06T10:00:00+08:00"), CALENDAR)
    assert weekly_report_due(at("2026-03-30T09:00:00+08:00"), at("2026-04-07T09:00:00+08:00"), CALENDAR)


def test_the_sweep_mails_last_weeks_report_to_the_leads_once(tmp_path):
    from trustlife import Bot

    from mailbot.report.weekly import send_weekly_report

    s = from_dict({"bot": {"address": BOT, "state_dir": "state", "language": "zh-CN", "name": "casebot"},
                   "engineers": {"domains": ["support.example"]},
                   "report": {"weekly_to": ["lead@support.example"]}}, tmp_path)
    bot = Bot(s)
    life = (Life().engineer("2026-03-02T10:00:00+08:00").reminder("2026-03-05T10:00:00+08:00")
            .customer("2026-03-06T09:45:00+08:00"))
    bot.store.put_case(life.case())
    bot.store.commit()
    assert not send_weekly_report(bot.service, at("2026-03-09T08:00:00+08:00"))  # before opening
    assert send_weekly_report(bot.service, at("2026-03-09T09:05:00+08:00"))
    assert not send_weekly_report(bot.service, at("2026-03-09T09:06:00+08:00"))
    bot.service.flush_outbox(at("2026-03-09T09:06:00+08:00"))
    sent = bot.sent()
    assert len(sent) == 1
    msg = sent[0]
    assert msg["To"] == "lead@support.example" and "跟进报告 2026-03-02 至 2026-03-08" in msg["Subject"]
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert "<svg" in html and "1 / 1" in html and "已发提醒" in text


def test_the_weekly_report_is_not_sent_without_weekly_to(tmp_path):
    from trustlife import Bot

    from mailbot.report.weekly import send_weekly_report

    s = from_dict({"bot": {"address": BOT, "state_dir": "state"}, "engineers": {"domains": ["support.example"]}},
                  tmp_path)
    assert s.report.weekly_to == ()
    assert not send_weekly_report(Bot(s).service, at("2026-03-09T09:05:00+08:00"))


# --- headless Chromium: the page really draws ------------------------------------------------------


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("MAILBOT_REQUIRE_CHROMIUM") == "1":
        pytest.fail("chromium is required (MAILBOT_REQUIRE_CHROMIUM=1): sh scripts/ensure-chromium.sh")
    return found


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of raw pixel bytes) of an 8-bit RGB/RGBA PNG, with the stdlib (RFC 2083)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, previous = zlib.decompress(b"".join(chunks)), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo the row filter (RFC 2083 §6)
            a = line[i - bpp] if i >= bpp else 0
            b, c = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, [bytes(r[i:i + 3]) for r in rows for i in range(0, stride, bpp)]


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_headless_chromium_draws_the_page(tmp_path, language):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (sh scripts/ensure-chromium.sh)")
    _, _, html = render(environment(TEMPLATES), language, sample(), "casebot", "2026-04-01 09:00")
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(html, encoding="utf-8")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    colours = set(pixels)
    # A blank page is one colour; text, three bar colours and grey lines make hundreds (anti-aliasing).
    assert len(colours) > 50
    assert {bytes((0x2F, 0x6F, 0xB0)), bytes((0x3A, 0x8A, 0x5C))} <= colours  # the bars of two charts
    white = pixels.count(b"\xff\xff\xff")
    assert white < len(pixels) * 0.97  # something covers more than a sliver of the page
    if os.environ.get("MAILBOT_KEEP_SCREENSHOT"):
        shutil.copy(shot, Path(os.environ["MAILBOT_KEEP_SCREENSHOT"]) / f"report-{language}.png")


def test_report_takes_json_before_the_command_too(settings, capsys):
    args = parser().parse_args(["--json", "report", "--until", "2026-03-31"])
    assert report_command(args, settings, datetime(2026, 4, 1, tzinfo=UTC)) == 0
    assert json.loads(capsys.readouterr().out)["period"]["until"] == "2026-03-31"


def test_run_once_on_monday_morning_sends_the_weekly_report_with_the_sweep(tmp_path):
    from trustlife import Bot

    s = from_dict({"bot": {"address": BOT, "state_dir": "state", "language": "en"},
                   "engineers": {"domains": ["support.example"]},
                   "report": {"weekly_to": ["lead@support.example", "boss@support.example"]}}, tmp_path)
    bot = Bot(s)
    bot.tick("2026-03-09T09:30:00+08:00")
    bot.tick("2026-03-09T09:31:00+08:00")
    bot.tick("2026-03-16T08:59:00+08:00")  # next Monday, before opening: not yet
    reports = [m for m in bot.sent() if "Follow-up report" in str(m["Subject"])]
    assert len(reports) == 1 and str(reports[0]["To"]) == "lead@support.example, boss@support.example"
    bot.tick("2026-03-16T09:00:00+08:00")
    assert len([m for m in bot.sent() if "Follow-up report" in str(m["Subject"])]) == 2


@pytest.mark.parametrize("name", ["report.figures", "report.periods", "report.html", "report.weekly"])
def test_the_report_decides_without_io(name):
    from test_purity import probe  # the same probe as the other pure modules

    loaded = set(probe(f"mailbot.{name}")["loaded"])  # type: ignore[arg-type]
    assert loaded <= {"socket"}, f"mailbot.{name} pulls in {sorted(loaded - {'socket'})}"
