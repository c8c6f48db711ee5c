"""Two support desks in one long-running `mailbot run`, each its own Dovecot account: a Chinese desk and an
English desk with their own engineers, address and templates. Each desk's mail stays in its own cases and
its own folders, each case writes as its own desk, and a desk whose login is refused is reported and
retried while the other keeps working — until its password is fixed, when it catches up by itself."""

from __future__ import annotations

import email
import logging
import shutil
import threading
import time
from collections.abc import Callable
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from mailbot.config import from_dict
from mailbot.runner import run_forever
from mailbot.store import Store
from mailbot.wiring import make_services
from tests.conftest import base_config
from tests.trustlife import at, mail

pytest_plugins = ["tests.imap_server", "tests.smtp_server"]
pytestmark = pytest.mark.imap

# The second Dovecot account (tests/imap_server.py); spelled here, not imported, so that pytest loads that
# module as the plugin above (with its assertions rewritten) and not first as a plain import.
DESK_USER, DESK_PASSWORD = "support-en@support.example", "desk-secret"

CN_KEY, EN_KEY = "CAS-04027-B7D2Z5", "CAS-05111-Q9W8E7"
CN_SUBJECT = f"[案例号: {CN_KEY} ] % 某单位终端频繁蓝屏 %"
EN_SUBJECT = f"[Case: {EN_KEY} ] % Terminal keeps rebooting %"
EN_MARK = "-- The international support desk"  # only the English desk's own templates say this
# The engineers wrote a week before the service's clock: the first sweep finds each customer's reminder due.
NOW = "2021-04-22T10:00:00+08:00"


