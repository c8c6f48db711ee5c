"""config.toml → Settings: defaults, relative paths, and one clear line for every mistake."""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path

import pytest

from mailbot.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_config_loads_and_paths_are_relative_to_its_folder() -> None:
    settings = load(ROOT / "config.toml")
    assert settings.bot.state_dir == ROOT / "state"
    assert settings.mailbox.path == ROOT / "state" / "maildir"
    assert settings.followup.working_hours == (time(9), time(18))
    assert settings.cases.patterns[0].search("回复: [案例号: CAS-04027-B7D2Z5 ]")


def test_an_empty_file_gives_the_embedded_default(tmp_path: Path) -> None:
    settings = load(write(tmp_path, ""))
    assert settings.mailbox.kind == "maildir" and settings.smtp.kind == "outbox"
    assert settings.bot.state_dir == tmp_path / "state"


def test_every_path_is_relative_to_the_config_files_folder(tmp_path: Path) -> None:
    settings = load(write(tmp_path, "[mailbox]\noauth2_token_file = 'secrets/token'\n"
                                    "[followup]\nholiday_overrides = 'cn-2027.toml'\n"))
    assert settings.mailbox.oauth2_token_file == str(tmp_path / "secrets" / "token")
    assert settings.followup.holiday_overrides == tmp_path / "cn-2027.toml"
    assert load(write(tmp_path, "")).mailbox.oauth2_token_file == ""  # not set: no token file


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[bot]\naddress = 42\n", "[bot] address: expected a string"),
        ("[bot]\naddres = 'x@y.z'\n", "[bot] addres: unknown key"),
        ("[bots]\n", "[bots]: unknown section"),
        ("[bot]\ntimezone = 'Mars/Olympus'\n", "[bot] timezone: expected an IANA time zone"),
        ("[cases]\npatterns = ['CAS-(']\n", "[cases] patterns: expected a valid regular expression"),
        ("[cases]\npatterns = []\n", "[cases] patterns: expected at least one pattern"),
        ("[followup]\nmax_reminders = 'two'\n", "[followup] max_reminders: expected an integer"),
        ("[followup]\nworking_hours = ['18:00', '09:00']\n", "[followup] working_hours: expected the opening time"),
        ("[mailbox]\nkind = 'pop3'\n", "[mailbox] kind: expected one of 'maildir', 'imap'"),
        ("[mailbox]\nkind = 'imap'\nusername = ''\n", "[mailbox] username: expected the IMAP login name"),
        ("[smtp]\nport = 0\n", "[smtp] port: expected an integer >= 1"),
        ("[bot]\nparse_workers = -1\n", "[bot] parse_workers: expected an integer >= 0"),
        ("[bot]\nparse_workers = 100000\n", "[bot] parse_workers: expected an integer from 0 to 64"),
        ("[bot]\ntimezone = 'America'\n", "[bot] timezone: expected an IANA time zone"),  # a tzdata folder
        ("[bot]\nstate_dir = '~nosuchuser-mailbot/x'\n", "[bot] state_dir:"),
        ('[bot]\nstate_dir = "a\\u0000b"\n', "[bot] state_dir: expected a path"),
        ("[followup]\nworking_hours = ['09:00+08:00', '18:00']\n", "[followup] working_hours: expected two times"),
        ("[cases]\npatterns = ['a{99999999999}']\n", "[cases] patterns: expected a valid regular expression"),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML"),
        ("[bot\n", "not valid TOML"),
        ("[store]\nkind = 'mysql'\n", "[store] kind: expected one of 'files', 'postgresql'"),
        ("[store]\nlease_seconds = 0\n", "[store] lease_seconds: expected a number of seconds > 0"),
        ("[store]\nlease_seconds = -3.5\n", "[store] lease_seconds: expected a number of seconds > 0"),
        ("[store]\nlease_seconds = nan\n", "[store] lease_seconds: expected a number of seconds > 0"),
        ("[store]\nlease_seconds = '15'\n", "[store] lease_seconds: expected a number of seconds"),
        ("[store]\ndsn_env = 'postgres://u@h/db'\n", "[store] dsn_env: expected the name of an environment"),
        ('[bot]\ninstance_name = "a\\nb"\n', "[bot] instance_name: expected one line"),
    ],
)
def test_every_mistake_is_one_line_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, toml))
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "nope.toml")


def test_the_store_defaults_to_files_and_each_instance_has_its_own_name(tmp_path: Path) -> None:
    default = load(write(tmp_path, ""))
    assert (default.store.kind, default.store.dsn_env, default.store.lease_seconds) == \
        ("files", "MAILBOT_DATABASE_URL", 15)
    assert default.bot.instance_name.endswith(f":{os.getpid()}")  # <hostname>:<pid>
    shared = load(write(tmp_path, "[bot]\ninstance_name = 'mail-a'\n[store]\nkind = 'postgresql'\nlease_seconds = 2.5\n"))
    assert (shared.bot.instance_name, shared.store.kind, shared.store.lease_seconds) == ("mail-a", "postgresql", 2.5)
