"""Authentication-Results (RFC 8601) read by its grammar, and the verdict on a mail that claims an engineer.

Each row is a header as a receiving server (or a forger) writes it, and what the bot must make of it.
"""

from __future__ import annotations

import random
import time

import pytest

from mailbot.decide.authres import aligned, parse_header, verdict
from mailbot.decide.policy import authentication_failed
from mailbot.models import InboundMail
from mailbot.parse import parse

MX = "mx.support.example"
TRUSTED = (MX,)
FROM = "support.example"

# --- the grammar ------------------------------------------------------------------------------------

PARSED = [
    (f"{MX}; dkim=pass header.d=support.example header.s=s1",
     (MX, [("dkim", "pass", [("header.d", "support.example"), ("header.s", "s1")])])),
    # a property value is everything up to a blank, `;` or comment: `=` and `@` belong to it
    (f"{MX}; spf=pass smtp.mailfrom=dkim=pass@evil.example",
     (MX, [("spf", "pass", [("smtp.mailfrom", "dkim=pass@evil.example")])])),
    # quoted values (authres 1.2.0 dropped this one silently), comments skipped, even nested ones
    (f'{MX}; dkim=pass (good (really) sig) header.d="support.example" header.b=abc+/=',
     (MX, [("dkim", "pass", [("header.d", "support.example"), ("header.b", "abc+/=")])])),
    (f'{MX}; dkim=pass header.i="john doe"@support.example',
     (MX, [("dkim", "pass", [("header.i", "john doe@support.example")])])),
    (f"  ( a comment ) {MX} 1 ; DKIM = Pass header . D = Support.Example",
     (MX, [("dkim", "pass", [("header.d", "Support.Example")])])),
    (f"{MX}; dkim/1=pass header.d=a.example", (MX, [("dkim", "pass", [("header.d", "a.example")])])),
    (f"{MX}; none", (MX, [])),
    (f'"{MX}"; auth=pass smtp.auth=liqi', (MX, [("auth", "pass", [("smtp.auth", "liqi")])])),
    # Microsoft 365 writes bare key=value pairs outside the grammar, and a trailing `;`: read past
    (f"{MX}; dmarc=pass action=none header.from=support.example;compauth=pass reason=100;",
     (MX, [("dmarc", "pass", [("header.from", "support.example")]), ("compauth", "pass", [])])),
    # not the grammar: no result
    (f"{MX}", None),
    (f"{MX}; dkim", None),
    (f"{MX}; dkim=", None),
    (f"{MX}; dkim=pass (unclosed comment", None),
    (f'{MX}; dkim=pass header.d="unclosed', None),
    (f"{MX}; dkim=pass header.d=a.example junk", None),
    (f"{MX}; =pass", None),
    ("", None),
    ("(only a comment)", None),
]


@pytest.mark.parametrize(("header", "expected"), PARSED)
def test_parse_header(header: str, expected: tuple[str, list[tuple[str, str, list[tuple[str, str]]]]] | None) -> None:
    got = parse_header(header)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.authserv_id, [(r.method, r.result, list(r.properties)) for r in got.results]) == expected


def test_reason_is_kept_apart_from_properties() -> None:
    got = parse_header(f'{MX}; dkim=neutral reason="dkim=pass header.d=support.example" header.d=x.example')
    assert got is not None
    [r] = got.results
    assert (r.result, r.reason, r.prop("header.d")) == ("neutral", "dkim=pass header.d=support.example", "x.example")


# --- alignment ---------------------------------------------------------------------------------------

ALIGNED = [
    ("support.example", "support.example", True),
    ("Support.Example.", "support.example", True),
    ("support.example", "mail.support.example", True),  # the From domain under the signing domain
    ("mail.support.example", "support.example", False),  # the other way needs a public-suffix list
    ("evilsupport.example", "support.example", False),
    ("support.example", "evilsupport.example", False),
    ("example", "support.example", False),  # a top-level domain never aligns
    ("", "support.example", False),
    ("support.example", "", False),
]


@pytest.mark.parametrize(("signing", "from_domain", "expected"), ALIGNED)
def test_aligned(signing: str, from_domain: str, expected: bool) -> None:
    assert aligned(signing, from_domain) is expected


# --- the verdict -------------------------------------------------------------------------------------

