"""mailbot: keeps support cases moving by email."""

# Charset aliases must be registered before anything decodes mail (see charsets.py).
from mailbot import charsets as _charsets  # noqa: F401

__version__ = "0.1.0"
