"""The store: the case file behind one domain API (`port.StorePort`) that every engine serves.

Engines: `files` (the embedded default, `mailbot.store.files`), `memory` (the twin), and `postgresql`.
`Store` stays the name of the files engine, so `Store(None)` is still the files engine kept in memory.
"""

from mailbot.storage import StoreCorrupt
from mailbot.store.codec import case_from_doc, case_to_doc
from mailbot.store.files import Store

__all__ = ["Store", "StoreCorrupt", "case_from_doc", "case_to_doc"]
