"""Who is a party to a case, and what may reach a customer: the customers are the people an engineer wrote
to (or `#add`ed); anyone else who writes in is recorded, and the engineers are told once."""

from __future__ import annotations

import email
import json

import pytest
import trustlife
from trustlife import BOT, CUSTOMER, ENGINEER, KEY, SUBJECT, mail

from mailbot.cases import reaches_customer
from mailbot.cli.views import case_json
from mailbot.config import ConfigError
from mailbot.decide.commands import find_commands
from mailbot.explain import explain_mail
from mailbot.models import CaseStatus, EntryKind, Role
from mailbot.parse import parse
from mailbot.store import case_from_doc, case_to_doc
from mailbot.wiring import make_calendar

COLLEAGUE = "wang@support.example"
STRANGER = "mallory@elsewhere.example"
REQUEST = "请上传 C:\\Windows\\Minidump 下的 dmp 文件。"


class Bot(trustlife.Bot):
    """The trust tests' bot, and an engineer who steers it by mail."""

    def command(self, text: str, when: str) -> str:
        """An engineer's command to the bot; returns the text of the receipt it got."""
        before = len(self.sent(ENGINEER))
        self.receive(mail(ENGINEER, BOT, text, when, subject="RE: " + SUBJECT), when)
        receipts = self.sent(ENGINEER)[before:]
        return "\n".join(r.get_body(("plain",)).get_content() for r in receipts)


def body(m: email.message.EmailMessage) -> str:
    return m.get_body(("plain",)).get_content()


def everyone(m: email.message.EmailMessage) -> set[str]:
    return {a.strip() for field in ("To", "Cc") for a in str(m[field] or "").split(",") if a.strip()}


