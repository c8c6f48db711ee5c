"""Who wrote a mail: an engineer (by address or domain), the bot itself, or a customer."""

from __future__ import annotations

from mailbot.config import EngineerSettings
from mailbot.models import Role


def role_of(address: str, engineers: EngineerSettings, bot_address: str) -> Role:
    addr = address.strip().lower()
    if not addr:
        return Role.OTHER
    if addr == bot_address.lower():
        return Role.BOT
    if addr in engineers.addresses or addr.rpartition("@")[2] in engineers.domains:
        return Role.ENGINEER
    return Role.CUSTOMER
