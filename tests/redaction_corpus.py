"""The labelled redaction set (tests/data/redaction/labelled.jsonl) and how redaction is scored on it: shared by
tests/test_redaction_corpus.py and bench/redaction.py."""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from mailbot.models import InboundMail
from mailbot.parse import parse
from mailbot.parse.redact import redact

LABELLED = Path(__file__).resolve().parent / "data" / "redaction" / "labelled.jsonl"


@dataclass(frozen=True)
class Example:
    id: str
    lang: str  # "zh" | "en"
    category: str  # "negative" for text that only looks like a credential
    format: str  # "text": redact() itself; "html": an HTML-only mail through parse()
    text: str
    secrets: tuple[str, ...]  # substrings that must be gone; none for a negative
    keep: tuple[str, ...]  # text of a positive that must survive (labels, account names, the rest of the mail)


def load(path: Path = LABELLED) -> list[Example]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(Example(d["id"], d["lang"], d["category"], d["format"], d["text"], tuple(d["secrets"]),
                               tuple(d["keep"])))
    return out


def html_mail(html: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "yang@customer.example"
    msg["To"] = "liqi@support.example"
    msg["Subject"] = "账号信息 account details"
    msg["Message-ID"] = "<redaction-set@customer.example>"
    msg.set_content(html, subtype="html", charset="utf-8")
    return msg.as_bytes()


def cleaned(ex: Example) -> str:
    """What the bot keeps of the example: redact() of a text, the parsed new text of an HTML-only mail."""
    if ex.format == "html":
        mail = parse(html_mail(ex.text))
        assert isinstance(mail, InboundMail), mail
        return mail.new_text
    return redact(ex.text)


def leaked(ex: Example, out: str) -> list[str]:
    """Secrets of `ex` still readable in `out`: whole, or any piece of 3+ characters of one masked only in part
    (`abc def,123` → `****** def,123`) that the rest of the example does not hold anyway."""
    rest = ex.text
    for s in ex.secrets:
        rest = rest.replace(s, " ")
    found = []
    for s in ex.secrets:
        pieces = [p for p in re.split(r"[\s,，;；/]+", s) if len(p) >= 3]
        if s in out or any(out.count(p) > rest.count(p) for p in pieces):
            found.append(s)
    return found


def mangled(ex: Example, out: str) -> bool:
    """A false positive: a negative changed at all, or a positive that lost text it must keep."""
    if not ex.secrets:
        return out != (ex.text if ex.format == "text" else out)
    return any(k not in out for k in ex.keep)


@dataclass
class Score:
    secrets: int = 0
    caught: int = 0
    negatives: int = 0
    negatives_changed: int = 0
    positives: int = 0
    positives_mangled: int = 0
    misses: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.secrets if self.secrets else 1.0

    @property
    def false_positive_rate(self) -> float:
        return self.negatives_changed / self.negatives if self.negatives else 0.0

    @property
    def overmask_rate(self) -> float:
        return self.positives_mangled / self.positives if self.positives else 0.0

    def line(self, name: str) -> str:
        return (f"{name:<22} recall {self.recall:6.1%} ({self.caught}/{self.secrets})  false positives "
                f"{self.false_positive_rate:5.1%} ({self.negatives_changed}/{self.negatives})  over-masked "
                f"{self.overmask_rate:5.1%} ({self.positives_mangled}/{self.positives})")


def score(examples: Iterable[Example]) -> Score:
    sc = Score()
    for ex in examples:
        out = cleaned(ex)
        gone = len(ex.secrets) - len(missed := leaked(ex, out))
        sc.secrets += len(ex.secrets)
        sc.caught += gone
        if missed:
            sc.misses.append(f"{ex.id}: {missed} in {out!r}")
        bad = mangled(ex, out)
        if ex.secrets:
            sc.positives += 1
            sc.positives_mangled += bad
        else:
            sc.negatives += 1
            sc.negatives_changed += bad
        if bad:
            sc.false_positives.append(f"{ex.id}: {ex.text!r} → {out!r}")
    return sc


def _base64ish(n: int) -> str:
    rnd = random.Random(7)
    return "".join(rnd.choices(string.ascii_letters + string.digits + "+/_-", k=n))


# Texts of about n characters that made pattern engines slow, or would if a pattern looked too far.
SHAPES: dict[str, Callable[[int], str]] = {
    "mysql ×": lambda n: "mysql " * (n // 6),
    "-eyJ + base64": lambda n: "-eyJ" + _base64ish(n - 4),
    "eyJ ×": lambda n: "eyJ" * (n // 3),
    "密码 ×": lambda n: "密码" * (n // 2),
    "密码： ×": lambda n: "密码：" * (n // 3),
    "password= ×": lambda n: "password=" * (n // 9),
    "password ×": lambda n: "password " * (n // 9),
    "password: x\\n ×": lambda n: "password: x\n" * (n // 12),
    "one line, no newline": lambda n: ("lorem ipsum dolor sit amet " * (n // 27)),
    "label + 1 MB blanks": lambda n: "password:" + " " * n + "x",
    "x:// + letters": lambda n: "x://" + "a" * n,
    "http://u: ×": lambda n: "http://u:" * (n // 9),
    "| 密码 | ×": lambda n: "| 密码 | " * (n // 7),
    "tab table of 密码": lambda n: ("密码\t" * 20 + "\n") * (n // 61),
    "admin / ×": lambda n: "admin / " * (n // 8),
    "Bearer ×": lambda n: "Bearer " * (n // 7),
    "sqlplus a/ ×": lambda n: "sqlplus a/" * (n // 10),
    "net use ×": lambda n: "net use " * (n // 8),
    "-----BEGIN  ×": lambda n: "-----BEGIN " * (n // 11),
    "<password> ×": lambda n: "<password>" * (n // 10),
}
HTML_SHAPES: dict[str, Callable[[int], str]] = {
    "<td> ×": lambda n: "<td>" * (n // 4),
    "<td>密码</td> ×": lambda n: "<tr><td>密码</td><td>x</td></tr>" * (n // 30),
    "<td + letters": lambda n: "<td " + "a" * n,
    "< ×": lambda n: "<" * n,
}


def hostile_shapes(n: int) -> dict[str, str]:
    return {name: make(n) for name, make in SHAPES.items()}


def hostile_html(n: int) -> dict[str, str]:
    return {name: make(n) for name, make in HTML_SHAPES.items()}
