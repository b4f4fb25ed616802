"""Generations are untrusted: render markdown with raw HTML disabled, then sanitize with nh3.

Two layers on purpose: markdown-it never passes HTML through, and nh3 strips anything the
markdown could still produce that is unsafe (e.g. `javascript:` links).
"""

from __future__ import annotations

from html import escape as html_escape

import nh3
from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "del",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}
# Beyond this many characters we render as escaped plain text: a 1 MB response must not stall a page.
MAX_MARKDOWN_CHARS = 100_000


def render_markdown(text: str) -> str:
    if len(text) > MAX_MARKDOWN_CHARS:
        # Escaped plain text in a pre-wrap block (.md-plain): line breaks and indentation survive.
        # (html_escape, not nh3.clean_text: that spells every space and newline as an entity, 5x the bytes.)
        return f'<div class="md-plain">{html_escape(text)}</div>'
    html = _md.render(text)
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
