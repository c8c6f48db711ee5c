"""The SMTP accepted log in the database, shared by every instance: a mail the old leader's server accepted
(final 250) is known to the instance that takes over, so it is never sent again (exactly-once across a
failover, as the file log gives on one machine)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from mailbot.store.postgresql.safe import escape_text

log = logging.getLogger("mailbot")

KEEP_DAYS = 30  # only the mail in hand at a crash matters; a month is far more than any retry window


class SharedAcceptedLog:
    """`AcceptedLog`'s interface (`add`, `in`) over the `smtp_accepted` table. Its own autocommit connection:
    an accepted mail is a fact about the world, durable at once and never fenced or rolled back with a batch."""

    def __init__(self, dsn: str, connect_timeout: int = 10) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._lock = threading.Lock()
        self._pruned = False

    def _db(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout)
        return self._conn

    def add(self, message_id: str) -> None:
        mid = escape_text(" ".join(message_id.split()))
        with self._lock:
            db = self._db()
            db.execute("INSERT INTO smtp_accepted (message_id) VALUES (%s) ON CONFLICT DO NOTHING", (mid,))
            if not self._pruned:
                self._pruned = True
                db.execute(f"DELETE FROM smtp_accepted WHERE at < now() - interval '{KEEP_DAYS} days'")

    def __contains__(self, message_id: object) -> bool:
        if not isinstance(message_id, str):
            return False
        mid = escape_text(" ".join(message_id.split()))
        with self._lock:
            row = self._db().execute("SELECT 1 FROM smtp_accepted WHERE message_id = %s", (mid,)).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