OK = None
NO_PASS = "no DKIM/DMARC pass aligned with support.example"
NOT_TRUSTED = "no Authentication-Results from the trusted server"

VERDICTS = [
    ([f"{MX}; dkim=pass header.d=support.example"], OK),
    ([f"{MX}; dkim=pass header.i=@support.example"], OK),
    ([f'{MX}; dkim=pass header.d="support.example"'], OK),
    ([f"{MX}; dmarc=pass (p=reject dis=none) header.from=support.example"], OK),
    ([f"{MX.upper()}; dkim=pass header.d=SUPPORT.EXAMPLE"], OK),  # authserv-id and domains: any case
    ([f"{MX} 1; spf=pass smtp.mailfrom=support.example; dkim=pass header.d=support.example"], OK),
    # Gmail's and Microsoft 365's own words
    ([f"{MX}; dkim=pass header.i=@support.example header.s=20230601 header.b=AbCd1234; spf=pass "
      "(google.com: domain of liqi@support.example designates 192.0.2.1 as permitted sender) "
      "smtp.mailfrom=liqi@support.example; dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=support.example"], OK),
    ([f"{MX}; spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=support.example; dkim=pass (signature was "
      "verified) header.d=support.example;dmarc=pass action=none header.from=support.example;compauth=pass "
      "reason=100"], OK),
    # the forgery: one property whose value happens to read `dkim=pass…`
    ([f"{MX}; spf=pass smtp.mailfrom=dkim=pass@evil.example"], NO_PASS),
    ([f"{MX}; spf=fail (dkim=pass header.d=support.example) smtp.mailfrom=support.example"], NO_PASS),
    ([f'{MX}; dkim=neutral reason="dkim=pass header.d=support.example"'], NO_PASS),
    ([f"{MX}; dkim=pass header.d=evil.example"], NO_PASS),  # a pass, for someone else
    ([f"{MX}; dkim=pass header.d=evilsupport.example"], NO_PASS),
    ([f"{MX}; dkim=pass"], NO_PASS),  # a pass for nobody in particular
    ([f"{MX}; dmarc=pass header.from=evil.example"], NO_PASS),
    ([f"{MX}; dmarc=pass"], NO_PASS),
    ([f"{MX}; spf=pass smtp.mailfrom=support.example"], NO_PASS),  # SPF speaks for the envelope only
    ([f"{MX}; none"], NO_PASS),
    # RFC 8601 has no encoded words: one in a value is just text
    ([f"{MX}; dkim=pass header.d==?utf-8?q?support=2Eexample?="], NO_PASS),
    # only our own server's headers count
    (["evil.example; dkim=pass header.d=support.example; dmarc=pass header.from=support.example"], NOT_TRUSTED),
    ([f"{MX}.evil.example; dkim=pass header.d=support.example"], NOT_TRUSTED),
    ([], NOT_TRUSTED),
    # a fail from our server wins over a pass, whichever header comes first
    ([f"{MX}; dkim=pass header.d=support.example", f"{MX}; dkim=fail header.d=support.example"], "dkim failed"),
    ([f"{MX}; dkim=fail header.d=support.example", f"{MX}; dkim=pass header.d=support.example"], "dkim failed"),
    ([f"{MX}; dkim=pass header.d=support.example; dmarc=fail header.from=support.example"], "dmarc failed"),
    ([f"{MX}; dkim=permerror header.d=support.example; dmarc=pass header.from=support.example"], "dkim failed"),
    ([f"{MX}; dkim=temperror header.d=support.example"], "dkim failed"),
    # ...but a forger's fail (another authserv-id) changes nothing
    ([f"{MX}; dkim=pass header.d=support.example", "evil.example; dkim=fail; dmarc=fail"], OK),
    # our server's own header is the topmost one: a lower one that claims our id and a pass was written
    # by the sender (and not stripped), so it cannot make up for our server finding no signature
    ([f"{MX}; dkim=none; dmarc=none", f"{MX}; dkim=pass header.d=support.example"], NO_PASS),
    ([f"{MX}; dkim=pass header.d=support.example", f"{MX}; dkim=none"], OK),
    # a header from our server that does not parse is not a pass
    ([f"{MX}; dkim=pass header.d=support.example", f"{MX}; dkim=pass (unclosed"],
     f"unreadable Authentication-Results from {MX}"),
    (["evil.example; dkim=pass (unclosed", f"{MX}; dkim=pass header.d=support.example"], OK),
]


