"""Mail built to be slow or too big cannot stall the bot: every step stays linear, bigger mail is quarantined
unread, a parse that runs out of time is quarantined, and a batch holds a bounded number of bytes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailbot.config import from_dict
from mailbot.mailbox.maildir import MaildirMailbox, deliver
from mailbot.mailbox.memory import MemoryMailbox
from mailbot.models import InboundMail, ParseFailure
from mailbot.parse import parse
from mailbot.parsers import MIN_BATCH, InlineParser, PoolParser
from mailbot.service import Service, make_calendar
from mailbot.store import Store
from mailbot.transport import MemoryTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import hostile  # noqa: E402
from trustlife import CUSTOMER, ENGINEER, SUBJECT, at, mail  # noqa: E402

N_KB = 16  # each run ≥ ~30 ms at 4n on this machine; the whole scaling test ~30 s


@pytest.mark.parametrize("shape", list(hostile.SHAPES))
def test_each_hostile_shape_takes_linear_time_through_parse_and_apply(shape: str, tmp_path: Path) -> None:
    """n and 4n KB through parse → match → commands → redaction → language → out-of-office → apply: a linear
    path takes ~4 times as long, a quadratic one ~16 times."""
    s = hostile.settings(tmp_path)
    make = hostile.SHAPES[shape]
    small, large = (hostile.measure(s, make(kb), repeat=3) for kb in (N_KB, 4 * N_KB))
    ratio = large / max(small, 1e-3)  # a run below a millisecond is noise, not a measure
    assert ratio < 8, f"{shape}: {N_KB} KB {small:.3f} s, {4 * N_KB} KB {large:.3f} s (×{ratio:.1f})"


def test_a_megabyte_of_each_shape_is_handled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shape at 1 MB goes all the way through (the seconds are printed, not asserted: a busy machine
    must not fail the suite; bench/hostile.py is the measurement)."""
    s = hostile.settings(tmp_path)
    times = {}
    for shape, make in hostile.SHAPES.items():
        raw = make(1024)
        assert len(raw) >= 1024 * 1024 * 0.9, shape
        start = time.perf_counter()
        _parse_s, _apply_s, result = hostile.handle(s, raw, both=False)  # the customer's: every step
        times[shape] = time.perf_counter() - start
        assert isinstance(result, InboundMail | ParseFailure)
    with capsys.disabled():
        print("\n1 MB hostile mail, seconds (slowest 8):",
              ", ".join(f"{k} {v:.2f}" for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:8]))


def _service(make_settings: Callable[..., object], box: object, parser: object | None = None, **mailbox: object):
    settings = make_settings(mailbox=mailbox) if mailbox else make_settings()
    return Service(settings, Store(None), box, MemoryTransport(), make_calendar(settings), parser=parser)


def test_mail_over_max_message_bytes_is_quarantined_unparsed_and_kept(make_settings) -> None:
    box = MemoryMailbox()
    big = mail(CUSTOMER, "casebot@support.example", "x" * 5000, "2026-04-13T10:00:00+08:00")
    small = mail(ENGINEER, CUSTOMER, "您好", "2026-04-13T10:01:00+08:00")
    big_ref, small_ref = box.deliver(big), box.deliver(small)
    seen: list[bytes] = []

    def watching_parse(raw: bytes) -> InboundMail | ParseFailure:
        seen.append(raw)
        return parse(raw)

    service = _service(make_settings, box, InlineParser(watching_parse), max_message_bytes=4096)
    report = service.ingest(at("2026-04-13T10:05:00+08:00"))
    assert report.quarantined == 1 and report.ingested == 1
    raw, reason = box.quarantined[big_ref]
    assert raw == big  # kept, never deleted
    assert reason == f"message of {len(big):,} bytes exceeds max_message_bytes (4,096)"
    assert big not in seen and small in seen
    assert small_ref in box.processed


