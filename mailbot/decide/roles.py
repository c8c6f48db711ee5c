"""Who wrote a mail: an engineer (by address or domain), the bot itself, or a customer."""

from __future__ import annotations

from collections.abc import Collection

from mailbot.config import EngineerSettings
from mailbot.models import InboundMail, Role


def role_of(address: str, engineers: EngineerSettings, bots: str | Collection[str]) -> Role:
    """`bots`: the bot's address, or every address of the deployment's mailboxes (lower case): a mailbox of
    the bot that an engineer copies in is the bot, never a customer to chase."""
    addr = address.strip().lower()
    if not addr:
        return Role.OTHER
    if addr == bots.lower() if isinstance(bots, str) else addr in bots:
        return Role.BOT
    if addr in engineers.addresses or addr.rpartition("@")[2] in engineers.domains:
        return Role.ENGINEER
    return Role.CUSTOMER


def sender_role(mail: InboundMail, engineers: EngineerSettings, bots: str | Collection[str]) -> Role:
    """The role of a mail's author. Engineer only when From names exactly one mailbox (RFC 5322 §3.6.2
    allows several): with `From: liqi@support.example, x@evil.example` nobody can say which one wrote it,
    and a From that names none (only Sender, or an address that does not parse) proves nothing. Such a
    mail is read as an outsider's (customer), so its commands are refused and reported."""
    role = role_of(mail.from_addr, engineers, bots)
    if role == Role.ENGINEER and mail.from_count != 1:
        return Role.CUSTOMER
    return role
