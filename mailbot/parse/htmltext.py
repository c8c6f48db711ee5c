"""HTML-only mail → readable plain text (paragraphs and line breaks kept, scripts and styles dropped)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = {
    "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
    "blockquote", "pre", "hr", "section", "article", "header", "footer",
}
_SKIP = {"script", "style", "head", "title", "xml"}
_KEEP = "\x01"  # a space inside <pre>, protected from the whitespace clean-up
_BLANKS = re.compile(r"[ \t\r\n]+")
# html.parser spends ~4 µs on a tag, whatever its size: 1 MB of `<td>a</td>` (200,000 tags) took 0.8 s. A
# reply's own markup (the quoted history is cut before) holds a few thousand tags, a pasted spreadsheet of
# 500 rows some 40,000. Text after the first MAX_HTML_TAGS tags is left out, and the text says so.
MAX_HTML_TAGS = 50_000
CUT_MARK = "[…]"


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.pre = 0  # inside <pre>: whitespace is content (pasted logs, command output)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skipping += 1
        elif tag == "br":  # a line break, once: `<br/>` must not count as a start and an end tag
            self.parts.append("\n")
        elif tag == "pre":
            self.pre += 1
            self.parts.append("\n")
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag == "td":
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP:  # `<script/>`, `<br/>`, `<div/>`: no content follows
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.parts.append("\n")
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        data = data.replace(_KEEP, "")
        if self.pre:  # spaces survive the line stripping below as _KEEP
            text = data.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
            self.parts.append(text.replace(" ", _KEEP))
        else:
            self.parts.append(_BLANKS.sub(" ", data))


def _without_comments(html: str) -> str:
    """HTML comments dropped (Outlook's conditional ones among them), by hand and in one pass: html.parser
    takes quadratic time on a document of unclosed `<!--` (measured: 80 KB 2.5 s, 320 KB 39 s), which
    anyone can send. An unclosed comment runs to the end of the document, as browsers read it."""
    if "<!--" not in html:
        return html
    out, pos = [], 0
    while (start := html.find("<!--", pos)) != -1:
        out.append(html[pos:start])
        end = html.find("-->", start + 4)
        pos = len(html) if end == -1 else end + 3
    out.append(html[pos:])
    return "".join(out)


def _tail_as_text(html: str) -> str:
    """Every `<` after the document's last `>` can only be text. html.parser rescans the rest of the
    document for each of them looking for the tag's end (quadratic: 12 KB of `<a ` took 1 s, 240 KB would
    take minutes), so they are handed to it as `&lt;`, which it reads back as `<`."""
    last = html.rfind(">")
    tail = html[last + 1 :]
    return html if "<" not in tail else html[: last + 1] + tail.replace("<", "&lt;")


def _bounded(html: str) -> tuple[str, bool]:
    """The markup up to its MAX_HTML_TAGS-th tag (every `<` counts: bogus ones cost as much); True when cut."""
    if html.count("<") <= MAX_HTML_TAGS:
        return html, False
    pos = -1
    for _ in range(MAX_HTML_TAGS + 1):
        pos = html.find("<", pos + 1)
    return html[:pos], True


def html_to_text(html: str) -> str:
    html, cut = _bounded(html)
    text = _to_text(html)
    return f"{text}\n\n{CUT_MARK}" if cut else text


def _to_text(html: str) -> str:
    html = _tail_as_text(_without_comments(html))
    collector = _TextCollector()
    try:
        collector.feed(html)
        collector.close()
    except Exception:  # html.parser is lenient, but a hostile document must not stop ingest
        return re.sub(r"<[^<>]*>", " ", html)  # `[^<>]`: a run of `<` without `>` is not rescanned per `<`
    text = "".join(collector.parts).replace("\xa0", " ")
    lines = [line.strip().replace(_KEEP, " ").rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
