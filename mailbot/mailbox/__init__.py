"""Mailbox adapters: where raw mail comes from and where it goes once handled."""
