"""Raw bytes → InboundMail (or ParseFailure), never raising: the repair, body, header, address and flag
readers put together."""

from __future__ import annotations

import hashlib
from email.message import Message

import mailparser

from mailbot.models import Attachment, Flag, InboundMail, ParseFailure
from mailbot.parse.addresses import _address_problems, _addresses, _mailboxes
from mailbot.parse.body import TooManyParts, _attachments, _body_text, _MailParser
from mailbot.parse.flags import _bounced_original, _flags
from mailbot.parse.headers import _FOLD, _charset_hint, _date, _Headers, _ids, _unraw, decode_header_value
from mailbot.parse.quotes import split_reply
from mailbot.parse.redact import redact
from mailbot.parse.repair import _repair_header_block, _skip_stray_lines


def parse(raw: bytes) -> InboundMail | ParseFailure:
    """Decode one message. A message we cannot make sense of becomes a ParseFailure with a reason."""
    if not raw or not raw.strip():
        return ParseFailure("empty message")
    # Tolerate what mail stores put in front of a message: blank lines and an mbox "From " line.
    raw = raw.lstrip(b"\r\n")
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    raw, skipped = _skip_stray_lines(raw)
    raw, repaired = _repair_header_block(raw)
    try:
        parsed = _MailParser.from_bytes(raw)
    except TooManyParts as e:
        return ParseFailure(str(e))
    except Exception as e:  # mail-parser raises a zoo of exception types on broken input
        return ParseFailure(f"mail-parser could not read the message: {type(e).__name__}: {e}"[:300])
    try:
        return _build(parsed, raw, (*skipped, *repaired))
    except RecursionError:
        return ParseFailure("MIME structure nested too deeply to read")
    except Exception as e:  # last line of defence: quarantine with a reason, never crash the service
        return ParseFailure(f"unreadable message: {type(e).__name__}: {e}"[:300])


def _missing_headers(heads: _Headers, from_boxes: list[tuple[str, str | None]], from_addr: str) -> list[str]:
    """From and Subject that a mail lacks or that name nobody, in words: never lost silently."""
    problems = []
    if "From" not in heads:
        author = "the author is taken from Sender" if from_addr else "the mail is from nobody"
        problems.append(f"no From header: {author}")
    elif not from_addr:
        problems.append(f"From names no readable address ({len(from_boxes)} mailbox(es))")
    if "Subject" not in heads:
        problems.append("no Subject header")
    return problems


def _build(
    parsed: mailparser.MailParser, raw: bytes, repairs: tuple[str, ...] = ()
) -> InboundMail | ParseFailure:
    msg: Message = parsed.message
    if not msg.keys():
        return ParseFailure("no mail headers found")
    heads = _Headers(msg)
    # The declared charset is only a guess for raw 8-bit header bytes: look for it only when there are some.
    hint = _charset_hint(msg) if heads.any_8bit() else None
    subject = decode_header_value(heads.first("Subject"), hint)
    from_boxes = _mailboxes(heads, "From", hint=hint)
    # Sender stands in only when From names nobody at all; a From that names someone unreadable (an
    # encoded word where the address belongs) leaves no author, and Sender must not supply one. Every
    # mailbox counts, readable or not: only a From of exactly one can be an engineer (roles.sender_role).
    if from_boxes:
        senders = [(n, a) for n, a in from_boxes if a is not None]
    else:
        senders = _addresses(heads, "Sender", hint=hint)
    from_name, from_addr = senders[0] if senders else ("", "")
    flags, reasons = _flags(msg, heads, subject, from_addr)
    message_id = next(iter(_ids(heads, "Message-ID")), "")
    synthesized = not message_id
    if synthesized:
        message_id = synthetic_id(raw)
    body = _body_text(parsed)
    new_text, _history = split_reply(body)
    is_dsn, bounced_subject, bounced_ids, bounced_rcpts = (False, "", (), ())
    if Flag.BOUNCE in flags:
        is_dsn, bounced_subject, bounced_ids, bounced_rcpts = _bounced_original(msg, hint)
    return_path = heads.first("Return-Path")
    return InboundMail(
        message_id=message_id,
        subject=redact(subject),  # people paste passwords into subjects too; the case keeps what it shows
        from_addr=from_addr,
        from_name=redact(from_name),  # a display name is text the sender chose: it can hold anything
        to=tuple(a for _, a in _addresses(heads, "To", hint=hint)),
        cc=tuple(a for _, a in _addresses(heads, "Cc", hint=hint)),
        date=_date(heads),
        in_reply_to=_ids(heads, "In-Reply-To"),
        references=_ids(heads, "References"),
        new_text=redact(new_text),
        attachments=(attachments := _attachments(parsed)),
        flags=flags,
        flag_reasons=reasons,
        return_path=None if return_path is None else decode_header_value(return_path),
        bounced_subject=redact(bounced_subject),
        bounced_message_ids=bounced_ids,
        bounced_recipients=bounced_rcpts,
        # RFC 8601 has no encoded words: unfolded, never decoded (mailbot.decide.authres reads the grammar).
        authentication_results=tuple(
            _FOLD.sub(" ", _unraw(v)).strip() for v in heads.all("Authentication-Results")
        ),
        message_id_synthesized=synthesized,
        from_count=len(from_boxes),
        is_dsn=is_dsn,
        header_problems=(*repairs, *_missing_headers(heads, from_boxes, from_addr), *_address_problems(heads),
                         *_unread_tnef(attachments, new_text)),
    )


