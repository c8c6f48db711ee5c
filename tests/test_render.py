"""Templates in both languages: proper replies, escaped HTML, one-line subjects, honest wording."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot.decide.policy import Receipt, SendMail
from mailbot.models import Case, CaseStatus, ClosureFields, EntryKind, Role, TimelineEntry
from mailbot.render.templates import Identity, TemplateProblem, environment, outbound

ROOT = Path(__file__).resolve().parents[1]
ME = Identity("casebot@support.example", "casebot", ZoneInfo("Asia/Shanghai"))
NOW = datetime(2021, 4, 16, 1, 0, tzinfo=UTC)
OPENED = datetime(2021, 4, 12, 17, 52, 59, tzinfo=UTC)


def case(language: str, **changes) -> Case:
    first = TimelineEntry("<initial@support.example>", OPENED, "liqi@support.example", Role.ENGINEER, EntryKind.MAIL,
                          "in", "请上传日志 <script>alert(1)</script>", "[案例号: CAS-04027-B7D2Z5 ] % 蓝屏 %")
    base = Case(
        key="CAS-04027-B7D2Z5", title="某单位终端频繁蓝屏 <b>", subject="[案例号: CAS-04027-B7D2Z5 ] % 蓝屏 % 初次响应 CMIT:0001247",
        status=CaseStatus.WAITING_CUSTOMER, language=language, opened=OPENED, last_activity=OPENED,
        customers=("yang@customer.example",), engineers=("liqi@support.example",),
        contact_names=(("liqi@support.example", "Li Qi"), ("yang@customer.example", "杨先生")),
        timeline=(first,), last_engineer_mail=OPENED,
    )
    return base.with_(**changes)


def send(template: str, **kw) -> SendMail:
    kind = {"reminder": EntryKind.REMINDER, "reminder2": EntryKind.REMINDER, "closure": EntryKind.CLOSURE,
            "receipt": EntryKind.RECEIPT, "notice": EntryKind.RECEIPT}[template]
    return SendMail(f"CAS-04027-B7D2Z5/{template}", "CAS-04027-B7D2Z5", kind, template, ("yang@customer.example",),
                    ("liqi@support.example",), reminder_number=2 if template == "reminder2" else 1, **kw)


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("template", ["reminder", "reminder2", "closure", "receipt", "notice"])
def test_every_template_renders_as_a_proper_reply(language: str, template: str) -> None:
    extra = {"receipt": Receipt("#status", True, "done", ("status: waiting_customer",))} if template == "receipt" else {}
    if template == "notice":
        extra = {"receipt": Receipt("#close", False, "refused: x@y.example is not an engineer", kind="refused")}
    out = outbound(environment(ROOT / "templates"), case(language), send(template, **extra), ME, NOW, True, 3)
    assert "\n" not in out.subject and out.subject.strip()
    assert out.text.strip() and out.html and "<script>" not in out.html
    assert out.message_id.endswith("@support.example>")
    # What goes to the customer speaks for the engineer; what goes to engineers comes from the bot.
    assert out.from_name == ("casebot" if template in ("receipt", "notice") else "Li Qi via casebot")
    if template not in ("receipt", "notice"):
        assert out.subject == ("回复: " if language == "zh-CN" else "Re: ") + case(language).subject
        assert out.in_reply_to == "<initial@support.example>"
        assert out.references == ("<initial@support.example>",)
        assert out.auto_submitted == "auto-generated"
    else:
        assert out.auto_submitted == "auto-replied"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_phone_is_mentioned_only_when_a_call_was_logged(language: str) -> None:
    env = environment(ROOT / "templates")
    silent = outbound(env, case(language), send("reminder"), ME, NOW, True, 3).text
    called = outbound(env, case(language, phone_call_logged=True), send("reminder"), ME, NOW, True, 3).text
    word = "电话" if language == "zh-CN" else "phone"
    assert word in called and word not in silent.replace("电话沟通", "")


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_closure_carries_the_engineers_fields_or_a_neutral_default(language: str) -> None:
    env = environment(ROOT / "templates")
    fields = ClosureFields("频繁蓝屏", "inode 驱动导致", "厂商已修复")
    given = outbound(env, case(language), send("closure", closure=fields), ME, NOW, True, 3).text
    for value in ("CAS-04027-B7D2Z5", "频繁蓝屏", "inode 驱动导致", "厂商已修复"):
        assert value in given
    default = outbound(env, case(language), send("closure", closure=ClosureFields(), default_closure=True),
                       ME, NOW, True, 3).text
    assert ("没有收到您" if language == "zh-CN" else "not heard back") in default
    assert ("没有收到您" if language == "zh-CN" else "not heard back") not in given


def test_a_language_without_the_template_falls_back_to_english(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    for part in (tmp_path / "templates" / "zh-CN").glob("reminder2.*"):
        part.unlink()
    out = outbound(environment(tmp_path / "templates"), case("zh-CN"), send("reminder2"), ME, NOW, True, 3)
    assert "We have not heard back from you" in out.text


def test_a_broken_template_is_a_clear_problem(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "templates" / "en" / "reminder.txt").write_text("Dear {{ customer_nmae }}", encoding="utf-8")
    with pytest.raises(TemplateProblem, match="customer_nmae"):
        outbound(environment(tmp_path / "templates"), case("en"), send("reminder"), ME, NOW, True, 3)


def test_rendered_values_never_inject_headers() -> None:
    evil = case("en", subject="hello\r\nBcc: everyone@example.org")
    out = outbound(environment(ROOT / "templates"), evil, send("reminder"), ME, NOW, True, 3)
    assert "\r" not in out.subject and "\n" not in out.subject


@pytest.mark.parametrize(
    ("text", "lines", "truncated"),
    [
        ("杨先生，您好：\n\n请上传日志。\n谢谢\nLi Qi", ["请上传日志。"], False),
        ("Dear Mr Yang,\nPlease send the dump.\nBest regards,", ["Please send the dump."], False),
        ("\n".join(f"step {i}" for i in range(12)), [f"step {i}" for i in range(10)], True),
        ("", [], False),
    ],
)
def test_the_quote_of_the_last_request_keeps_the_substance(text: str, lines: list[str], truncated: bool) -> None:
    from mailbot.render.templates import quote_lines

    assert quote_lines(text, "Li Qi") == (lines, truncated)


def test_a_receipt_greets_the_engineer_who_sent_the_command() -> None:
    other = case("zh-CN").with_(contact_names=(("liqi@support.example", "Li Qi"), ("zhang@support.example", "张伟")))
    receipt = SendMail("r", other.key, EntryKind.RECEIPT, "receipt", ("zhang@support.example",),
                       receipt=Receipt("#close", True, "已完成"))
    out = outbound(environment(ROOT / "templates"), other, receipt, ME, NOW, True, 3)
    assert out.text.startswith("张伟，你好：") and "Li Qi" not in out.text and out.from_name == "casebot"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize(("kind", "zh", "en"), [
    ("refused", "发件人无权操作本案例", "from someone who may not steer it"),
    ("bounce", "发给客户的邮件被退回", "bounced"),
    ("undeliverable", "无法投递", "could not be delivered"),
])
def test_notices_to_engineers_say_what_happened_not_your_command(language: str, kind: str, zh: str, en: str) -> None:
    notice = SendMail("n", "CAS-04027-B7D2Z5", EntryKind.RECEIPT, "notice", ("liqi@support.example",),
                      receipt=Receipt("", False, "why", ("RE: the subject",), kind=kind))
    out = outbound(environment(ROOT / "templates"), case(language), notice, ME, NOW, True, 3)
    assert (zh if language == "zh-CN" else en) in out.text and (zh if language == "zh-CN" else en) in out.html
    assert "你发来的指令" not in out.text and "Your command" not in out.text
    assert "RE: the subject" in out.text
    assert out.text.startswith("Li Qi，你好：" if language == "zh-CN" else "Hi Li Qi,")
