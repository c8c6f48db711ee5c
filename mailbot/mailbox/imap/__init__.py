"""The IMAP mailbox (`mailbox.ImapMailbox`): connection and login (`link`), moves and flags (`folders`), IDLE
(`idle`), what the Sent folder tells (`sent`), and the UID checkpoint arithmetic (`checkpoint`, pure)."""
