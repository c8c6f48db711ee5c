"""The Maildir adapter and its in-memory twin agree on what fetch_new returns: oldest first, within the
limit, leaving out the refs the service is still working on, and never what was marked processed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.mailbox.memory import MemoryMailbox


def mail(n: int) -> bytes:
    return f"Message-ID: <m{n}@customer.example>\r\nSubject: mail {n}\r\n\r\nbody {n}\r\n".encode()


@pytest.fixture(params=["maildir", "memory"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> MaildirMailbox | MemoryMailbox:
    if request.param == "memory":
        memory = MemoryMailbox()
        for n in range(1, 6):
            memory.deliver(mail(n))
        return memory
    for n in range(1, 6):
        deliver(tmp_path / "maildir", mail(n), name=f"{n:03d}.test")
    return MaildirMailbox(tmp_path / "maildir")


def bodies(fetched: list) -> list[str]:
    return [m.raw.decode().rsplit(" ", 1)[1].strip() for m in fetched]


def test_the_next_batch_is_read_while_the_last_is_still_pending(box: MaildirMailbox | MemoryMailbox) -> None:
    first = box.fetch_new(limit=2)
    second = box.fetch_new(limit=2, skip={m.ref for m in first})
    assert bodies(first) == ["1", "2"] and bodies(second) == ["3", "4"]
    box.mark_processed([m.ref for m in first])
    assert bodies(box.fetch_new()) == ["3", "4", "5"]
    assert bodies(box.fetch_new(skip={m.ref for m in second})) == ["5"]
    assert box.fetch_new(limit=0) == []
