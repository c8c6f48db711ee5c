"""The installation's secret that keys its Message-IDs (`render.compose.make_message_id`).

The bot's Message-IDs must follow from the decision (exactly-once finds a mail again by its id after a
crash), but not from what everyone on the thread knows — a case key and the date of the engineer's mail —
or an outsider could send a mail under the id of the next reminder first (the bot would never record it)
or forge a delivery report about it. So the id also hashes this secret: made once, kept in the store as a
checkpoint (durable at once, carried by `store dump`/`load`), the same for every instance of a PostgreSQL
store (its schema migration makes it there, under the migration lock, so two instances never race).
"""

from __future__ import annotations

import secrets
from typing import Any

CHECKPOINT = "secret:message-ids"


def message_id_secret(store: Any) -> str:
    """The store's secret; "" for a store that has none yet (a reading command before the first `run`)."""
    doc = store.get_checkpoint(CHECKPOINT)
    value = doc.get("secret") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""


def ensure_message_id_secret(store: Any) -> str:
    """The store's secret, made now if it has none (only by the store's one writer: `run`, `store init`)."""
    found = message_id_secret(store)
    if not found:
        store.set_checkpoint(CHECKPOINT, {"secret": secrets.token_hex(16)})
        found = message_id_secret(store)
    return found
