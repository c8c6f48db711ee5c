"""The settings every part of the bot reads: frozen dataclasses, one per config.toml table (`config.py` reads
and validates the file into them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo


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
    instance_name: str = ""  # names this process in logs and `mailbot status`; "" → `<hostname>:<pid>`

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
    # Several mailboxes (`[mailboxes.NAME]`): the name, and what the cases this mailbox opens take instead of
    # the global `[bot] address`, `[bot] language`, the templates folder and `[engineers]` ("" / None / (): the
    # global one). `[mailbox]` alone is the mailbox `default` with no overrides.
    name: str = "default"
    address: str = ""
    language: str = ""
    templates: Path | None = None
    engineers: tuple[str, ...] = ()


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
class StoreSettings:
    kind: str = "files"  # "files": the embedded default; "postgresql": shared by every instance
    dsn_env: str = "MAILBOT_DATABASE_URL"  # the environment variable that holds the libpq URL or conninfo
    lease_seconds: float = 15.0  # a mailbox whose instance went silent this long is taken over


@dataclass(frozen=True)
class NudgeSettings:
    """The engineers' side (issue 17): a customer's reply unanswered this many business hours → a nudge to the
    case's engineers; still unanswered → one mail to the leads. 0 turns either off."""

    after_business_hours: int = 4
    escalate_after_business_hours: int = 16
    leads: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportSettings:
    """`mailbot report` by mail: the page goes to these addresses on the first business day of each week
    (the week before's figures); empty = not sent."""

    weekly_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class DigestSettings:
    at: str = "09:00"  # local time ([bot] timezone) of each business day's digest; "" = off

    @property
    def time(self) -> time | None:
        return time.fromisoformat(self.at) if self.at else None


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
    store: StoreSettings = StoreSettings()
    nudge: NudgeSettings = NudgeSettings()
    digest: DigestSettings = DigestSettings()
    report: ReportSettings = ReportSettings()
    # Every mailbox of the deployment, `mailbox` first (`[mailbox]` alone: just that one, named "default").
    mailboxes: tuple[MailboxSettings, ...] = ()

    @property
    def templates_dir(self) -> Path:
        return self.mailbox.templates or Path(__file__).resolve().parent.parent / "templates"

    @property
    def all_mailboxes(self) -> tuple[MailboxSettings, ...]:
        return self.mailboxes or (self.mailbox,)

    def for_mailbox(self, name: str) -> Settings:
        """The settings one mailbox works with: its own mailbox, and its address, language, templates and
        engineers where it sets them. Unknown names are a ConfigError (a typo in `--mailbox`)."""
        chosen = next((m for m in self.all_mailboxes if m.name == name), None)
        if chosen is None:
            known = ", ".join(m.name for m in self.all_mailboxes)
            raise ConfigError(f"no mailbox {name!r} in the config (mailboxes: {known})")
        bot = replace(self.bot, address=chosen.address or self.bot.address,
                      language=chosen.language or self.bot.language)
        engineers = self.engineers
        if chosen.engineers:
            engineers = EngineerSettings(addresses=tuple(e for e in chosen.engineers if "@" in e),
                                         domains=tuple(e for e in chosen.engineers if "@" not in e))
        return replace(self, bot=bot, mailbox=chosen, engineers=engineers)
