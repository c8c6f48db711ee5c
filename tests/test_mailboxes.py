"""The Maildir adapter and its in-memory twin agree on what fetch_new returns: oldest first, within the
limit, leaving out the refs the service is still working on, and never what was marked processed."""

from __future__ import annotations

import os
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


def test_a_folder_or_a_pipe_in_new_holds_nothing_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "maildir"
    deliver(root, mail(1), name="002.mail")
    (root / "new" / "001.folder").mkdir()
    os.mkfifo(root / "new" / "000.pipe")  # reading it would wait for ever
    box = MaildirMailbox(root)
    assert bodies(box.fetch_new(limit=1)) == ["1"]
    assert bodies(box.fetch_new()) == ["1"]
    assert caplog.text.count("is not a mail file") == 2  # said once each
    box.mark_processed(["002.mail"])
    assert sorted(p.name for p in (root / "new").iterdir()) == ["000.pipe", "001.folder"]  # left as they are
