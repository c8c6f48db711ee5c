"""mailbot: keeps support cases moving by email."""

# Charset aliases must be registered before anything decodes mail (see parse/charsets.py).
from mailbot.parse import charsets as _charsets  # noqa: F401

__version__ = "0.1.0"