def _unread_tnef(attachments: tuple[Attachment, ...], new_text: str) -> tuple[str, ...]:
    """Outlook's "Rich Text" to an outside address puts the whole text in winmail.dat (TNEF), which the bot
    does not read (no well-kept decoder: tnefparse was last released in 2021): at least say so, where an
    empty answer would say nothing (`mailbot explain`, the case's timeline shows the attachment)."""
    if new_text.strip() or not any(a.content_type.lower() == "application/ms-tnef"
                                   or a.name.lower() == "winmail.dat" for a in attachments):
        return ()
    return ("the text is in winmail.dat (Outlook Rich Text), which is not read: ask the sender for plain text "
            "or HTML",)


def content_digest(mail: InboundMail) -> str:
    """What tells two mails under one Message-ID apart: author, date, subject, own words and attachments —
    fields a copy delivered twice shares, whatever headers each delivery or gateway adds."""
    parts = [mail.from_addr, mail.date.isoformat() if mail.date else "", mail.subject, mail.new_text,
             *(f"{a.name}/{a.size}" for a in mail.attachments)]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def synthetic_id(raw: bytes) -> str:
    """The id a mail without its own is recorded under: deterministic, so that the same mail delivered twice is
    still recorded once — a hash of its bytes without the trace fields the receiving servers put on top
    (RFC 5321 §4.4: Received, Return-Path; and Delivered-To and its kin), which differ between the copies of
    one mail sent To one address and Cc another."""
    return f"<{hashlib.sha256(_without_trace(raw)).hexdigest()[:32]}@mailbot.invalid>"


# Fields a delivery prepends, per copy (lower case): the receiving servers' trace and their verdicts.
_TRACE_FIELDS = (b"received:", b"return-path:", b"delivered-to:", b"x-original-to:", b"x-delivered-to:",
                 b"envelope-to:", b"x-envelope-to:", b"x-rcpt-to:", b"received-spf:", b"authentication-results:",
                 b"arc-seal:", b"arc-message-signature:", b"arc-authentication-results:", b"x-spam-", b"x-virus-")


def _without_trace(raw: bytes) -> bytes:
    """`raw` from the first field that no delivery adds (one pass over the prepended block: linear)."""
    start = 0
    in_trace = False
    while start < len(raw):
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end + 1
        line = raw[start:end]
        if line[:1] in (b" ", b"\t") and in_trace:  # the folded rest of a trace field
            start = end
            continue
        in_trace = line[:40].lower().startswith(_TRACE_FIELDS)
        if not in_trace:
            break
        start = end
    return raw[start:]