@pytest.fixture
def bot(make_settings) -> Bot:
    """Li Qi writes to Yang (Cc the bot) on Tue 13 Apr 2021: Yang is the case's one customer."""
    b = Bot(make_settings())
    b.receive(mail(ENGINEER, CUSTOMER, REQUEST, "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    assert b.case().customers == (CUSTOMER,)
    assert b.case().status == CaseStatus.WAITING_CUSTOMER
    return b


def test_a_reply_with_202_cc_adds_nobody_and_the_reminders_go_to_the_customer_alone(bot: Bot) -> None:
    crowd = ", ".join(f"user{n}@crowd.example" for n in range(202))
    # The customer's own reply, Cc'ing a whole address book: Yang is heard, the crowd is not taken in.
    bot.receive(mail(CUSTOMER, ENGINEER, "日志见附件。", "2021-04-13T10:00+08:00", subject="回复: " + SUBJECT,
                     cc=crowd), "2021-04-13T10:05+08:00")
    assert bot.case().customers == (CUSTOMER,)
    assert bot.case().status == CaseStatus.WAITING_ENGINEER
    # Li Qi answers Yang; three business days later the reminder goes to Yang (and Li Qi), nobody else.
    bot.receive(mail(ENGINEER, CUSTOMER, "请再试一次。", "2021-04-14T10:00+08:00", cc=BOT), "2021-04-14T10:05+08:00")
    # Someone from the crowd writes in, again with everyone on Cc: recorded, nobody added.
    bot.receive(mail("user7@crowd.example", CUSTOMER, "我也有这个问题", "2021-04-14T11:00+08:00",
                     subject="回复: " + SUBJECT, cc=crowd), "2021-04-14T11:05+08:00")
    case = bot.case()
    assert case.customers == (CUSTOMER,)
    assert case.outsiders == ("user7@crowd.example",)
    assert case.status == CaseStatus.WAITING_CUSTOMER  # an outsider's mail is not the customer's answer
    bot.tick("2021-04-19T10:00+08:00")
    [reminder] = [m for m in bot.sent() if CUSTOMER in str(m["To"])]
    assert everyone(reminder) == {CUSTOMER, ENGINEER}
    assert not any("crowd.example" in str(m["To"]) + str(m["Cc"] or "") for m in bot.sent())


def test_a_guessed_crm_token_is_recorded_but_is_no_reply_and_the_engineers_hear_once(bot: Bot) -> None:
    due = bot.case().next_action
    # No case key, no thread: only the sequential CRM token, one that happens to be this case's.
    for n, when in enumerate(("2021-04-14T09:00+08:00", "2021-04-14T09:30+08:00")):
        bot.receive(mail(STRANGER, BOT, f"guess {n}", when, subject="Re: CMIT:0001247 CMIT:0009999"), when)
    case = bot.case()
    mine = [e for e in case.timeline if e.from_addr == STRANGER]
    assert [(e.role, e.kind, e.matched_by) for e in mine] == [(Role.OTHER, EntryKind.MAIL, "tracking_token")] * 2
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.next_action == due  # no reply, nothing cancelled
    assert case.customers == (CUSTOMER,) and case.outsiders == (STRANGER,)
    assert case.tracking_tokens == ("CMIT:0001247",)  # the stranger's other token is not the case's
    [notice] = bot.sent(ENGINEER)  # one notice for two mails
    assert STRANGER not in str(notice["To"]) and notice["Subject"] == f"[mailbot] {KEY}：非案例客户来信"
    text = body(notice)
    assert f"{STRANGER} 给本案例来信" in text and f"#添加 {STRANGER}" in text
    assert f"#add {STRANGER}, to include them" in text  # the English beside the Chinese
    assert bot.sent(STRANGER) == []
    # The reminder is for the customer only.
    bot.tick("2021-04-16T09:00+08:00")
    assert [everyone(m) for m in bot.sent() if "Auto-Submitted" in m and m["To"] != ENGINEER] == [
        {CUSTOMER, ENGINEER}]


def test_only_a_partys_reply_reopens_a_closed_case(bot: Bot) -> None:
    bot.command("#close\nSummary: 厂商已修复", "2021-04-14T10:00+08:00")
    assert bot.case().status == CaseStatus.CLOSED
    bot.receive(mail(STRANGER, BOT, "reopen please", "2021-04-15T10:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-15T10:00+08:00")
    assert bot.case().status == CaseStatus.CLOSED
    bot.receive(mail(CUSTOMER, ENGINEER, "又蓝屏了", "2021-04-16T10:00+08:00", subject="回复: " + SUBJECT),
                "2021-04-16T10:00+08:00")
    assert bot.case().status == CaseStatus.WAITING_ENGINEER


def test_an_outsider_cannot_squat_an_unused_key(make_settings) -> None:
    b = Bot(make_settings())
    squat = f"[案例号: {KEY} ] % 免费领奖 %"
    raw = mail(STRANGER, BOT, "hello", "2021-04-12T09:00+08:00", subject=squat)
    assert "only an engineer's mail opens a case" in explain_mail(parse(raw), b.service)["lands"]
    b.receive(raw, "2021-04-12T09:00+08:00")
    assert b.store.get_case(KEY) is None and b.sent() == []
    [record] = b.store.unmatched()
    assert record["from"] == STRANGER and "only an engineer's mail opens a case" in record["reason"]
    # The engineer's own first mail opens it, with the engineer's title.
    b.receive(mail(ENGINEER, CUSTOMER, REQUEST, "2021-04-13T01:52+08:00", cc=BOT), "2021-04-13T02:00+08:00")
    assert b.case().title == "某单位终端频繁蓝屏" and b.case().customers == (CUSTOMER,)


def test_opened_by_anyone_lets_a_customer_open_a_case_as_its_one_party(make_settings) -> None:
    b = Bot(make_settings(cases={"opened_by": "anyone"}))
    b.receive(mail(CUSTOMER, BOT, "电脑蓝屏", "2021-04-12T09:00+08:00", subject=f"[案例号: {KEY} ] % 蓝屏 %",
                   cc="boss@customer.example"), "2021-04-12T09:00+08:00")
    case = b.case()
    assert case.title == "蓝屏" and case.customers == (CUSTOMER,)  # the opener, not their Cc
    assert case.status == CaseStatus.WAITING_ENGINEER


def test_an_internal_note_never_reaches_the_customer(bot: Bot) -> None:
    # Li Qi writes to a colleague only (Cc the bot): an internal note, on the timeline, for engineers only.
    note = "内部：客户环境里 inode 驱动版本太旧，别告诉客户是我们的补丁引起的。"
    bot.receive(mail(ENGINEER, COLLEAGUE, note, "2021-04-13T03:00+08:00", subject="RE: " + SUBJECT, cc=BOT),
                "2021-04-13T03:05+08:00")
    # And a stranger's mail, also never shown to the customer.
    bot.receive(mail(STRANGER, BOT, "陌生人的话", "2021-04-13T04:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-13T04:05+08:00")
    case = bot.case()
    [internal] = [e for e in case.timeline if e.internal]
    assert internal.text.startswith("内部") and not reaches_customer(internal)
    assert case.status == CaseStatus.WAITING_CUSTOMER and case.customers == (CUSTOMER,)
    shown = case_json(case, make_calendar(bot.service.settings).zone)
    assert [(m["from"], m["internal"], m["customer_visible"]) for m in shown["messages"] if m["direction"] == "in"] == [
        (ENGINEER, False, True), (ENGINEER, True, False), (STRANGER, False, False)]
    assert shown["outsiders"] == [STRANGER]
    json.dumps(shown)  # the shape stays JSON
    # The reminder quotes the request Yang received, not the note; the closure lists neither note nor stranger.
    bot.tick("2021-04-16T09:00+08:00")
    bot.tick("2021-04-21T09:00+08:00")
    bot.tick("2021-04-23T09:00+08:00")
    to_customer = bot.sent(CUSTOMER)
    assert [m["Subject"].startswith("回复") for m in to_customer] == [True, True, True]
    assert bot.case().status == CaseStatus.CLOSED
    for m in to_customer:
        for part in ("plain", "html"):
            text = m.get_body((part,)).get_content()
            assert "inode" not in text and "陌生人" not in text and STRANGER not in text
    assert "Minidump" in body(to_customer[0])  # the request the customer did receive is quoted
    assert "Minidump" in body(to_customer[-1])  # and listed in the closure's timeline


@pytest.mark.parametrize(("add", "remove"), [("#add", "#remove"), ("#添加", "#移除"), ("#加入", "#删除")])
def test_an_engineer_includes_and_drops_people_by_command(bot: Bot, add: str, remove: str) -> None:
    boss = "boss@customer.example"
    bot.receive(mail(boss, ENGINEER, "进展如何？", "2021-04-13T09:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-13T09:05+08:00")
    assert bot.case().outsiders == (boss,) and bot.case().customers == (CUSTOMER,)
    receipt = bot.command(f"{add} <{boss.upper()}>", "2021-04-13T10:00+08:00")
    assert f"已将 {boss} 加入本案例的客户" in receipt  # the case speaks Chinese
    case = bot.case()
    assert case.customers == (CUSTOMER, boss) and case.outsiders == ()
    bot.command("#remind now", "2021-04-13T11:00+08:00")
    [reminder] = [m for m in bot.sent() if m["To"] and CUSTOMER in str(m["To"])]
    assert everyone(reminder) == {CUSTOMER, boss, ENGINEER}
    # The boss's next mail is a party's reply now.
    bot.receive(mail(boss, ENGINEER, "已处理", "2021-04-13T12:00+08:00", subject="RE: " + SUBJECT),
                "2021-04-13T12:05+08:00")
    assert bot.case().status == CaseStatus.WAITING_ENGINEER
    bot.command(f"{remove} {boss}", "2021-04-13T13:00+08:00")
    assert bot.case().customers == (CUSTOMER,)
    receipt = bot.command(f"{remove} {boss}", "2021-04-13T14:00+08:00")
    assert "not a customer of the case" in receipt or "不是本案例的客户" in receipt


def test_add_refuses_an_engineer_the_bot_and_a_non_address(bot: Bot) -> None:
    for text in (f"#add {COLLEAGUE}", f"#add {BOT}", "#add nobody"):
        receipt = bot.command(text, "2021-04-13T10:00+08:00")
        assert "未执行" in receipt, text
    assert bot.case().customers == (CUSTOMER,)


def test_the_recipient_cap_keeps_the_latest_to_and_refuses_add_beyond_it(make_settings) -> None:
    b = Bot(make_settings(smtp={"max_recipients": 3}))  # one engineer on Cc: two customers per mail
    a, c, d = "a@customer.example", "c@customer.example", "d@customer.example"
    b.receive(mail(ENGINEER, f"{CUSTOMER}, {a}", REQUEST, "2021-04-13T01:52+08:00", cc=f"{c}, {d}, {BOT}"),
              "2021-04-13T02:00+08:00")
    case = b.case()
    assert case.customers == (CUSTOMER, a, c, d)  # all four were written to: all are parties
    assert any(n.endswith(f"leave out {c}, {d}") for n in case.notes)
    b.tick("2021-04-16T09:00+08:00")
    [reminder] = [m for m in b.sent() if m["Cc"]]
    assert everyone(reminder) == {CUSTOMER, a, ENGINEER}
    # Li Qi's next mail is To d: d moves to the front, the cut follows the engineers' most recent To.
    b.receive(mail(ENGINEER, d, "d，请确认。", "2021-04-16T10:00+08:00", cc=BOT), "2021-04-16T10:05+08:00")
    assert b.case().customers[:2] == (d, CUSTOMER)
    receipt = b.command("#remind now", "2021-04-16T11:00+08:00")
    assert f"2 位客户没有收到：{a}, {c}" in receipt  # the receipt says who the cap left out
    latest = [m for m in b.sent() if m["Cc"]][-1]
    assert everyone(latest) == {d, CUSTOMER, ENGINEER}
    # #add when the mail is already full is refused, with the key that sets the cap.
    b.command(f"#remove {a}", "2021-04-16T12:00+08:00")
    b.command(f"#remove {c}", "2021-04-16T12:01+08:00")
    receipt = b.command("#add e@customer.example", "2021-04-16T12:02+08:00")
    assert "max_recipients" in receipt and "e@customer.example" not in b.case().customers
    closing = b.command("#close", "2021-04-16T13:00+08:00")
    assert "已关闭" in closing
    assert len(everyone(b.sent(d)[-1])) <= 3


def test_an_old_document_loads_with_its_customers_as_parties(bot: Bot) -> None:
    doc = case_to_doc(bot.case())
    del doc["outsiders"]
    for e in doc["timeline"]:
        del e["internal"]
    old = case_from_doc(json.loads(json.dumps(doc)))
    assert old.customers == (CUSTOMER,) and old.outsiders == ()
    assert [reaches_customer(e) for e in old.timeline] == [True]
    assert case_from_doc(case_to_doc(old)) == old


@pytest.mark.parametrize(("line", "args", "error"), [
    ("#add a@x.example", ("a@x.example",), ""),
    ("#添加 <A@X.example>, b@y.example", ("a@x.example", "b@y.example"), ""),
    ("#移除 a@x.example；a@x.example", ("a@x.example",), ""),
    ("#add nobody", None, "expected '#add name@example.com' (not an address: 'nobody')"),
    ("#remove", None, "expected '#remove name@example.com' (no address)"),
])
def test_add_and_remove_read_addresses_as_people_paste_them(line: str, args, error: str) -> None:
    [command] = find_commands(line)
    assert command.error == error
    if args is not None:
        assert command.args == args


@pytest.mark.parametrize(("section", "values", "key"), [
    ("cases", {"opened_by": "everybody"}, "[cases] opened_by"),
    ("smtp", {"max_recipients": 0}, "[smtp] max_recipients"),
])
def test_a_bad_party_setting_is_one_line_naming_the_key(make_settings, section: str, values, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        make_settings(**{section: values})
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_in_an_english_case_the_notice_and_receipts_speak_english(make_settings) -> None:
    b = Bot(make_settings())
    subject = f"[Case: {KEY}] % Terminals crash % CMIT:0001247"
    b.receive(mail(ENGINEER, CUSTOMER, "Please upload the crash dumps.", "2021-04-13T01:52+08:00", subject=subject,
                   cc=BOT), "2021-04-13T02:00+08:00")
    b.receive(mail(STRANGER, ENGINEER, "Same here, any news?", "2021-04-13T09:00+08:00", subject="Re: " + subject),
              "2021-04-13T09:05+08:00")
    [notice] = b.sent(ENGINEER)
    assert notice["Subject"] == f"[mailbot] {KEY}: someone who is not a customer wrote in"
    assert f"{STRANGER} wrote into the case; write to them, or #add {STRANGER}, to include them" in body(notice)
    b.receive(mail(ENGINEER, BOT, f"#add {STRANGER}", "2021-04-13T10:00+08:00", subject="Re: " + subject),
              "2021-04-13T10:00+08:00")
    assert f"{STRANGER} added to the customers" in body(b.sent(ENGINEER)[-1])
    assert b.case().customers == (CUSTOMER, STRANGER)