def until(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def folder_counts(dovecot: Any, user: str, password: str) -> dict[str, int]:
    with dovecot.client(user, password) as c:
        return {str(name): int(c.folder_status(name, [b"MESSAGES"])[b"MESSAGES"])
                for _flags, _sep, name in c.list_folders()}


def deliver(dovecot: Any, user: str, password: str, raw: bytes) -> None:
    with dovecot.client(user, password) as c:
        c.append("INBOX", raw)


def the_desks(tmp_path: Path, dovecot: Any, smtp_server: Any) -> dict[str, Any]:
    en_templates = tmp_path / "templates-en"
    shutil.copytree(Path(__file__).resolve().parent.parent / "templates", en_templates)
    reminder = en_templates / "en" / "reminder.txt"
    reminder.write_text(reminder.read_text(encoding="utf-8") + f"\n{EN_MARK}\n", encoding="utf-8")
    imap = {"kind": "imap", "host": dovecot.host, "port": dovecot.port, "security": "none",
            "poll_seconds": 1, "timeout_seconds": 10}
    raw = base_config()
    raw.pop("mailbox", None)
    raw["engineers"] = {"domains": ["support.example"]}
    raw["smtp"] = {"kind": "smtp", "host": smtp_server.host, "port": smtp_server.port, "security": "none",
                   "username": ""}
    raw["followup"] = {"sweep_seconds": 1}
    raw["mailboxes"] = {
        "cn": {**imap, "username": dovecot.user, "password_env": "MAILBOT_CN_PASSWORD",
               "address": "support-cn@support.example", "language": "zh-CN"},
        "en": {**imap, "username": DESK_USER, "password_env": "MAILBOT_EN_PASSWORD",
               "address": "support-en@support.example", "language": "en", "templates": str(en_templates),
               "engineers": ["intl.example"]},
    }
    return raw


def reminders(smtp_server: Any) -> list[tuple[str, str, str]]:
    """(From address, first recipient, plain text) of each mail sent to a customer, in order."""
    out = []
    for m in list(smtp_server.messages):
        msg = email.message_from_bytes(m.raw, policy=default)
        if "customer.example" not in str(msg["To"]):
            continue
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        out.append((msg["From"].addresses[0].addr_spec, msg["To"].addresses[0].addr_spec, text))
    return out


def test_two_desks_work_side_by_side_and_a_refused_login_holds_up_only_its_own_desk(
        tmp_path: Path, dovecot: Any, smtp_server: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MAILBOT_CN_PASSWORD", dovecot.password)
    monkeypatch.setenv("MAILBOT_EN_PASSWORD", "not-the-password")  # the English desk's login is refused
    settings = from_dict(the_desks(tmp_path, dovecot, smtp_server), tmp_path)
    store = Store(settings.bot.state_dir / "store")
    services = make_services(settings, store)
    deliver(dovecot, dovecot.user, dovecot.password,
            mail("liqi@support.example", "yang@customer.example", "请上传日志。", "2021-04-15T10:00:00+08:00",
                 subject=CN_SUBJECT, cc="support-cn@support.example"))
    deliver(dovecot, DESK_USER, DESK_PASSWORD,
            mail("ann@intl.example", "bob@customer.example", "Please upload the logs.",
                 "2021-04-15T10:05:00+08:00", subject=EN_SUBJECT, cc="support-en@support.example"))

    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="mailbot")
    runner = threading.Thread(target=run_forever, args=(services, settings),
                              kwargs={"stop": stop, "fixed_now": at(NOW)}, daemon=True)
    runner.start()
    try:
        # The Chinese desk works: its case opens and its customer is reminded, in Chinese, from its address.
        until(lambda: any(to == "yang@customer.example" for _, to, _ in reminders(smtp_server)))
        # The English desk said why it does not, naming itself, and its mail waits in its inbox.
        refused = [r.getMessage() for r in caplog.records if "mailbox en:" in r.getMessage()
                   and "LoginFailed" in r.getMessage()]
        assert refused
        assert not any("mailbox cn:" in r.getMessage() and "problem" in r.getMessage() for r in caplog.records)
        assert store.get_case(EN_KEY) is None
        assert folder_counts(dovecot, DESK_USER, DESK_PASSWORD)["INBOX"] == 1

        # Its password fixed, the English desk catches up on its own at its next retry: no restart.
        monkeypatch.setenv("MAILBOT_EN_PASSWORD", DESK_PASSWORD)
        until(lambda: any(to == "bob@customer.example" for _, to, _ in reminders(smtp_server)))
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()

    cn_case, en_case = store.get_case(CN_KEY), store.get_case(EN_KEY)
    assert cn_case is not None and en_case is not None
    assert (cn_case.mailbox, cn_case.language, cn_case.engineers) == ("cn", "zh-CN", ("liqi@support.example",))
    assert (en_case.mailbox, en_case.language, en_case.engineers) == ("en", "en", ("ann@intl.example",))
    # Each reminder from its own desk, in its own language, from its own templates — and each sent once.
    sent = reminders(smtp_server)
    assert [(frm, to) for frm, to, _ in sent] == [("support-cn@support.example", "yang@customer.example"),
                                                  ("support-en@support.example", "bob@customer.example")]
    (_, _, cn_text), (_, _, en_text) = sent
    assert "您好" in cn_text and EN_MARK not in cn_text
    assert EN_MARK in en_text and "您好" not in en_text
    # No cross talk in the mailboxes: each desk moved its own mail and filed its own reminder's copy.
    cn_folders = folder_counts(dovecot, dovecot.user, dovecot.password)
    en_folders = folder_counts(dovecot, DESK_USER, DESK_PASSWORD)
    assert (cn_folders["INBOX"], cn_folders["Processed"], cn_folders["Sent"]) == (0, 1, 1)
    assert (en_folders["INBOX"], en_folders["Processed"], en_folders["Sent"]) == (0, 1, 1)
    assert dovecot_sent_to(dovecot, DESK_USER, DESK_PASSWORD) == ["bob@customer.example"]
    assert dovecot_sent_to(dovecot, dovecot.user, dovecot.password) == ["yang@customer.example"]


def dovecot_sent_to(dovecot: Any, user: str, password: str) -> list[str]:
    """The To address of each copy in the account's Sent folder."""
    with dovecot.client(user, password) as c:
        c.select_folder("Sent", readonly=True)
        data = c.fetch(c.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (TO)]"])
        return [email.message_from_bytes(next(v for k, v in d.items() if k.startswith(b"BODY[HEADER")),
                                         policy=default)["To"].addresses[0].addr_spec for d in data.values()]