@pytest.mark.parametrize(("headers", "expected"), VERDICTS)
def test_verdict(headers: list[str], expected: str | None) -> None:
    got = verdict(headers, TRUSTED, FROM)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.startswith(expected), got


def test_the_failure_names_the_server_and_the_result() -> None:
    got = verdict([f"{MX}; dkim=fail header.d=support.example"], TRUSTED, FROM)
    assert got == f"dkim failed according to {MX}: dkim=fail header.d=support.example"


def test_no_from_domain_is_never_a_pass() -> None:
    assert verdict([f"{MX}; dkim=pass header.d=support.example"], TRUSTED, "") == "no From domain to authenticate"


# --- through parse and decide -------------------------------------------------------------------------


def inbound(*headers: str) -> InboundMail:
    raw = "\r\n".join([*headers, "Subject: #close", "Message-ID: <a@support.example>", "", "#close", ""])
    mail = parse(raw.encode())
    assert isinstance(mail, InboundMail), mail
    return mail


def test_a_folded_header_is_read_whole() -> None:
    mail = inbound("From: liqi@support.example",
                   f"Authentication-Results: {MX};\r\n\tdkim=pass\r\n header.d=support.example")
    assert authentication_failed(mail, TRUSTED) is None


def test_an_encoded_word_in_the_header_is_not_decoded() -> None:
    # decoded, this would read `mx.support.example; dkim=pass header.d=support.example`
    word = "=?utf-8?b?bXguc3VwcG9ydC5leGFtcGxlOyBka2ltPXBhc3MgaGVhZGVyLmQ9c3VwcG9ydC5leGFtcGxl?="
    mail = inbound("From: liqi@support.example", f"Authentication-Results: {word}")
    assert mail.authentication_results == (word,)
    assert authentication_failed(mail, TRUSTED) == NOT_TRUSTED


def test_two_from_addresses_are_never_authenticated() -> None:
    mail = inbound("From: liqi@support.example, x@evil.example",
                   f"Authentication-Results: {MX}; dkim=pass header.d=support.example")
    assert mail.from_count == 2
    assert authentication_failed(mail, TRUSTED) is not None


def test_without_a_trusted_server_nothing_is_checked() -> None:
    # `[security] trust_authentication_results` unset: the old behaviour, documented in the README
    mail = inbound("From: liqi@support.example", "Authentication-Results: evil.example; dkim=fail")
    assert authentication_failed(mail, ()) is None


# --- hostile input: linear time, never an exception ---------------------------------------------------


# Each shape as a function of n; read at n and 4n, the time may grow about 4× (linear), never 16×.
HOSTILE_HEADERS = {
    "unclosed comments": lambda n: f"{MX}; dkim=pass " + "(" * n,
    "nested comments": lambda n: f"{MX}; dkim=pass " + "(" * (n // 2) + ")" * (n // 2),
    "many results": lambda n: f"{MX}; " + "dkim=pass header.d=x; " * (n // 21),
    "unclosed quote of backslashes": lambda n: f'{MX}; dkim=pass header.d="' + "\\" * n,
    "one long value": lambda n: f"{MX}; dkim=pass header.d=" + "a" * n,
    "one long word": lambda n: f"{MX}; " + "a" * n,
    "empty results": lambda n: f"{MX}" + " ;" * (n // 2),
    "properties without values": lambda n: f"{MX}; dkim=pass " + "x.y=" * (n // 4),
}


def _best_of_3(header: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        verdict([header] * 5, TRUSTED, FROM)
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("shape", HOSTILE_HEADERS)
def test_long_hostile_headers_are_read_in_linear_time(shape: str) -> None:
    # A scaling check, not a time limit: sizes big enough to measure, a ratio far below quadratic's 16.
    make = HOSTILE_HEADERS[shape]
    small, big = _best_of_3(make(15_000)), _best_of_3(make(60_000))
    assert big / max(small, 1e-4) < 8, (shape, small, big)


def test_random_headers_never_raise() -> None:
    rng = random.Random(8601)
    alphabet = 'ab.=;()"\\ @/1\t\r\nxé=?'
    for _ in range(3000):
        header = MX + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        got = verdict([header], TRUSTED, FROM)
        assert got is None or isinstance(got, str)