def test_a_maildir_message_over_the_limit_is_never_read(tmp_path: Path) -> None:
    box = MaildirMailbox(tmp_path / "md")
    deliver(box.path, b"Subject: big\r\n\r\n" + b"x" * 10_000, name="big")
    deliver(box.path, b"Subject: small\r\n\r\nx", name="small")
    fetched = {m.ref: m for m in box.fetch_new(max_message_bytes=4096)}
    assert fetched["big"].raw == b"" and fetched["big"].length == 10_016
    assert fetched["small"].raw.endswith(b"x") and fetched["small"].size is None


def _endless(raw: bytes) -> InboundMail | ParseFailure:
    """A parse that never ends on the mail that says so (a stand-in for a shape nobody has found yet)."""
    if b"endless" in raw:
        while True:
            time.sleep(0.05)
    return parse(raw)


def test_a_parse_over_the_time_budget_is_quarantined_and_the_service_goes_on(make_settings) -> None:
    box = MemoryMailbox()
    stuck = box.deliver(mail(CUSTOMER, "casebot@support.example", "endless", "2026-04-13T10:00:00+08:00"))
    after = box.deliver(mail(ENGINEER, CUSTOMER, "您好", "2026-04-13T10:01:00+08:00", subject=SUBJECT))
    service = _service(make_settings, box, InlineParser(_endless), parse_timeout_seconds=1)
    start = time.monotonic()
    report = service.ingest(at("2026-04-13T10:05:00+08:00"))
    assert time.monotonic() - start < 10
    assert box.quarantined[stuck][1] == "parsing took longer than parse_timeout_seconds (1 s)"
    assert after in box.processed and report.opened == 1


def test_a_parse_worker_stops_a_parse_at_the_time_budget() -> None:
    raws = [mail(CUSTOMER, "casebot@support.example", "endless" if n == 5 else f"mail {n}",
                 "2026-04-13T10:00:00+08:00") for n in range(MIN_BATCH)]
    pool = PoolParser(2, _endless)
    pool.start()
    try:
        if not pool.running:
            pytest.skip("no parse workers here (threads running)")
        results = list(pool.parse_all(raws, timeout=1))
        assert pool.running  # the workers stopped the parse themselves: nobody was killed
    finally:
        pool.close()
    assert isinstance(results[5], ParseFailure) and "parse_timeout_seconds (1 s)" in results[5].reason
    assert all(isinstance(r, InboundMail) for n, r in enumerate(results) if n != 5)


BIG = 4 * 2**20  # twelve of them: 48 MB, more than the default batch budget (32 MB)


def _twelve_big() -> list[bytes]:
    return [f"Subject: {n}\r\nMessage-ID: <big{n}@x>\r\n\r\n".encode() + b"x" * BIG for n in range(12)]


def test_a_batch_of_big_mail_holds_at_most_the_budget_and_one_mail(tmp_path: Path) -> None:
    settings = from_dict({}, tmp_path)
    budget = settings.mailbox.max_batch_bytes
    memory = MemoryMailbox()
    maildir = MaildirMailbox(tmp_path / "md")
    for raw in _twelve_big():
        memory.deliver(raw)
        deliver(maildir.path, raw)
    for box in (memory, maildir):
        got: list[str] = []
        while True:
            batch = box.fetch_new(limit=500, skip=got, max_bytes=budget,
                                  max_message_bytes=settings.mailbox.max_message_bytes)
            if not batch:
                break
            held = sum(len(m.raw) for m in batch)
            assert held <= budget + max(len(m.raw) for m in batch), type(box).__name__
            got += [m.ref for m in batch]
        assert len(got) == 12  # nothing left behind


def test_one_mail_bigger_than_the_batch_budget_still_moves() -> None:
    box = MemoryMailbox()
    box.deliver(b"Subject: x\r\n\r\n" + b"x" * 5000)
    assert len(box.fetch_new(max_bytes=1024)) == 1


@pytest.mark.parametrize("key,value", [("max_message_bytes", 10), ("parse_timeout_seconds", 0),
                                       ("max_batch_bytes", "lots")])
def test_bad_limits_are_one_line_config_errors(tmp_path: Path, key: str, value: object) -> None:
    from mailbot.config import ConfigError

    with pytest.raises(ConfigError, match=rf"^\[mailbox\] {key}: "):
        from_dict({"mailbox": {key: value}}, tmp_path)
