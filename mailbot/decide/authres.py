"""Authentication-Results (RFC 8601) read by its grammar, and the verdict on whether a mail's From domain
was authenticated by our own receiving server — pure, linear-time, never raises.

Why a hand parser: authres 1.2.0 (the PyPI package, last released 2019) silently drops a quoted property
value (`header.d="support.example"`), raises SyntaxError on a stray `(` and takes seconds on a long header;
RFC 8601's grammar is small enough to follow directly. Substring tests are what this replaces:
`smtp.mailfrom=dkim=pass@evil.example` is one property value, not a DKIM pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_HEADER = 16_000  # a header longer than this was not written by a receiving server: read it as unreadable

_WSP = frozenset(" \t\r\n")
# RFC 2045 tspecials end a token (authserv-id); `.` may appear in one (`mx.support.example`).
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
_KEYWORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
# RFC 8601 §2.7: results that mean the signature or the policy check failed; any of them in a trusted
# header wins over a pass elsewhere.
_FAILS = {"dkim": frozenset({"fail", "permerror", "temperror"}), "dmarc": frozenset({"fail"})}


@dataclass(frozen=True)
class MethodResult:
    """One resinfo: `dkim=pass header.d=support.example` → method "dkim", result "pass", properties
    (("header.d", "support.example"),). Method, result and property names lower-case; values as written."""

    method: str
    result: str
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()

    def prop(self, name: str) -> str | None:
        return next((v for k, v in self.properties if k == name), None)

    def describe(self) -> str:
        shown = ("header.d", "header.i", "header.from")
        props = "".join(f" {k}={v}" for k, v in self.properties if k in shown)
        return f"{self.method}={self.result}{props}"


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str  # lower-case
    results: tuple[MethodResult, ...]


class _Malformed(Exception):
    """Raised inside the parser only; parse_header turns it into None."""


class _Scanner:
    """One pass over the header: every method moves `i` forward or leaves it; nothing backtracks."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def end(self) -> bool:
        return self.i >= len(self.s)

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def cfws(self) -> None:
        """RFC 5322 §3.2.2 CFWS: blanks and comments, which nest and may hold quoted-pairs."""
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c in _WSP:
                self.i += 1
            elif c == "(":
                depth = 0
                while self.i < n:
                    c = s[self.i]
                    if c == "\\":
                        self.i += 2
                        continue
                    if c == "(":
                        depth += 1
                    elif c == ")":
                        depth -= 1
                        if depth == 0:
                            self.i += 1
                            break
                    self.i += 1
                else:
                    raise _Malformed("unterminated comment")
            else:
                return

    def quoted(self) -> str:
        """RFC 5322 §3.2.4 quoted-string, the opening quote at `i`: its content, quoted-pairs resolved."""
        s, n = self.s, len(self.s)
        self.i += 1
        out = []
        while self.i < n:
            c = s[self.i]
            if c == "\\" and self.i + 1 < n:
                out.append(s[self.i + 1])
                self.i += 2
            elif c == '"':
                self.i += 1
                return "".join(out)
            else:
                out.append(c)
                self.i += 1
        raise _Malformed("unterminated quoted-string")

    def keyword(self) -> str:
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in _KEYWORD:
            self.i += 1
        return self.s[start:self.i]

    def token_or_quoted(self) -> str:
        """RFC 2045 value (token / quoted-string): the authserv-id."""
        if self.peek() == '"':
            return self.quoted()
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in _TSPECIALS and self.s[self.i] not in _WSP:
            self.i += 1
        return self.s[start:self.i]

    def pvalue(self) -> str:
        """RFC 8601 pvalue: a value or an addr-spec (`"john doe"@example.com`, `@example.com`), read up to
        the next blank, comment or `;`. `=` and `.` belong to the value: `smtp.mailfrom=dkim=pass@x` is
        one property whose value is `dkim=pass@x`."""
        self.cfws()
        out = []
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c == '"':
                out.append(self.quoted())
            elif c in _WSP or c in ";(":
                break
            else:
                out.append(c)
                self.i += 1
        return "".join(out)

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Malformed(f"expected {char!r} at {self.i}")
        self.i += 1


def _resinfo(p: _Scanner) -> MethodResult:
    """RFC 8601 §2.2 resinfo after its `;`: methodspec [reasonspec] *propspec."""
    p.cfws()
    method = p.keyword().lower()
    if not method:
        raise _Malformed("a result without a method")
    p.cfws()
    if p.peek() == "/":  # method-version
        p.i += 1
        p.cfws()
        if not p.keyword().isdigit():
            raise _Malformed("bad method version")
        p.cfws()
    p.expect("=")
    p.cfws()
    result = p.keyword().lower()
    if not result:
        raise _Malformed(f"{method}= without a result")
    reason = ""
    props: list[tuple[str, str]] = []
    while True:
        p.cfws()
        if p.end() or p.peek() == ";":
            break
        name = p.keyword().lower()
        if not name:
            raise _Malformed(f"unexpected {p.peek()!r} in {method} result")
        p.cfws()
        if p.peek() == ".":  # propspec: ptype "." property "=" pvalue
            p.i += 1
            p.cfws()
            prop = p.keyword().lower()
            if not prop:
                raise _Malformed("a property without a name")
            p.cfws()
            p.expect("=")
            props.append((f"{name}.{prop}", p.pvalue()))
        elif p.peek() == "=":
            # reasonspec (RFC 8601 §2.2); other bare `key=value` pairs are not in the grammar but real
            # servers write them (Microsoft 365: `dmarc=pass action=none`): read and ignored, never a
            # method — a method only ever follows `;`.
            p.i += 1
            value = p.pvalue()
            if name == "reason":
                reason = value
        else:
            raise _Malformed(f"unexpected {p.peek()!r} after {name}")
    return MethodResult(method=method, result=result, reason=reason, properties=tuple(props))


