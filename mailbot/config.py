"""config.toml → a frozen, validated Settings object; every error names the key and what was expected."""

from __future__ import annotations

import os
import platform
import re
import tomllib
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailbot.settings import (
    BotSettings,
    CaseSettings,
    ConfigError,
    DigestSettings,
    EngineerSettings,
    FollowupSettings,
    MailboxSettings,
    NudgeSettings,
    ReportSettings,
    SecuritySettings,
    Settings,
    SmtpSettings,
    StoreSettings,
)

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


def _positive_seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError("expected a number of seconds")
    if not 0 < v <= 86400:  # NaN fails this too
        raise ValueError("expected a number of seconds > 0 (at most 86400)")
    return float(v)


def _env_name(v: Any) -> str:
    s = _str(v)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", s):
        raise ValueError("expected the name of an environment variable, like MAILBOT_DATABASE_URL")
    return s


def _clock(v: Any) -> str:
    s = _str(v).strip()
    if s and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", s):
        raise ValueError('expected a local time like "09:00", or "" for off')
    return s


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
        "instance_name": ("", _str),
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
    "nudge": {
        "after_business_hours": (4, _int_between(0, 10000)),
        "escalate_after_business_hours": (16, _int_between(0, 10000)),
        "leads": ([], _addresses),
    },
    "digest": {
        "at": ("09:00", _clock),
    },
    "report": {
        "weekly_to": ([], _addresses),
    },
    "store": {
        "kind": ("files", _one_of("files", "postgresql")),
        "dsn_env": ("MAILBOT_DATABASE_URL", _env_name),
        "lease_seconds": (15, _positive_seconds),
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


# What a `[mailboxes.NAME]` table may set beyond the keys of `[mailbox]`.
MAILBOX_OVERRIDES: _Schema = {"mailboxes": {
    "address": ("", lambda v: _address(v) if v != "" else ""),
    "language": ("", lambda v: _language(v) if v != "" else ""),
    "templates": ("", _str),
    "engineers": ([], _str_list),
}}
_MAILBOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def from_dict(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> Settings:
    """Validate a parsed config; relative paths are taken relative to `base_dir` (the file's folder)."""
    for name in raw:
        if name not in SCHEMA and name != "mailboxes":
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join([*SCHEMA, 'mailboxes'])})")
    s = {name: _section(raw, name) for name in SCHEMA}

    def path(p: str, key: str) -> Path:
        if "\x00" in p:
            raise ConfigError(f"{key}: expected a path, got one with a NUL character")
        try:
            q = Path(p).expanduser()
        except RuntimeError as e:  # `~nosuchuser/x`
            raise ConfigError(f"{key}: {e} ({p!r})") from None
        return q if q.is_absolute() else (base_dir / q)

    # One name per process by default: two instances on one host must never share a name (`mailbot status`).
    # platform.node(), not socket.gethostname(): reading the config stays free of I/O libraries (test_purity).
    instance = s["bot"]["instance_name"].strip() or f"{platform.node()}:{os.getpid()}"
    if any(c in instance for c in "\r\n\x00") or len(instance) > 200:
        raise ConfigError("[bot] instance_name: expected one line of at most 200 characters")
    bot = BotSettings(**{**s["bot"], "state_dir": path(s["bot"]["state_dir"], "[bot] state_dir"),
                         "instance_name": instance})
    mailboxes = _mailboxes(raw, s["mailbox"], path)
    mailbox = mailboxes[0]
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
        store=StoreSettings(**s["store"]),
        nudge=_nudge(s["nudge"]),
        digest=DigestSettings(**s["digest"]),
        report=ReportSettings(**s["report"]),
        mailboxes=mailboxes,
    )


def _mailboxes(raw: dict[str, Any], defaults: dict[str, Any],
               path: Callable[[str, str], Path]) -> tuple[MailboxSettings, ...]:
    """`[mailbox]` alone: one mailbox, `default`. With `[mailboxes.NAME]` tables: one mailbox per table, each
    taking the keys it does not set from `[mailbox]` (shared defaults; `[mailbox]` itself is then no mailbox).
    Errors name the table."""
    tables = raw.get("mailboxes")
    if tables is None:
        return (_one_mailbox("[mailbox]", {**defaults, "name": "default"}, path),)
    if not isinstance(tables, dict) or not tables or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError("[mailboxes]: expected one table per mailbox, e.g. [mailboxes.cn] with kind, path, …")
    given_defaults = raw.get("mailbox", {})
    out = []
    for name, given in tables.items():
        where = f"[mailboxes.{name}]"
        if not _MAILBOX_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a mailbox name is letters, digits, - and _ (at most 40)")
        values: dict[str, Any] = {}
        for key, value in given.items():
            if key in SCHEMA["mailbox"]:
                default, conv = SCHEMA["mailbox"][key]
            elif key in MAILBOX_OVERRIDES["mailboxes"]:
                default, conv = MAILBOX_OVERRIDES["mailboxes"][key]
            else:
                known = ", ".join([*SCHEMA["mailbox"], *MAILBOX_OVERRIDES["mailboxes"]])
                raise ConfigError(f"{where} {key}: unknown key (known keys: {known})")
            try:
                values[key] = conv(value)
            except ValueError as e:
                raise ConfigError(f"{where} {key}: {e}, got {value!r}") from None
        merged = {**defaults, **{k: v for k, v in values.items() if k in SCHEMA["mailbox"]}}
        if "path" not in given and given_defaults.get("path") is None:
            merged["path"] = f"state/maildir-{name}"  # two mailboxes never share the default Maildir
        templates = values.get("templates", "")
        out.append(_one_mailbox(where, {
            **merged, "name": name, "address": values.get("address", ""), "language": values.get("language", ""),
            "templates": path(templates, f"{where} templates") if templates else None,
            "engineers": tuple(e.lower() for e in values.get("engineers", ())),
        }, path))
    _no_two_alike(out)
    return tuple(out)


def _one_mailbox(where: str, values: dict[str, Any], path: Callable[[str, str], Path]) -> MailboxSettings:
    token_file = values["oauth2_token_file"]
    mailbox = MailboxSettings(**{
        **values, "path": path(values["path"], f"{where} path"),
        "oauth2_token_file": str(path(token_file, f"{where} oauth2_token_file")) if token_file else "",
    })
    if mailbox.kind == "imap" and not mailbox.username:
        raise ConfigError(f"{where} username: expected the IMAP login name when kind = 'imap'")
    return mailbox


def _no_two_alike(mailboxes: list[MailboxSettings]) -> None:
    """Two mailboxes that read the same mail would thread it twice, and two that send from one address
    could not tell their cases apart: refuse both."""
    seen: dict[tuple[str, ...], str] = {}
    for m in mailboxes:
        source = (("imap", m.host.lower(), str(m.port), m.username.lower(), m.folder) if m.kind == "imap"
                  else ("maildir", str(m.path)))
        for what, key in (("reads the same mail as", source), ("sends from the same address as",
                                                                ("address", m.address.lower()) if m.address else ())):
            if not key:
                continue
            if key in seen:
                raise ConfigError(f"[mailboxes.{m.name}]: {what} [mailboxes.{seen[key]}]")
            seen[key] = m.name


def _nudge(values: dict[str, Any]) -> NudgeSettings:
    nudge = NudgeSettings(**values)
    after, escalate = nudge.after_business_hours, nudge.escalate_after_business_hours
    if after and escalate and escalate <= after:
        # The leads hear of a reply after the engineers did, never before.
        raise ConfigError(f"[nudge] escalate_after_business_hours: expected more than after_business_hours "
                          f"({after}), got {escalate}")
    return nudge


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
