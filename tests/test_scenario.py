"""The worked case of ../shared/scenario, told through a Maildir and the outbox, as the bot lives it."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email.policy import default
from pathlib import Path

import pytest

from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.models import CaseStatus, EntryKind, Role
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.outboxdir import OutboxDirTransport
from mailbot.wiring import make_calendar

KEY = "CAS-04027-B7D2Z5"
SECRET = "Xk93-fake-Pw77"


def at(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


class Bot:
    """The bot on its embedded default, in a temp folder: Maildir in, outbox folder out."""

    def __init__(self, settings, store_root: Path | None) -> None:
        self.settings = settings
        self.store = Store(store_root)
        self.outbox = settings.bot.state_dir / "outbox"
        self.service = Service(settings, self.store, MaildirMailbox(settings.mailbox.path),
                               OutboxDirTransport(self.outbox), make_calendar(settings))

    def receive(self, path: Path) -> None:
        deliver(self.settings.mailbox.path, path.read_bytes())

    def run(self, when: str | datetime):
        return self.service.run_once(at(when) if isinstance(when, str) else when)

    def case(self):
        case = self.store.get_case(KEY)
        assert case is not None
        return case

    def sent(self) -> list[email.message.EmailMessage]:
        files = sorted(self.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if self.outbox.exists() else []
        return [email.message_from_bytes(p.read_bytes(), policy=default) for p in files]


@pytest.fixture
def bot(make_settings, tmp_path: Path) -> Bot:
    return Bot(make_settings(), tmp_path / "state" / "store")


def mail(scenario_dir: Path, number: str) -> Path:
    return next(scenario_dir.glob(f"{number}-*.eml"))


def test_initial_response_opens_the_case_and_plans_the_first_reminder(bot: Bot, scenario_dir: Path) -> None:
    bot.receive(mail(scenario_dir, "01"))
    report = bot.run("2021-04-13T02:00:00+08:00")

    assert report.opened == 1
    case = bot.case()
    assert case.title == "某单位终端频繁蓝屏"
    assert case.tracking_tokens == ("CMIT:0001247",)
    assert case.language == "zh-CN"
    assert case.engineers == ("liqi@support.example",)
    assert case.customers == ("yang@customer.example",)
    assert case.status == CaseStatus.WAITING_CUSTOMER
    # Tue 13 Apr 01:52 Shanghai + 3 business days = Fri 16 Apr, moved to opening time.
    assert case.next_action is not None
    assert (case.next_action.kind, case.next_action.due) == ("reminder", at("2021-04-16T09:00:00+08:00"))
    assert bot.sent() == []


def test_the_out_of_office_is_kept_but_changes_nothing(bot: Bot, scenario_dir: Path) -> None:
    bot.receive(mail(scenario_dir, "01"))
    bot.run("2021-04-13T02:00:00+08:00")
    bot.receive(mail(scenario_dir, "02"))
    bot.run("2021-04-13T02:05:00+08:00")

    case = bot.case()
    kinds = [(e.role, e.kind) for e in case.timeline]
    assert kinds == [(Role.ENGINEER, EntryKind.MAIL), (Role.CUSTOMER, EntryKind.AUTO_REPLY)]
    assert case.status == CaseStatus.WAITING_CUSTOMER
    # Back on 14 April, before the reminder: the reminder stays where it was.
    assert case.next_action is not None and case.next_action.due == at("2021-04-16T09:00:00+08:00")
    assert bot.sent() == []  # RFC 3834: an auto-reply is never answered


def test_the_whole_case_reminder_reply_and_close_command(bot: Bot, scenario_dir: Path) -> None:
    for number, when in (("01", "2021-04-13T02:00:00+08:00"), ("02", "2021-04-13T02:05:00+08:00")):
        bot.receive(mail(scenario_dir, number))
        bot.run(when)
    bot.run("2021-04-16T09:00:00+08:00")
    [first] = bot.sent()
    assert first["To"] == "yang@customer.example"
    assert first["Cc"] == "liqi@support.example"
    assert first["Subject"] == f"回复: [案例号: {KEY} ] % 某单位终端频繁蓝屏 % 初次响应 CMIT:0001247"
    assert first["In-Reply-To"] == "<initial-04027@support.example>"
    assert "<initial-04027@support.example>" in first["References"]
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["X-Auto-Response-Suppress"] == "OOF, NRN, AutoReply, RN"
    assert first["Message-ID"].endswith("@support.example>")
    assert bot.case().reminders_sent == 1

    bot.receive(mail(scenario_dir, "03"))
    bot.run("2021-04-19T10:15:00+08:00")
    case = bot.case()
    assert case.status == CaseStatus.WAITING_ENGINEER
    assert case.next_action is None
    reply = case.timeline[-1]
    assert reply.role == Role.CUSTOMER and reply.kind == EntryKind.MAIL
    assert reply.text.startswith("Li 工程师您好")
    assert "发件人" not in reply.text and "初次响应" not in reply.text  # quoted history cut off

    bot.receive(mail(scenario_dir, "04"))
    bot.run("2021-04-20T19:00:00+08:00")
    case = bot.case()
    assert case.status == CaseStatus.CLOSED
    later = bot.sent()[1:]
    [closure] = [m for m in later if m["To"] == "yang@customer.example"]
    [receipt] = [m for m in later if m["To"] == "liqi@support.example"]
    assert closure["Cc"] == "liqi@support.example"
    body = closure.get_body(("plain",)).get_content()
    assert KEY in body
    assert "用户反馈操作系统频繁蓝屏" in body and "inode" in body and "暂做归档处理" in body
    assert "给机器人的指令" not in body  # the command mail itself is never forwarded
    assert receipt["To"] == "liqi@support.example"
    assert receipt["Auto-Submitted"] == "auto-replied"
    assert [e.kind for e in case.timeline][-3:] == [EntryKind.COMMAND, EntryKind.CLOSURE, EntryKind.RECEIPT]


def test_a_silent_customer_gets_two_reminders_then_the_closure(bot: Bot, scenario_dir: Path) -> None:
    bot.receive(mail(scenario_dir, "01"))
    bot.receive(mail(scenario_dir, "02"))
    sent_at: list[tuple[str, str]] = []
    now = at("2021-04-13T02:00:00+08:00")
    while now < at("2021-04-27T00:00:00+08:00"):  # the bot wakes every hour for two weeks
        report = bot.run(now)
        if report.sent:
            sent_at.append((now.astimezone(bot.settings.bot.zone).strftime("%a %d %b %H:%M"), bot.sent()[-1]["Subject"]))
        now += timedelta(hours=1)
    assert [when for when, _ in sent_at] == ["Fri 16 Apr 09:00", "Wed 21 Apr 09:00", "Fri 23 Apr 09:00"]
    case = bot.case()
    assert case.status == CaseStatus.CLOSED
    closure = bot.sent()[-1].get_body(("plain",)).get_content()
    assert "没有收到您" in closure  # the neutral default: closed because we did not hear back


def test_after_downtime_everything_due_goes_out_once(bot: Bot, scenario_dir: Path) -> None:
    bot.receive(mail(scenario_dir, "01"))
    bot.run("2021-04-13T02:00:00+08:00")
    bot.run("2021-04-22T10:00:00+08:00")  # down for nine days: one reminder, not one per missed tick
    assert len(bot.sent()) == 1
    bot.run("2021-04-22T10:05:00+08:00")
    assert len(bot.sent()) == 1


def test_a_reply_that_arrived_while_the_bot_was_down_cancels_the_reminder(bot: Bot, scenario_dir: Path) -> None:
    bot.receive(mail(scenario_dir, "01"))
    bot.run("2021-04-13T02:00:00+08:00")
    bot.receive(mail(scenario_dir, "03"))  # arrives 19 Apr; the reminder fell due on 16 Apr
    bot.run("2021-04-19T12:00:00+08:00")
    assert bot.sent() == []
    assert bot.case().status == CaseStatus.WAITING_ENGINEER


def test_the_same_mail_twice_is_recorded_once(bot: Bot, scenario_dir: Path) -> None:
    bot.receive(mail(scenario_dir, "01"))
    bot.receive(mail(scenario_dir, "01"))  # the To copy and the CC copy
    report = bot.run("2021-04-13T02:00:00+08:00")
    assert report.duplicates == 1
    assert len(bot.case().timeline) == 1
    assert list((bot.settings.mailbox.path / "new").iterdir()) == []  # both handled, none lost
    assert len(list((bot.settings.mailbox.path / "cur").iterdir())) == 2


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory-store", "disk-store"])
def test_credentials_never_reach_the_store_or_the_outbox(make_settings, tmp_path: Path, scenario_dir: Path,
                                                         on_disk: bool) -> None:
    bot = Bot(make_settings(), tmp_path / "state" / "store" if on_disk else None)
    bot.receive(mail(scenario_dir, "01"))
    bot.run("2021-04-13T02:00:00+08:00")
    bot.run("2021-04-16T09:00:00+08:00")
    assert "密码：******" in bot.case().timeline[0].text
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in bot.sent()[0].get_body(("plain",)).get_content()