def parse_header(value: str) -> AuthResults | None:
    """One Authentication-Results value (unfolded, not RFC 2047-decoded: RFC 8601 has no encoded words)
    → its authserv-id and results; None when it does not follow the grammar."""
    if len(value) > MAX_HEADER:
        return None
    p = _Scanner(value)
    try:
        p.cfws()
        authserv = p.token_or_quoted().strip().lower()
        if not authserv:
            return None
        p.cfws()
        if p.peek().isdigit():  # authres-version
            p.keyword()
            p.cfws()
        results: list[MethodResult] = []
        while not p.end():
            p.expect(";")
            p.cfws()
            if p.end():  # a trailing `;`, as some servers write
                break
            start = p.i
            if p.keyword().lower() == "none" and not results:  # RFC 8601 no-result
                p.cfws()
                if p.end() or p.peek() == ";":
                    continue
            p.i = start
            results.append(_resinfo(p))
        if not results and ";" not in value:
            return None  # RFC 8601 needs `; none` or at least one result
        return AuthResults(authserv_id=authserv, results=tuple(results))
    except _Malformed:
        return None


def _leading_id(value: str) -> str:
    """The authserv-id of a header that does not parse, to know whether our own server wrote it."""
    p = _Scanner(value[:1000])
    try:
        p.cfws()
        return p.token_or_quoted().strip().lower()
    except _Malformed:
        return ""


def _domain(value: str | None) -> str:
    """`@sub.example.com`, `user@example.com`, `Example.COM.` → `sub.example.com`, `example.com`."""
    if not value:
        return ""
    return value.rpartition("@")[2].strip().rstrip(".").lower()


def aligned(signing_domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment (RFC 7489 §3.1.1), simplified without a public-suffix list: the domains are
    equal, or the From domain lies under the signing domain (`mail.support.example` under
    `support.example`). A signing domain without a dot (a top-level domain) never aligns. The other
    direction (a subdomain signing for its parent) needs the organisational domain and is not accepted."""
    d, f = signing_domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not d or not f or "." not in d:
        return False
    return f == d or f.endswith("." + d)


def _passes_for(r: MethodResult, from_domain: str) -> bool:
    """A pass that speaks for the From domain: DMARC evaluated exactly that domain (header.from), or DKIM
    signed for a domain aligned with it (header.d, else the domain of header.i)."""
    if r.method == "dmarc":
        return _domain(r.prop("header.from")) == from_domain
    if r.method == "dkim":
        return aligned(_domain(r.prop("header.d") or r.prop("header.i")), from_domain)
    return False


def verdict(headers: Iterable[str], trusted: Iterable[str], from_domain: str) -> str | None:
    """Why the From domain is not authenticated by a trusted server, or None when it is.

    Only headers whose authserv-id is in `trusted` count (RFC 8601 §5: anyone can write one). A DKIM
    fail/permerror/temperror or a DMARC fail in any trusted header wins over a pass in another. A pass is
    DMARC pass for exactly the From domain, or DKIM pass for a signing domain (header.d, else the domain
    of header.i) aligned with it. A trusted header that does not parse counts as a failure.

    The pass must be in the topmost trusted header: our own server prepends its header above everything
    the sender wrote, so a lower header that claims our authserv-id and "pass" is a forgery our server failed
    to strip (RFC 8601 §5 asks it to) — it may add a fail, never a pass.
    """
    ids = {t.strip().lower() for t in trusted if t and t.strip()}
    domain = from_domain.strip().rstrip(".").lower()
    seen: list[str] = []
    passed = False
    for raw in headers:
        parsed = parse_header(raw)
        if parsed is None:
            sid = _leading_id(raw)
            if sid in ids:
                return f"unreadable Authentication-Results from {sid}"
            continue
        if parsed.authserv_id not in ids:
            continue
        seen.append(parsed.authserv_id)
        for r in parsed.results:
            if r.result in _FAILS.get(r.method, ()):
                return f"{r.method} failed according to {parsed.authserv_id}: {r.describe()}"
            if r.result == "pass" and domain and len(seen) == 1:
                passed = passed or _passes_for(r, domain)
    if not seen:
        return "no Authentication-Results from the trusted server"
    if not domain:
        return "no From domain to authenticate"
    if passed:
        return None
    return f"no DKIM/DMARC pass aligned with {domain} according to {', '.join(dict.fromkeys(seen))}"
