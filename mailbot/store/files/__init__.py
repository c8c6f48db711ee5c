"""The files engine, the embedded default: TinyDB-format JSON documents under `<state_dir>/store`.

`engine` (the port's methods) is built from `tables` (hash-sharded documents), `runs` (the Message-ID index
and finished mail as merged runs), `journal` (the atomic commit) and `layout` (layout.json, the migration
from layout 3)."""

from mailbot.store.files.engine import Store
from mailbot.store.files.layout import LAYOUT_VERSION, SHARDS

__all__ = ["LAYOUT_VERSION", "SHARDS", "Store"]
