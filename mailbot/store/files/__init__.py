"""The files engine, the embedded default: TinyDB-format JSON documents under `<state_dir>/store`."""

from mailbot.store.files.engine import LAYOUT_VERSION, SHARDS, Store

__all__ = ["LAYOUT_VERSION", "SHARDS", "Store"]
