"""The bot as `mailbot.wiring` builds it from the settings: the calendar honours `[followup] holiday_overrides`
wherever a service is built (run, import, demo, tests), and a bad overrides file is a config error."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mailbot.config import ConfigError, Settings, from_dict
from mailbot.mailbox.memory import MemoryMailbox
from mailbot.parse.pool import InlineParser
from mailbot.service import Service
from mailbot.store import Store
from mailbot.transport.memory import MemoryTransport
from mailbot.transport.outboxdir import OutboxDirTransport
from mailbot.wiring import make_calendar, make_service

WEDNESDAY = date(2027, 3, 3)  # an ordinary workday in mainland China


def settings(tmp_path: Path, overrides: str | None = None) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    followup = {}
    if overrides is not None:
        (tmp_path / "days-off.toml").write_text(overrides, encoding="utf-8")
        followup = {"holiday_overrides": "days-off.toml"}
    return from_dict({"bot": {"address": "casebot@support.example", "state_dir": "state"},
                      "engineers": {"domains": ["support.example"]}, "followup": followup}, tmp_path)


def service_for(s: Settings) -> Service:
    return make_service(s, Store(None), mailbox=MemoryMailbox(), transport=MemoryTransport(), parser=InlineParser())


def test_a_day_off_in_the_overrides_file_is_no_business_day_for_the_service(tmp_path: Path) -> None:
    plain = service_for(settings(tmp_path / "plain"))
    assert plain.policy.calendar.is_workday(WEDNESDAY)
    # The office closes on that Wednesday: the service's reminders count past it.
    service = service_for(settings(tmp_path / "closed", f'holidays = ["{WEDNESDAY.isoformat()}"]\n'))
    assert not service.policy.calendar.is_workday(WEDNESDAY)
    assert service.policy.calendar.next_workday(date(2027, 3, 2)) == date(2027, 3, 4)


def test_a_make_up_workday_in_the_overrides_file_counts(tmp_path: Path) -> None:
    saturday = date(2027, 3, 6)
    calendar = make_calendar(settings(tmp_path, f'workdays = ["{saturday.isoformat()}"]\n'))
    assert calendar.is_workday(saturday)
    assert calendar.next_workday(date(2027, 3, 5)) == saturday


@pytest.mark.parametrize(("text", "reason"), [
    ("holiday = []\n", "unknown key 'holiday'"),
    ('holidays = ["next tuesday"]\n', "expected a date"),
])
def test_a_bad_overrides_file_is_a_config_error(tmp_path: Path, text: str, reason: str) -> None:
    s = settings(tmp_path, text)
    with pytest.raises(ConfigError, match=reason):
        make_calendar(s)
    with pytest.raises(ConfigError, match=reason):
        service_for(s)


def test_a_missing_overrides_file_is_a_config_error(tmp_path: Path) -> None:
    s = settings(tmp_path, "")
    (tmp_path / "days-off.toml").unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        make_calendar(s)


def test_the_configured_transport_is_the_outbox_folder_by_default(tmp_path: Path) -> None:
    s = settings(tmp_path)
    service = make_service(s, Store(None), mailbox=MemoryMailbox(), parser=InlineParser())
    assert isinstance(service.transport, OutboxDirTransport)
    assert service.sent_folder is None  # only an IMAP mailbox keeps a Sent folder
