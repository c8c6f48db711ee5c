"""Two support mailboxes in one deployment (`[mailboxes.NAME]`): a Chinese desk and an English desk, each with
its own address, language and engineers. Their cases never mix, each case writes as the mailbox that opened
it, and the config says clearly when two tables would read the same mail."""

from __future__ import annotations

import email
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import ConfigError, from_dict
from mailbot.mailbox.maildir import deliver
from mailbot.store import Store
from mailbot.transport.memory import MemoryTransport
from mailbot.wiring import make_services
from tests.conftest import base_config
from tests.trustlife import at, mail

CN_KEY, EN_KEY = "CAS-04027-B7D2Z5", "CAS-05111-Q9W8E7"
CN_SUBJECT = f"[案例号: {CN_KEY} ] % 某单位终端频繁蓝屏 %"
EN_SUBJECT = f"[Case: {EN_KEY} ] % Terminal keeps rebooting %"


def two_desks(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    raw = base_config()
    raw.pop("mailbox", None)
    raw["engineers"] = {"domains": ["support.example"]}
    raw["mailboxes"] = {
        "cn": {"path": str(tmp_path / "cn"), "address": "support-cn@support.example", "language": "zh-CN"},
        "en": {"path": str(tmp_path / "en"), "address": "support-en@support.example", "language": "en",
               "engineers": ["intl.example", "lead@support.example"]},
    }
    for name, values in extra.items():
        raw["mailboxes"][name] = values
    return raw


def sent_from(transport: MemoryTransport) -> list[tuple[str, str, str]]:
    """(From, To, language hint) of every mail sent, in order."""
    out = []
    for m in transport.sent:
        msg = email.message_from_bytes(m.raw, policy=default)
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        out.append((str(msg["From"]), ",".join(m.recipients), "zh" if "您好" in text or "案例" in text else "en"))
    return out


def test_each_desk_opens_its_own_cases_and_writes_as_itself(tmp_path: Path) -> None:
    settings = from_dict(two_desks(tmp_path), tmp_path)
    assert [m.name for m in settings.all_mailboxes] == ["cn", "en"]
    store, transport = Store(None), MemoryTransport()
    cn, en = make_services(settings, store, transport=transport)
    deliver(tmp_path / "cn", mail("liqi@support.example", "yang@customer.example",
                                  "请上传日志。", "2021-04-15T10:00:00+08:00", subject=CN_SUBJECT,
                                  cc="support-cn@support.example"))
    deliver(tmp_path / "en", mail("ann@intl.example", "bob@customer.example",
                                  "Please upload the logs.", "2021-04-15T10:05:00+08:00", subject=EN_SUBJECT,
                                  cc="support-en@support.example"))
    now = at("2021-04-15T10:10:00+08:00")
    for service in (cn, en):
        service.run_once(now)
    cn_case, en_case = store.get_case(CN_KEY), store.get_case(EN_KEY)
    assert cn_case is not None and en_case is not None
    assert (cn_case.mailbox, cn_case.language) == ("cn", "zh-CN")
    assert (en_case.mailbox, en_case.language) == ("en", "en")
    assert en_case.engineers == ("ann@intl.example",)  # the English desk's engineers are its own

    # Days later both customers are silent: each desk reminds its own customer, from its own address.
    later = at("2021-04-22T10:00:00+08:00")
    for service in (cn, en):
        service.run_once(later)
    reminders = [s for s in sent_from(transport) if "customer.example" in s[1]]
    assert ("support-cn@support.example", "yang@customer.example", "zh") in [
        (f.split("<")[-1].rstrip(">"), to.split(",")[0], lang) for f, to, lang in reminders]
    assert ("support-en@support.example", "bob@customer.example", "en") in [
        (f.split("<")[-1].rstrip(">"), to.split(",")[0], lang) for f, to, lang in reminders]
    assert len(reminders) == 2  # each swept once, by its own desk: not twice


def test_a_mail_to_the_other_desk_that_names_a_case_is_threaded_into_it_and_the_case_keeps_its_desk(
        tmp_path: Path) -> None:
    settings = from_dict(two_desks(tmp_path), tmp_path)
    store, transport = Store(None), MemoryTransport()
    cn, en = make_services(settings, store, transport=transport)
    deliver(tmp_path / "cn", mail("liqi@support.example", "yang@customer.example", "请上传日志。",
                                  "2021-04-15T10:00:00+08:00", subject=CN_SUBJECT, cc="support-cn@support.example"))
    cn.run_once(at("2021-04-15T10:10:00+08:00"))
    # The customer writes to the English desk by mistake, naming the Chinese case.
    deliver(tmp_path / "en", mail("yang@customer.example", "support-en@support.example", "日志已上传。",
                                  "2021-04-16T09:00:00+08:00", subject="回复: " + CN_SUBJECT))
    en.run_once(at("2021-04-16T09:05:00+08:00"))
    case = store.get_case(CN_KEY)
    assert case is not None and case.mailbox == "cn" and len(case.timeline) == 2
    assert store.get_case(EN_KEY) is None
    # The English desk's sweep leaves the Chinese case to its own desk.
    assert not en.sweeps(case) and cn.sweeps(case)


def test_a_case_of_a_mailbox_no_longer_configured_is_swept_by_the_first_desk(tmp_path: Path) -> None:
    settings = from_dict(two_desks(tmp_path), tmp_path)
    cn, en = make_services(settings, Store(None), transport=MemoryTransport())
    deliver(tmp_path / "cn", mail("liqi@support.example", "yang@customer.example", "请上传日志。",
                                  "2021-04-15T10:00:00+08:00", subject=CN_SUBJECT, cc="support-cn@support.example"))
    cn.run_once(at("2021-04-15T10:10:00+08:00"))
    case = cn.store.get_case(CN_KEY)
    assert case is not None
    orphan = case.with_(mailbox="retired")
    assert cn.sweeps(orphan) and not en.sweeps(orphan)


def test_one_mailbox_table_alone_is_the_default_mailbox_and_cases_from_before_belong_to_it(tmp_path: Path) -> None:
    settings = from_dict(base_config(), tmp_path)
    assert [m.name for m in settings.all_mailboxes] == ["default"]
    assert settings.for_mailbox("default").bot.address == settings.bot.address
    with pytest.raises(ConfigError, match="no mailbox 'nope'"):
        settings.for_mailbox("nope")


@pytest.mark.parametrize(("change", "message"), [
    ({"en": {"path": "SAME"}}, r"\[mailboxes.en\]: reads the same mail as \[mailboxes.cn\]"),
    ({"en": {"address": "support-cn@support.example"}}, r"\[mailboxes.en\]: sends from the same address"),
    ({"en": {"language": "fr"}}, r"\[mailboxes.en\] language"),
    ({"en": {"colour": "blue"}}, r"\[mailboxes.en\] colour: unknown key"),
    ({"bad name!": {"path": "x"}}, r"\[mailboxes.bad name!\]: a mailbox name"),
    ({"en": {"kind": "imap"}}, r"\[mailboxes.en\] username"),
])
def test_config_mistakes_name_the_mailbox_table(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    raw = two_desks(tmp_path)
    for name, values in change.items():
        if values.get("path") == "SAME":
            values = {**values, "path": raw["mailboxes"]["cn"]["path"]}
        raw["mailboxes"].setdefault(name, {}).update(values)
    with pytest.raises(ConfigError, match=message):
        from_dict(raw, tmp_path)


def test_the_mailbox_of_a_case_survives_the_store_and_old_cases_read_as_default(tmp_path: Path) -> None:
    settings = from_dict(two_desks(tmp_path), tmp_path)
    store = Store(tmp_path / "store")
    cn, _ = make_services(settings, store, transport=MemoryTransport())
    deliver(tmp_path / "cn", mail("liqi@support.example", "yang@customer.example", "请上传日志。",
                                  "2021-04-15T10:00:00+08:00", subject=CN_SUBJECT, cc="support-cn@support.example"))
    cn.run_once(at("2021-04-15T10:10:00+08:00"))
    reopened = Store(tmp_path / "store").get_case(CN_KEY)
    assert reopened is not None and reopened.mailbox == "cn" and reopened.title


def test_run_once_works_every_mailbox_and_cases_filter_by_mailbox(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "config.toml").write_text(f"""
[bot]
address = "casebot@support.example"
state_dir = "{tmp_path / 'state'}"
[engineers]
domains = ["support.example", "intl.example"]
[nudge]
after_business_hours = 0
escalate_after_business_hours = 0
[digest]
at = ""
[mailboxes.cn]
path = "{tmp_path / 'cn'}"
address = "support-cn@support.example"
[mailboxes.en]
path = "{tmp_path / 'en'}"
address = "support-en@support.example"
language = "en"
""", encoding="utf-8")
    deliver(tmp_path / "cn", mail("liqi@support.example", "yang@customer.example", "请上传日志。",
                                  "2021-04-15T10:00:00+08:00", subject=CN_SUBJECT, cc="support-cn@support.example"))
    deliver(tmp_path / "en", mail("ann@intl.example", "bob@customer.example", "Please upload the logs.",
                                  "2021-04-15T10:05:00+08:00", subject=EN_SUBJECT, cc="support-en@support.example"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailbot.cli", *args, "--config", str(tmp_path / "config.toml")],
                              capture_output=True, text=True, cwd=root, timeout=120)

    ran = cli("run", "--once", "--json", "--now", "2021-04-15T10:10:00+08:00")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["opened"] == 2
    listed = cli("cases", "--json", "--mailbox", "en")
    assert [c["key"] for c in json.loads(listed.stdout)] == [EN_KEY]
    assert json.loads(listed.stdout)[0]["mailbox"] == "en"
    wrong = cli("import", str(tmp_path / "cn"), "--mailbox", "nope")
    assert wrong.returncode == 2 and "no mailbox 'nope'" in wrong.stderr


def test_another_desk_copied_in_is_the_bot_not_a_customer_to_chase(tmp_path: Path) -> None:
    """Li Qi copies both desks, and the English desk's address is outside the engineers' domains: it is the
    bot all the same — no customer of the case, no reminders to it, no case of its own for the copy it got."""
    raw = two_desks(tmp_path)
    raw["mailboxes"]["en"]["address"] = "help@care.example"
    settings = from_dict(raw, tmp_path)
    store, transport = Store(None), MemoryTransport()
    cn, en = make_services(settings, store, transport=transport)
    first = mail("liqi@support.example", "yang@customer.example", "请上传日志。", "2021-04-15T10:00:00+08:00",
                 subject=CN_SUBJECT, cc="support-cn@support.example, help@care.example")
    deliver(tmp_path / "cn", first)
    deliver(tmp_path / "en", first)
    cn.run_once(at("2021-04-15T10:10:00+08:00"))
    en.run_once(at("2021-04-15T10:10:00+08:00"))
    case = store.get_case(CN_KEY)
    assert case is not None and case.customers == ("yang@customer.example",)
    for service in (cn, en):
        service.run_once(at("2021-04-22T10:00:00+08:00"))  # a week of silence: the first reminder
    assert [to for _, to, _ in sent_from(transport)] == ["yang@customer.example,liqi@support.example"]  # Cc: him
