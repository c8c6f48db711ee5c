"""Where rendered mail goes: `outboxdir` (a folder, the embedded default), `smtp` (a real server), `memory`
(the twin for tests); `base` says what they share (the Transport protocol and its two kinds of failure)."""
