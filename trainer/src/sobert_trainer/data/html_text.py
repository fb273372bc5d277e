"""Post bodies (HTML) to plain text, with code kept and marked.

Block code (`<pre><code>`) becomes a segment wrapped in the `[CODE]` / `[/CODE]` special tokens
so the model sees where code starts and ends; inline `<code>` keeps its text in backticks. Tags are
dropped, entities decoded, whitespace normalised. Code keeps its line breaks and indentation.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

CODE_OPEN = "[CODE]"
CODE_CLOSE = "[/CODE]"

_BLOCK_TAGS = {
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "blockquote",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "table",
    "tr",
}
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")  # \xa0: &nbsp; is a space in prose
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


class _PostHTMLParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.segments: list[tuple[str, str]] = []  # (kind, text): kind in {"text", "code"}
        self._text: list[str] = []
        self._code: list[str] | None = None
        self._in_pre = 0

    def _flush_text(self) -> None:
        text = "".join(self._text)
        self._text = []
        for paragraph in text.split("\n"):
            paragraph = _SPACES.sub(" ", paragraph).strip()
            if paragraph:
                self.segments.append(("text", paragraph))

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "pre":
            self._in_pre += 1
            self._flush_text()
            self._code = []
        elif tag == "code" and not self._in_pre:
            self._text.append("`")
        elif self._code is not None:
            if tag in ("br", "hr"):  # `<br>` written without a slash inside code: a line break
                self._code.append("\n")
        elif tag in _BLOCK_TAGS:
            self._text.append("\n")
            if tag == "li":
                self._text.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._in_pre:
            self._in_pre -= 1
            code = "".join(self._code or []).strip("\n")
            if code.strip():
                self.segments.append(("code", code))
            self._code = None
        elif tag == "code" and not self._in_pre:
            self._text.append("`")
        elif tag in _BLOCK_TAGS and self._code is None:
            self._text.append("\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        if tag in ("br", "hr"):
            (self._code if self._code is not None else self._text).append("\n")

    def handle_data(self, data: str) -> None:
        (self._code if self._code is not None else self._text).append(data)

    def close(self) -> None:
        super().close()
        if self._code is not None:  # unclosed <pre>: keep what it held as code
            code = "".join(self._code).strip("\n")
            if code.strip():
                self.segments.append(("code", code))
            self._code = None
        self._flush_text()


def html_to_segments(html: str) -> list[str]:
    """Split a post body into sentence-like segments (prose sentences and whole code blocks)."""
    parser = _PostHTMLParser()
    parser.feed(html)
    parser.close()
    segments: list[str] = []
    for kind, text in parser.segments:
        if kind == "code":
            segments.append(f"{CODE_OPEN}\n{text}\n{CODE_CLOSE}")
        else:
            segments.extend(s for s in _SENTENCE_END.split(text) if s.strip())
    return segments


def plain_segments(text: str) -> list[str]:
    """Sentence segments of a plain-text field (titles, comments)."""
    text = _SPACES.sub(" ", text.replace("\n", " ")).strip()
    return [s for s in _SENTENCE_END.split(text) if s.strip()]
