"""Showing user-provided strings safely: as text, never as Markdown or HTML that runs."""

from __future__ import annotations

import re
from urllib.parse import urlparse

_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$=&\"'^%@/])")


def md_escape(text: object) -> str:
    """Backslash-escape every Markdown-active character (CommonMark allows it for all ASCII punctuation),
    so method names, labels and notes render literally inside Streamlit's Markdown (headers, captions)."""
    return _PUNCTUATION.sub(r"\\\1", str(text)).replace("\n", " ")


def safe_url(url: object) -> str | None:
    """The URL if it is a plain http(s) link, else None (a `javascript:` or `data:` link is shown as text)."""
    text = str(url or "").strip()
    parsed = urlparse(text)
    return text if parsed.scheme in ("http", "https") and parsed.netloc else None
