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
            self.parts.append(re.sub(r"[ \t\r\n]+", " ", data))


def html_to_text(html: str) -> str:
    collector = _TextCollector()
    try:
        collector.feed(html)
        collector.close()
    except Exception:  # html.parser is lenient, but a hostile document must not stop ingest
        return re.sub(r"<[^>]*>", " ", html)
    text = "".join(collector.parts).replace("\xa0", " ")
    lines = [line.strip().replace(_KEEP, " ").rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
