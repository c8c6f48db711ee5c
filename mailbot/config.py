"""config.toml → a frozen, validated Settings object; every error names the key and what was expected."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(Exception):
    """A config problem a user can fix; the CLI prints it as one line and exits 2."""


@dataclass(frozen=True)
class BotSettings:
    address: str
    name: str
    timezone: str
    language: str
    state_dir: Path
    log_level: str
    log_json: bool
    parse_workers: int

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class EngineerSettings:
    addresses: tuple[str, ...]
    domains: tuple[str, ...]


@dataclass(frozen=True)
class CaseSettings:
    patterns: tuple[re.Pattern[str], ...]
    tracking_token: re.Pattern[str] | None
    opened_by: str = "engineer"  # "engineer": an unused key in anyone else's mail goes to unmatched


@dataclass(frozen=True)
class MailboxSettings:
    kind: str
    path: Path
    host: str
    port: int
    security: str
    username: str
    password_env: str
    oauth2_token_command: str
    oauth2_token_file: str
    folder: str
    processed: str  # "move" | "flag"
    processed_folder: str
    quarantine_folder: str
    sent_folder: str
    poll_seconds: int
    timeout_seconds: int
    # Hostile or runaway mail (issue 13): bigger mail is quarantined unparsed; a parse that takes longer is
    # quarantined; a batch holds about this many bytes (at least one mail), so memory does not grow with it.
    max_message_bytes: int = 25 * 2**20
    parse_timeout_seconds: int = 10
    max_batch_bytes: int = 32 * 2**20


@dataclass(frozen=True)
class SmtpSettings:
    kind: str
    host: str
    port: int
    security: str
    username: str
    password_env: str
    timeout_seconds: int
    cc_engineers: bool
    show_engineer_name: bool
    max_per_recipient_per_day: int
    max_recipients: int = 10  # addresses in To+Cc of one reminder or closure, at most


@dataclass(frozen=True)
class FollowupSettings:
    first_after_business_days: int
    every_business_days: int
    max_reminders: int
    close_after_business_days: int
    working_hours: tuple[time, time]
    holidays: str
    holiday_overrides: Path | None
    sweep_seconds: int
    max_out_of_office_days: int = 30  # an out-of-office reply holds reminders at most this long


@dataclass(frozen=True)
class SecuritySettings:
    trust_authentication_results: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    bot: BotSettings
    engineers: EngineerSettings
    cases: CaseSettings
    mailbox: MailboxSettings
    smtp: SmtpSettings
    followup: FollowupSettings
    security: SecuritySettings
    source: Path | None  # the file these settings came from; None for the built-in defaults

    @property
    def templates_dir(self) -> Path:
        return Path(__file__).resolve().parent.parent / "templates"


# --- the schema: section → key → (default, converter). Converters raise ValueError("expected ...").


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("expected a string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _int_at_least(low: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("expected an integer")
        if v < low:
            raise ValueError(f"expected an integer >= {low}")
        return v

    return conv


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    at_least = _int_at_least(low)

    def conv(v: Any) -> int:
        n = at_least(v)
        if n > high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return n

    return conv


def _one_of(*choices: str) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if v not in choices:
            raise ValueError("expected one of " + ", ".join(repr(c) for c in choices))
        return str(v)

    return conv


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError("expected a list of strings")
    return tuple(v)


def _address(v: Any) -> str:
    s = _str(v).strip().lower()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", s):
        raise ValueError("expected an e-mail address like casebot@support.example")
    return s


def _addresses(v: Any) -> tuple[str, ...]:
    return tuple(_address(x) for x in _str_list(v))


def _domains(v: Any) -> tuple[str, ...]:
    return tuple(d.strip().lower().lstrip("@") for d in _str_list(v))


def _regex(v: Any) -> re.Pattern[str]:
    s = _str(v)
    try:
        return re.compile(s, re.IGNORECASE)
    except (re.error, OverflowError, RecursionError) as e:  # `a{99999999999}`, absurd nesting
        raise ValueError(f"expected a valid regular expression ({e})") from None


def _regex_list(v: Any) -> tuple[re.Pattern[str], ...]:
    items = _str_list(v)
    if not items:
        raise ValueError("expected at least one pattern")
    return tuple(_regex(x) for x in items)


def _optional_regex(v: Any) -> re.Pattern[str] | None:
    return None if v == "" else _regex(v)


def _timezone(v: Any) -> str:
    s = _str(v)
    try:
        ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: `America` is a folder of tzdata
        raise ValueError("expected an IANA time zone such as 'Asia/Shanghai'") from None
    return s


def _language(v: Any) -> str:
    return _one_of("zh-CN", "en")(v)


def _hours(v: Any) -> tuple[time, time]:
    items = _str_list(v)
    try:
        if len(items) != 2:
            raise ValueError
        start, end = (time.fromisoformat(x) for x in items)
        if start.tzinfo is not None or end.tzinfo is not None:  # hours are local to each case's zone
            raise ValueError
    except ValueError:
        raise ValueError('expected two times like ["09:00", "18:00"], without an offset') from None
    if not start < end:
        raise ValueError("expected the opening time before the closing time")
    return start, end


def _log_level(v: Any) -> str:
    return _one_of("DEBUG", "INFO", "WARNING", "ERROR")(str(v).upper() if isinstance(v, str) else v)


_Schema = dict[str, dict[str, tuple[Any, Callable[[Any], Any]]]]

SCHEMA: _Schema = {
    "bot": {
        "address": ("casebot@support.example", _address),
        "name": ("mailbot", _str),
        "timezone": ("Asia/Shanghai", _timezone),
        "language": ("zh-CN", _language),
        "state_dir": ("state", _str),
        "log_level": ("INFO", _log_level),
        "log_json": (False, _bool),
        "parse_workers": (0, _int_between(0, 64)),
    },
    "engineers": {
        "addresses": ([], _addresses),
        "domains": ([], _domains),
    },
    "cases": {
        "patterns": ([r"CAS-\d{5}-[A-Z0-9]{6}"], _regex_list),
        "tracking_token": (r"CMIT:\d{7}", _optional_regex),
        "opened_by": ("engineer", _one_of("engineer", "anyone")),
    },
    "mailbox": {
        "kind": ("maildir", _one_of("maildir", "imap")),
        "path": ("state/maildir", _str),
        "host": ("127.0.0.1", _str),
        "port": (993, _int_at_least(1)),
        "security": ("ssl", _one_of("ssl", "starttls", "none")),
        "username": ("", _str),
        "password_env": ("MAILBOT_IMAP_PASSWORD", _str),
        "oauth2_token_command": ("", _str),
        "oauth2_token_file": ("", _str),
        "folder": ("INBOX", _str),
        "processed": ("move", _one_of("move", "flag")),
        "processed_folder": ("Processed", _str),
        "quarantine_folder": ("Quarantine", _str),
        "sent_folder": ("Sent", _str),
        "poll_seconds": (60, _int_at_least(1)),
        "timeout_seconds": (60, _int_at_least(1)),
        "max_message_bytes": (25 * 2**20, _int_at_least(1024)),
        "parse_timeout_seconds": (10, _int_between(1, 3600)),
        "max_batch_bytes": (32 * 2**20, _int_at_least(1024)),
    },
    "smtp": {
        "kind": ("outbox", _one_of("outbox", "smtp")),
        "host": ("127.0.0.1", _str),
        "port": (587, _int_at_least(1)),
        "security": ("starttls", _one_of("ssl", "starttls", "none")),
        "username": ("", _str),
        "password_env": ("MAILBOT_SMTP_PASSWORD", _str),
        "timeout_seconds": (30, _int_at_least(1)),
        "cc_engineers": (True, _bool),
        "show_engineer_name": (True, _bool),
        "max_per_recipient_per_day": (3, _int_at_least(1)),
        "max_recipients": (10, _int_between(1, 100)),
    },
    "followup": {
        "first_after_business_days": (3, _int_at_least(1)),
        "every_business_days": (3, _int_at_least(1)),
        "max_reminders": (2, _int_at_least(0)),
        "close_after_business_days": (2, _int_at_least(1)),
        "working_hours": (["09:00", "18:00"], _hours),
        "holidays": ("CN", _one_of("CN", "none")),
        "holiday_overrides": ("", _str),
        "sweep_seconds": (60, _int_at_least(1)),
        "max_out_of_office_days": (30, _int_between(1, 366)),
    },
    "security": {
        "trust_authentication_results": ([], _str_list),
    },
}


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    given = raw.get(name, {})
    if not isinstance(given, dict):
        raise ConfigError(f"[{name}]: expected a table")
    out: dict[str, Any] = {}
    for key in given:
        if key not in SCHEMA[name]:
            known = ", ".join(SCHEMA[name])
            raise ConfigError(f"[{name}] {key}: unknown key (known keys: {known})")
    for key, (default, conv) in SCHEMA[name].items():
        value = given.get(key, default)
        try:
            out[key] = conv(value)
        except ValueError as e:
            raise ConfigError(f"[{name}] {key}: {e}, got {value!r}") from None
    return out


def from_dict(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> Settings:
    """Validate a parsed config; relative paths are taken relative to `base_dir` (the file's folder)."""
    for name in raw:
        if name not in SCHEMA:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(SCHEMA)})")
    s = {name: _section(raw, name) for name in SCHEMA}

    def path(p: str, key: str) -> Path:
        if "\x00" in p:
            raise ConfigError(f"{key}: expected a path, got one with a NUL character")
        try:
            q = Path(p).expanduser()
        except RuntimeError as e:  # `~nosuchuser/x`
            raise ConfigError(f"{key}: {e} ({p!r})") from None
        return q if q.is_absolute() else (base_dir / q)

    bot = BotSettings(**{**s["bot"], "state_dir": path(s["bot"]["state_dir"], "[bot] state_dir")})
    token_file = s["mailbox"]["oauth2_token_file"]
    mailbox = MailboxSettings(**{
        **s["mailbox"], "path": path(s["mailbox"]["path"], "[mailbox] path"),
        "oauth2_token_file": str(path(token_file, "[mailbox] oauth2_token_file")) if token_file else "",
    })
    if mailbox.kind == "imap" and not mailbox.username:
        raise ConfigError("[mailbox] username: expected the IMAP login name when kind = 'imap'")
    overrides = s["followup"]["holiday_overrides"]
    followup = FollowupSettings(
        **{**s["followup"], "holiday_overrides": path(overrides, "[followup] holiday_overrides") if overrides else None}
    )
    return Settings(
        bot=bot,
        engineers=EngineerSettings(**s["engineers"]),
        cases=CaseSettings(**s["cases"]),
        mailbox=mailbox,
        smtp=SmtpSettings(**s["smtp"]),
        followup=followup,
        security=SecuritySettings(**s["security"]),
        source=source,
    )


def load(path: Path) -> Settings:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config PATH)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    return from_dict(raw, path.resolve().parent, source=path)
